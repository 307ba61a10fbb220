"""The daily demand frame of a shop (domain/demand/frame.py): one row per listing and UTC calendar
day, built with polars from the views that hold each fact exactly once:

- units, revenue, sold/returned units and the mean paid unit price: analytics.demand_daily;
- the price in force, time-weighted over the day: analytics.price_changes (business time); before a
  listing's first known price (an imported history registers listings after their sales) the day's
  mean paid unit price stands in, carried forward over days without sales, and `price_from_sales`
  marks those days: the models say so rather than refuse a history that has only paid prices;
- competitor min and median per day: analytics.competitor_bands over the hourly price histogram;
- active: the listing was registered for sale (status "active"; the domain has no later status
  change or delisting event) and the day is on or after its registration day or its first sale,
  whichever is first (imported histories register listings after their sales).

Days are UTC calendar days of business time. A listing's rows run from its first day (registration,
first price or first sale, whichever is first) or `since`, to `until` (default: today, UTC).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator
from uuid import UUID

import polars as pl
import psycopg
from psycopg import sql

from domain.demand.frame import DAILY_SCHEMA, check_daily
from domain.errors import InvalidValue, NotFound

EARLIEST_DAY = date(2000, 1, 1)  # the commands accept no business time before it (commands/models.py)
DAY_US = 86_400_000_000
EPOCH = date(1970, 1, 1)

# Columns beyond the shared schema: what the net units are made of.
EXTRA_SCHEMA: dict[str, pl.DataType] = {"units_sold": pl.Int64, "units_returned": pl.Int64,
                                        "price_from_sales": pl.Boolean}
FRAME_SCHEMA = {**DAILY_SCHEMA, **EXTRA_SCHEMA}

# The shop's listings, in id order: row n of this answer is listing n of every other answer. Their
# registration, whether registered for sale, and the first day each sold (one probe of the PK each).
_LISTINGS = """
    SELECT row_number() OVER (ORDER BY c.listing_id) - 1 AS n, c.listing_id,
           (c.registered_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01' AS registered,
           (c.status = 'active')::int AS for_sale,
           (SELECT d.day - DATE '1970-01-01' FROM analytics.demand_daily d
            WHERE d.listing_id = c.listing_id AND d.shop_id = c.shop_id AND d.units_sold > 0 AND isfinite(d.day)
            ORDER BY d.day LIMIT 1) AS first_sale
    FROM analytics.current_prices c WHERE c.shop_id = %(shop)s {listing}"""

# The price in force when the window opens (the last change before it, moved to the opening) and
# every change inside the window, in microseconds since the epoch.
_PRICE_CHANGES = """
    WITH opening AS (
        SELECT DISTINCT ON (listing_id) listing_id, %(start)s::timestamptz AS occurred_at, version, price
        FROM analytics.price_changes
        WHERE shop_id = %(shop)s {listing} AND occurred_at < %(start)s
        ORDER BY listing_id, occurred_at DESC, version DESC
    ), inside AS (
        SELECT listing_id, occurred_at, version, price FROM analytics.price_changes
        WHERE shop_id = %(shop)s {listing} AND occurred_at >= %(start)s AND occurred_at < %(end)s
    )
    SELECT listing_id, (extract(epoch FROM occurred_at) * 1000000)::int8 AS at_us, version, price
    FROM (SELECT * FROM opening UNION ALL SELECT * FROM inside) c"""

_SALES = """
    SELECT listing_id, day - DATE '1970-01-01' AS day, units, revenue, units_sold, units_returned, paid_amount
    FROM analytics.demand_daily
    WHERE shop_id = %(shop)s {listing} AND day >= %(since)s AND day <= %(until)s"""

_COMPETITORS = """
    SELECT listing_id, (bucket AT TIME ZONE 'UTC')::date - DATE '1970-01-01' AS day,
           min_price AS competitor_min, median AS competitor_median
    FROM analytics.competitor_bands('1 day', %(shop)s, %(listing_id)s, %(start)s, %(end)s)"""

# What assemble() takes: listings in id order (n: the row), the rest keyed by n; days are days since
# the epoch, times microseconds since the epoch (UTC). The answers above carry listing_id instead of n.
LISTING_INPUT = {"n": pl.Int32, "listing_id": pl.Utf8, "registered": pl.Int32, "for_sale": pl.Int8,
                 "first_sale": pl.Int32}
CHANGE_INPUT = {"n": pl.Int32, "at_us": pl.Int64, "version": pl.Int64, "price": pl.Float64}
SALES_INPUT = {"n": pl.Int32, "day": pl.Int32, "units": pl.Int64, "revenue": pl.Float64,
               "units_sold": pl.Int64, "units_returned": pl.Int64, "paid_amount": pl.Float64}
COMPETITOR_INPUT = {"n": pl.Int32, "day": pl.Int32, "competitor_min": pl.Float64, "competitor_median": pl.Float64}


def daily_demand(source, shop_id, listing_id=None, since: date | None = None,
                 until: date | None = None) -> pl.DataFrame:
    """The shop's daily frame (DAILY_SCHEMA plus units_sold and units_returned), sorted by listing
    and day. source: a psycopg connection or a read pool (read/pool.py). Only this shop's listings
    are ever read; a listing_id of another shop (or none) is NotFound."""
    shop, listing = _uuid(shop_id, "shop_id"), None if listing_id is None else _uuid(listing_id, "listing_id")
    until = until or datetime.now(timezone.utc).date()
    since = max(since or EARLIEST_DAY, EARLIEST_DAY)
    if since > until:
        raise InvalidValue("since", f"{since} is after until {until}")
    with _connection(source) as conn:
        inputs = _fetch(conn, shop, listing, since, until)
    if listing is not None and inputs[0].is_empty():
        raise NotFound("listing not found", field="listing_id")
    return check_daily(assemble(*inputs, since=since, until=until))


def shop_listing_ids(source, shop_id) -> list[str]:
    """The shop's listings (as the price board knows them), in id order."""
    with _connection(source) as conn:
        rows = conn.execute("SELECT listing_id::text FROM analytics.current_prices WHERE shop_id = %s"
                            " ORDER BY listing_id", [_uuid(shop_id, "shop_id")]).fetchall()
    return [listing for listing, in rows]


# -- reading -------------------------------------------------------------------------------------
@contextmanager
def _connection(source) -> Iterator[psycopg.Connection]:
    if isinstance(source, psycopg.Connection):
        yield source
    else:
        with source.connection() as conn:
            yield conn


def _uuid(value, field: str) -> UUID:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError:
        raise InvalidValue(field, f"{value!r} is not a UUID") from None


def _fetch(conn: psycopg.Connection, shop: UUID, listing: UUID | None, since: date,
           until: date) -> tuple[pl.DataFrame, ...]:
    start = datetime.combine(since, time(), timezone.utc)
    end = datetime.combine(until + timedelta(days=1), time(), timezone.utc)
    params = {"shop": shop, "listing_id": listing, "since": since, "until": until, "start": start, "end": end}
    clause = sql.SQL("") if listing is None else sql.SQL("AND listing_id = %(listing_id)s")
    listings = _frame(conn, sql.SQL(_LISTINGS).format(listing=clause), params, LISTING_INPUT).sort("n")
    numbered = pl.Enum(listings.get_column("listing_id"))
    keyed = ((_PRICE_CHANGES, CHANGE_INPUT), (_SALES, SALES_INPUT), (_COMPETITORS, COMPETITOR_INPUT))
    return (listings, *(_numbered(_frame(conn, sql.SQL(query).format(listing=clause), params, _by_id(schema)),
                                  numbered) for query, schema in keyed))


def _by_id(schema: dict) -> dict:
    """The columns of a query's answer: listing_id where its input has n."""
    return {"listing_id": pl.Utf8, **{c: t for c, t in schema.items() if c != "n"}}


def _numbered(frame: pl.DataFrame, listings: pl.Enum) -> pl.DataFrame:
    """listing_id -> n (its row in the listings answer); rows of a listing that answer lacks (one
    registered while we read) are left out. Integers join and group far faster than UUID strings."""
    n = pl.col("listing_id").cast(listings, strict=False).to_physical().cast(pl.Int32).alias("n")
    return frame.select(n, pl.exclude("listing_id")).drop_nulls("n")


def _frame(conn: psycopg.Connection, query: sql.Composable, params: dict, schema: dict) -> pl.DataFrame:
    """The query's answer (columns named as in schema) as a frame. The server joins the rows into one
    CSV text (format() writes NULL as nothing; numerics are parsed as floats here): fetching or copying
    rows costs a Python call per row, most of the time for a shop's year."""
    line = sql.SQL(", ").join(sql.SQL("q.{}").format(sql.Identifier(c)) for c in schema)
    template = sql.SQL("'{}'".format(",".join(["%%s"] * len(schema))))  # %% : psycopg's escape of %
    text = conn.execute(sql.SQL("SELECT string_agg(format({}, {}), E'\\n') FROM ({}) q").format(
        template, line, query), params).fetchone()[0]
    if text is None:
        return pl.DataFrame(schema=schema)
    return pl.read_csv(text.encode(), has_header=False, schema=schema)


# -- assembling (pure: tested without a database) ------------------------------------------------
def daily_prices(changes: pl.DataFrame) -> pl.DataFrame:
    """Per listing (n) and day with at least one change: the price weighted by the time it was in
    force over the part of the day that had a price, and the price in force at the day's end.

    changes: CHANGE_INPUT. The price in force at a day's start is the last change before it (ties in
    time: the higher version is the later)."""
    c = changes.sort("n", "at_us", "version").with_columns(
        day=(pl.col("at_us") // DAY_US).cast(pl.Int32),
        next_us=pl.col("at_us").shift(-1).over("n"),
        prev_price=pl.col("price").shift(1).over("n"))
    day_end = (pl.col("day").cast(pl.Int64) + 1) * DAY_US
    c = c.with_columns(prev_day=pl.col("day").shift(1).over("n"),
                       until_us=pl.min_horizontal("next_us", day_end))
    # The first change of a day inherits the part of the day before it from the previous change.
    carried = (pl.when(pl.col("prev_price").is_not_null() & (pl.col("prev_day") < pl.col("day")))
               .then(pl.col("at_us") - pl.col("day").cast(pl.Int64) * DAY_US).otherwise(0)).cast(pl.Float64)
    held = (pl.col("until_us") - pl.col("at_us")).cast(pl.Float64)
    c = c.with_columns(weight=held + carried,
                       amount=pl.col("price") * held + pl.col("prev_price").fill_null(0.0) * carried)
    return (c.group_by("n", "day", maintain_order=True)
            .agg(weighted=pl.col("amount").sum() / pl.col("weight").sum(), end_price=pl.col("price").last()))


def assemble(listings: pl.DataFrame, changes: pl.DataFrame, sales: pl.DataFrame, competitors: pl.DataFrame,
             since: date, until: date) -> pl.DataFrame:
    """The frame from its inputs (LISTING_INPUT, CHANGE_INPUT, SALES_INPUT, COMPETITOR_INPUT).

    A listing registered for sale is active from its registration day or its first sale, whichever
    is first: a sale proves it was on sale, and imported histories register listings after their sales."""
    first, last = (since - EPOCH).days, (until - EPOCH).days
    prices = daily_prices(changes)
    spans = _spans(listings, prices, sales, first, last)
    size = int(spans.get_column("length").sum())
    if size == 0:
        return pl.DataFrame(schema=FRAME_SCHEMA)
    grid = spans.select("n", day=pl.int_ranges("start", last + 1, dtype=pl.Int32)).explode("day")
    on_sale_from = (pl.when(pl.col("for_sale") == 1).then(pl.min_horizontal("registered", "first_sale")))
    n = grid.get_column("n")
    dense = {**_spread(prices, spans, size), **_spread(sales, spans, size), **_spread(competitors, spans, size)}
    frame = pl.DataFrame({
        "listing_id": listings.get_column("listing_id").gather(n),
        "day": grid.get_column("day"),
        "on_sale_from": listings.select(on_sale_from).to_series().gather(n),
        "n": n, **dense})
    paid = pl.when(pl.col("units_sold") > 0).then(pl.col("paid_amount") / pl.col("units_sold"))
    known = pl.coalesce("weighted", pl.col("end_price").forward_fill().over("n"))
    frame = frame.with_columns(paid_price=paid, known_price=known).select(
        "listing_id",
        pl.col("day").cast(pl.Date),
        pl.col("units").fill_null(0),
        pl.col("revenue").fill_null(0.0),
        pl.coalesce("known_price", pl.col("paid_price").forward_fill().over("n")).alias("price"),
        "paid_price", "competitor_min", "competitor_median",
        (pl.col("day") >= pl.col("on_sale_from")).fill_null(False).alias("active"),
        pl.col("units_sold").fill_null(0), pl.col("units_returned").fill_null(0),
        (pl.col("known_price").is_null() & pl.col("paid_price").forward_fill().over("n").is_not_null())
        .alias("price_from_sales"))
    return _finite(frame.cast(FRAME_SCHEMA))


def _spans(listings: pl.DataFrame, prices: pl.DataFrame, sales: pl.DataFrame, first: int, last: int) -> pl.DataFrame:
    """n, start, length, offset: each listing's days from its first (not before `first`) to `last`,
    and where they begin in the frame (listings in order, days in order within each)."""
    starts = pl.concat([listings.select("n", day="registered"), listings.select("n", day="first_sale"),
                        prices.select("n", "day"), sales.select("n", "day")], how="vertical_relaxed")
    return (starts.drop_nulls().group_by("n").agg(pl.col("day").min()).sort("n")
            .select("n", start=pl.max_horizontal("day", pl.lit(first, pl.Int32)))
            .filter(pl.col("start") <= last)
            .with_columns(length=(last + 1 - pl.col("start")).cast(pl.Int64))
            .with_columns(offset=pl.col("length").cum_sum() - pl.col("length")))


def _spread(rows: pl.DataFrame, spans: pl.DataFrame, size: int) -> dict[str, pl.Series]:
    """The value columns of rows keyed by (n, day), each placed at its row of the frame (null elsewhere)."""
    placed = (rows.join(spans, on="n")
              .filter(pl.col("day").is_between(pl.col("start"), pl.col("start") + pl.col("length") - 1))
              .with_columns(row=pl.col("offset") + pl.col("day") - pl.col("start")))
    rows_at = placed.get_column("row")
    return {name: pl.repeat(None, size, dtype=dtype, eager=True).scatter(rows_at, placed.get_column(name))
            for name, dtype in rows.schema.items() if name not in ("n", "day")}


def _finite(frame: pl.DataFrame) -> pl.DataFrame:
    """No NaN or infinity leaves this module: a stored value that makes one is refused by name."""
    for column, dtype in frame.schema.items():
        if dtype == pl.Float64 and not frame.get_column(column).is_finite().fill_null(True).all():
            raise InvalidValue(column, "a stored value is not a finite number")
    return frame
