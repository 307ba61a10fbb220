"""The daily demand read model (projections/demand_daily.py) and its frame (read/demand.py) on real
PostgreSQL: time-weighted prices, returns, zero-fill, competitor bands, tenancy, and exactly-once
under redelivery, a crash before the tracking commit, and rebuild.

Histories are built from domain aggregates with chosen business times and saved to the event store,
as an import of past events would; the projector then reads them like any others."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from uuid import UUID, uuid4

import polars as pl
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import codec
from commands.engine import PricingEngine
from domain.demand.frame import check_daily
from domain.errors import InvalidValue, NotFound
from domain.facts import Observation, ObservationBatch, SaleLine, SalesBatch
from domain.listing import Guardrails, Listing
from domain.meta import EventMeta
from domain.money import Money
from projections import projector as projector_module
from projections.base import LIVE
from projections.log import EventLog
from projections.projector import Projector
from projections.rebuild import rebuild
from projections.registry import ALL, by_name
from read.demand import (CHANGE_INPUT, COMPETITOR_INPUT, DAY_US, EPOCH, LISTING_INPUT, SALES_INPUT, assemble,
                         daily_demand, shop_listing_ids)
from read.pool import ReadPool

START = datetime(2026, 3, 2, tzinfo=timezone.utc)  # day 0 of every history here
UNTIL = (START + timedelta(days=6)).date()
DEMAND_TABLES = by_name("demand_daily").tables


def at(day: int, hour: float = 0) -> datetime:
    return START + timedelta(days=day, hours=hour)


def day(n: int) -> date:
    return (START + timedelta(days=n)).date()


@dataclass
class History:
    """One shop's events, built with the domain's own aggregates at chosen business times."""

    shop_id: UUID = field(default_factory=uuid4)
    aggregates: list = field(default_factory=list)

    def meta(self, when: datetime) -> EventMeta:
        return EventMeta(str(self.shop_id), "pytest", "user", "import", "history", uuid4().hex, "c", "c", when)

    def register(self, price: str, when: datetime, status: str = "active") -> Listing:
        listing = Listing.register(self.shop_id, uuid4().hex, "sku", "Mug", status, Money.price(price, "GBP"),
                                   Guardrails(), self.meta(when))
        self.aggregates.append(listing)
        return listing

    def change(self, listing: Listing, price: str, when: datetime) -> None:
        assert listing.change_price(Money.price(price, "GBP"), self.meta(when))

    def sell(self, listing_id: UUID, *lines: tuple[int, str, datetime]) -> None:
        sale_lines = [SaleLine(listing_id, quantity, Money.of(price, "GBP"), "o", uuid4().hex, when)
                      for quantity, price, when in lines]
        self.aggregates.append(SalesBatch.record(self.shop_id, "GBP", sale_lines, self.meta(START)))

    def observe(self, listing_id: UUID, *seen: tuple[str, datetime]) -> None:
        observations = [Observation(listing_id, "rival", Money.price(price, "GBP"), when, "test")
                        for price, when in seen]
        self.aggregates.append(ObservationBatch.record(self.shop_id, "GBP", observations, self.meta(START)))


@pytest.fixture(scope="module")
def shop(new_database):
    """Shop A (listings with changes, sales, returns, observations, a draft, one sold before it was
    registered) and shop B of another tenant with look-alike facts, saved and projected."""
    url = new_database()
    a, b = History(), History()
    l1 = a.register("10.00", at(0))
    a.change(l1, "20.00", at(1, 18))                                     # day 1: 10 until 18:00, then 20
    for price, hour in (("30.00", 6), ("10.00", 12), ("40.00", 18)):    # day 3: four prices, six hours each
        a.change(l1, price, at(3, hour))
    l2 = a.register("8.00", at(1, 12))                                   # registered mid-day
    draft = a.register("5.00", at(0), status="draft")
    late = a.register("9.00", at(5, 6))                                  # sold before it was registered
    a.sell(l1.id, (3, "20.00", at(2, 9)), (1, "18.00", at(2, 23.99)), (-1, "20.00", at(2, 12)))
    a.sell(l1.id, (-2, "20.00", at(4, 10)), (2, "40.00", at(5)))
    a.sell(late.id, (1, "9.00", at(2, 15)))
    a.observe(l1.id, ("5.00", at(1, 1)), ("9.00", at(1, 2)), ("7.00", at(1, 3)), ("11.00", at(1, 23.5)),
              ("12.00", at(2, 4)))
    lb = b.register("10.00", at(0))
    b.sell(lb.id, (5, "10.00", at(2, 9)))
    b.observe(lb.id, ("1.00", at(1, 1)))
    engine = PricingEngine(url, pool_size=1)
    try:
        engine.core.save(*a.aggregates, *b.aggregates)
    finally:
        engine.close()
    project(url)
    return url, a.shop_id, {"l1": str(l1.id), "l2": str(l2.id), "draft": str(draft.id), "late": str(late.id),
                            "other": str(lb.id)}, b.shop_id


def project(url: str, batch_size: int = 7) -> None:
    projector = Projector(url, codec.to_domain_event, batch_size=batch_size)  # many small batches
    try:
        projector.catch_up()
    finally:
        projector.close()


def frame(url: str, shop_id, **kwargs) -> pl.DataFrame:
    with psycopg.connect(url, autocommit=True) as conn:
        return daily_demand(conn, shop_id, until=kwargs.pop("until", UNTIL), **kwargs)


def rows(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM analytics.{t} ORDER BY 1, 2").fetchall() for t in DEMAND_TABLES}


def column(f: pl.DataFrame, listing: str, name: str) -> list:
    return f.filter(pl.col("listing_id") == listing).get_column(name).to_list()


# -- the frame -------------------------------------------------------------------------------
def test_the_frame_has_the_shared_schema_and_one_row_per_listing_and_day(shop):
    url, shop_id, ids, _ = shop
    f = check_daily(frame(url, shop_id))
    assert f.height == f.select("listing_id", "day").unique().height
    assert column(f, ids["l1"], "day") == [day(n) for n in range(7)]  # registration to `until`
    assert column(f, ids["l2"], "day") == [day(n) for n in range(1, 7)]
    assert f.sort("listing_id", "day").equals(f)


@pytest.mark.parametrize("listing, since, expected", [
    ("l1", None, [10.0, 12.5, 20.0, 25.0, 40.0, 40.0, 40.0]),  # mid-day change, carried, four in a day
    ("l1", day(2), [20.0, 25.0, 40.0, 40.0, 40.0]),            # in force at `since`: the last change before
    ("l1", day(3), [25.0, 40.0, 40.0, 40.0]),
    ("l2", None, [8.0] * 6),                                   # registered at noon: the known half-day
    ("late", None, [9.0, 9.0, 9.0, 9.0, 9.0]),                 # sold before any price was known: the paid price
])
def test_price_is_time_weighted_over_the_day(shop, listing, since, expected):
    url, shop_id, ids, _ = shop
    prices = column(frame(url, shop_id, since=since), ids[listing], "price")
    assert [p is None for p in prices] == [e is None for e in expected]
    assert [p for p in prices if p is not None] == pytest.approx([e for e in expected if e is not None], rel=1e-12)


def test_returns_net_units_and_revenue_and_the_paid_price_is_the_mean_over_sold_lines(shop):
    url, shop_id, ids, _ = shop
    f = frame(url, shop_id).filter(pl.col("listing_id") == ids["l1"])
    got = f.select("units", "revenue", "units_sold", "units_returned", "paid_price").rows()
    assert got == [
        (0, 0.0, 0, 0, None), (0, 0.0, 0, 0, None),
        (3, 58.0, 4, 1, 19.5),       # 3 x 20 + 1 x 18 sold (23:59 is still day 2), 1 x 20 back
        (0, 0.0, 0, 0, None),
        (-2, -40.0, 0, 2, None),     # a day of returns only: no paid price
        (2, 80.0, 2, 0, 40.0),       # midnight opens day 5
        (0, 0.0, 0, 0, None)]


def test_competitor_min_and_median_per_utc_day(shop):
    url, shop_id, ids, _ = shop
    f = frame(url, shop_id).filter(pl.col("listing_id") == ids["l1"])
    assert f.select("competitor_min", "competitor_median").rows()[:4] == [
        (None, None), (5.0, 8.0), (12.0, 12.0), (None, None)]  # median of 5, 7, 9, 11 is 8


def test_active_from_registration_or_first_sale_and_only_when_registered_for_sale(shop):
    url, shop_id, ids, _ = shop
    f = frame(url, shop_id)
    assert all(column(f, ids["l1"], "active"))
    assert not any(column(f, ids["draft"], "active"))
    assert column(f, ids["late"], "active") == [True] * 5  # its first sale proves it was on sale
    assert column(f, ids["late"], "price_from_sales") == [True] * 3 + [False] * 2  # days 2-4: before registration


def test_another_shops_listing_never_appears(shop):
    url, shop_id, ids, other_shop = shop
    f = frame(url, shop_id)
    assert ids["other"] not in set(f.get_column("listing_id").to_list())
    with psycopg.connect(url) as conn:
        assert ids["other"] not in shop_listing_ids(conn, shop_id) and ids["l1"] in shop_listing_ids(conn, shop_id)
    with pytest.raises(NotFound):
        frame(url, shop_id, listing_id=ids["other"])
    assert set(frame(url, other_shop).get_column("listing_id").to_list()) == {ids["other"]}
    assert frame(url, uuid4()).is_empty()


def test_one_listing_and_a_read_pool_give_the_same_rows_as_the_whole_shop(shop):
    url, shop_id, ids, _ = shop
    pool = ReadPool(url, max_size=1)
    try:
        one = daily_demand(pool, shop_id, listing_id=ids["l1"], since=day(1), until=UNTIL)
    finally:
        pool.close()
    whole = frame(url, shop_id, since=day(1)).filter(pl.col("listing_id") == ids["l1"])
    assert one.equals(whole) and one.height == 6


@pytest.mark.parametrize("arguments, field", [
    ({"shop_id": "not-a-uuid"}, "shop_id"),
    ({"listing_id": "12"}, "listing_id"),
    ({"since": day(3), "until": day(2)}, "since"),
])
def test_bad_arguments_are_refused_by_name(shop, arguments, field):
    url, shop_id, _, _ = shop
    arguments = dict(arguments)
    with pytest.raises(InvalidValue) as refused:
        frame(url, arguments.pop("shop_id", shop_id), **arguments)
    assert refused.value.field == field


def test_a_value_that_is_not_a_finite_number_never_leaves():
    listings = pl.DataFrame([(0, "x", 0, 1, None)], schema=LISTING_INPUT, orient="row")
    changes = pl.DataFrame([(0, 0, 1, float("nan"))], schema=CHANGE_INPUT, orient="row")
    with pytest.raises(InvalidValue) as refused:
        assemble(listings, changes, pl.DataFrame(schema=SALES_INPUT), pl.DataFrame(schema=COMPETITOR_INPUT),
                 since=EPOCH, until=EPOCH + timedelta(days=2))
    assert refused.value.field == "price"


# -- exactly once ----------------------------------------------------------------------------
def test_daily_rows_equal_the_sale_facts_summed_per_utc_day(shop):
    url, *_ = shop
    with psycopg.connect(url) as conn:
        differences = conn.execute("""
            WITH expected AS (
                SELECT listing_id, (sold_at AT TIME ZONE 'UTC')::date AS day, sum(quantity) AS units,
                       sum(revenue) AS revenue, count(*) AS lines FROM analytics.sales GROUP BY 1, 2)
            SELECT count(*) FROM expected e FULL JOIN analytics.demand_daily d USING (listing_id, day)
            WHERE (e.units, e.revenue, e.lines) IS DISTINCT FROM (d.units, d.revenue, d.lines)""").fetchone()[0]
        lines = conn.execute("SELECT count(*) FROM analytics.demand_lines").fetchone()[0]
    assert differences == 0 and lines == 7  # 5 + 1 in shop A, 1 in shop B


def test_redelivered_events_are_counted_once(shop):
    url, *_ = shop
    before = rows(url)
    demand = by_name("demand_daily")
    with psycopg.connect(url) as conn:
        with conn.transaction(), conn.cursor() as cur:
            events = EventLog(codec.to_domain_event, [demand]).read(cur, 0, 1_000_000).events
            cur.execute("DELETE FROM analytics.demand_lines; DELETE FROM analytics.demand_daily")
            demand.apply(cur, events + events[::-1], LIVE)  # from scratch, every event twice in one batch
            demand.apply(cur, events[::2], LIVE)            # and some once more, in a batch of their own
        conn.execute("UPDATE analytics.projection_tracking SET log_position = 0 WHERE projection = 'demand_daily'")
        conn.commit()
    project(url, batch_size=3)  # the projector told it is at the start of the log reads everything again
    assert rows(url) == before


def test_a_crash_before_the_tracking_commit_leaves_nothing_behind(shop, monkeypatch):
    url, shop_id, ids, _ = shop
    before = rows(url)
    later = History(shop_id=shop_id)
    later.sell(UUID(ids["l1"]), (4, "25.00", at(6, 8)))
    engine = PricingEngine(url, pool_size=1)
    try:
        engine.core.save(*later.aggregates)
    finally:
        engine.close()

    lines_before, seen = sum(1 for _ in before["demand_lines"]), []

    def crash(cur, moves):  # the batch's view rows are written; the tracking row never is
        seen.append(cur.execute("SELECT count(*) FROM analytics.demand_lines").fetchone()[0])
        raise RuntimeError("killed before the tracking row was written")

    monkeypatch.setattr(projector_module.tracking, "advance", crash)
    with pytest.raises(RuntimeError):
        project(url)
    assert lines_before + 1 in seen and rows(url) == before
    monkeypatch.undo()
    project(url)
    f = frame(url, shop_id).filter(pl.col("listing_id") == ids["l1"])
    assert f.get_column("units").to_list()[-1] == 4


def test_rebuild_gives_the_rows_of_the_live_projection(shop):
    url, *_ = shop
    live = rows(url)
    done = rebuild(url, codec.to_domain_event, [by_name("demand_daily")], batch_size=5)
    assert done.events > 0 and rows(url) == live
    assert "demand_daily" in {p.name for p in ALL}


# -- the time-weighted price against brute force (no database) -------------------------------
MINUTES = 24 * 60


@st.composite
def schedules(draw):
    """Price changes at whole minutes over three days (some at the same minute, some at midnight)."""
    n = draw(st.integers(1, 8))
    minutes = draw(st.lists(st.integers(0, 3 * MINUTES - 1), min_size=n, max_size=n))
    prices = draw(st.lists(st.integers(1, 9_999), min_size=n, max_size=n))
    return sorted(zip(minutes, range(1, n + 1), [p / 100 for p in prices]))


def brute_force(schedule: list[tuple[int, int, float]], days: int) -> list[float | None]:
    """The mean over the minutes of each day that had a price (the last change at or before it)."""
    means = []
    for d in range(days):
        seen = [next((p for m, _, p in reversed(schedule) if m <= minute), None)
                for minute in range(d * MINUTES, (d + 1) * MINUTES)]
        known = [p for p in seen if p is not None]
        means.append(sum(known) / len(known) if known else None)
    return means


@settings(max_examples=60, deadline=None)
@given(schedules())
def test_time_weighted_price_equals_the_per_minute_mean(schedule):
    first_day = (START.date() - EPOCH).days
    changes = pl.DataFrame([(0, first_day * DAY_US + m * 60_000_000, v, p) for m, v, p in schedule],
                           schema=CHANGE_INPUT, orient="row")
    listings = pl.DataFrame([(0, "x", first_day, 1, None)], schema=LISTING_INPUT, orient="row")
    f = assemble(listings, changes, pl.DataFrame(schema=SALES_INPUT), pl.DataFrame(schema=COMPETITOR_INPUT),
                 since=day(0), until=day(3))
    expected = brute_force(schedule, 4)
    got = f.get_column("price").to_list()
    assert [g is None for g in got] == [e is None for e in expected]
    assert [g for g in got if g is not None] == pytest.approx([e for e in expected if e is not None], rel=1e-12)


# -- a history with paid prices only (imported: listings registered after their sales) ---------
def test_before_the_first_known_price_the_mean_paid_price_stands_in_and_is_marked():
    first = (START.date() - EPOCH).days
    listings = pl.DataFrame([(0, "x", first + 4, 1, first)], schema=LISTING_INPUT, orient="row")
    changes = pl.DataFrame([(0, (first + 4) * DAY_US, 1, 30.0)], schema=CHANGE_INPUT, orient="row")
    sales = pl.DataFrame([(0, first, 2, 20.0, 2, 0, 20.0), (0, first + 2, 3, 75.0, 3, 0, 75.0),
                          (0, first + 5, 1, 30.0, 1, 0, 30.0)], schema=SALES_INPUT, orient="row")
    f = assemble(listings, changes, sales, pl.DataFrame(schema=COMPETITOR_INPUT), since=day(0), until=day(5))
    assert f.get_column("price").to_list() == [10.0, 10.0, 25.0, 25.0, 30.0, 30.0]  # carried over day 1 and 3
    assert f.get_column("price_from_sales").to_list() == [True] * 4 + [False] * 2
    assert f.get_column("active").all()
