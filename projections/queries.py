"""Analysts' queries over the views: filters (shop, listing, time range, bucket width), keyset
paging, and rows ready for export. The caller has already checked that the shop is the asking
tenant's (api/routers/analytics.py); every query here is confined to that one shop.

Paging is by keyset, not offset: a page's `next_cursor` encodes the sort key of its last row,
and the next page starts strictly after it, so deep pages cost as little as the first and rows
appended meanwhile never shift a page. Cursors are opaque and signed (HMAC-SHA256 with a key
derived from the server's secret, bound to the view and the shop): a cursor the server did not
give is refused before the database sees it, whatever it holds. The key goes in as PostgreSQL
prints it, so it round-trips exactly, even for a time Python cannot represent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Connection, sql
from psycopg.rows import tuple_row

BUCKETS = {"hour": "1 hour", "day": "1 day", "week": "7 days"}
MAX_LIMIT = 100_000
STATEMENT_TIMEOUT = "30s"


class InvalidQuery(ValueError):
    """A filter that can never be valid; `field` names the query parameter."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field, self.detail = field, detail


@dataclass(frozen=True)
class View:
    name: str                         # as in the URL: /shops/{id}/analytics/{name}
    source: str                       # FROM clause; may use the parameters below
    columns: tuple[str, ...]
    keys: tuple[tuple[str, str], ...]  # (column, type) of the unique sort key, in order
    time_column: str | None = None     # what since/until filter (None: the source filters itself)
    bucketed: bool = False             # takes `bucket` (hour/day/week)
    by_listing: bool = True            # has listing_id (can filter by listing)
    shop_filter: bool = True           # the source needs `shop_id = %(shop)s` (functions filter themselves)


_PRICE_COLUMNS = ("listing_id", "shop_id", "external_id", "sku", "title", "status", "price", "currency", "floor",
                  "ceiling", "cost", "version", "price_version", "guardrails_version", "price_changed_at",
                  "price_source", "price_actor_id", "registered_at", "updated_at", "log_position")
_CHANGE_COLUMNS = ("log_position", "listing_id", "version", "shop_id", "kind", "price", "previous_price", "change",
                   "currency", "source", "rule", "compensates", "reason", "actor_id", "actor_kind", "command_id",
                   "correlation_id", "causation_id", "occurred_at", "recorded_at")
_OBSERVATION_COLUMNS = ("log_position", "shop_id", "listing_id", "competitor", "price", "currency", "source",
                        "observed_at", "recorded_at", "batch_id", "actor_id")
_SALE_COLUMNS = ("log_position", "shop_id", "listing_id", "kind", "quantity", "unit_price", "revenue", "currency",
                 "order_id", "transaction_id", "sold_at", "recorded_at", "batch_id", "source", "actor_id")
_BAND_COLUMNS = ("listing_id", "bucket", "shop_id", "currency", "observations", "min_price", "p25", "median", "p75",
                 "max_price")
_LISTING_SALES_COLUMNS = ("listing_id", "bucket", "shop_id", "currency", "units", "revenue", "units_sold",
                          "units_returned", "revenue_returned", "lines")
_SHOP_SALES_COLUMNS = ("shop_id", "bucket", "currency", "units", "revenue", "units_sold", "units_returned",
                       "revenue_returned", "lines")
_FN_ARGS = "%(width)s::interval, %(shop)s::uuid, %(listing)s::uuid, %(since)s::timestamptz, %(until)s::timestamptz"

VIEWS = {v.name: v for v in (
    View("prices", "analytics.current_prices", _PRICE_COLUMNS, (("listing_id", "uuid"),)),
    View("price-changes", "analytics.price_changes", _CHANGE_COLUMNS,
         (("occurred_at", "timestamptz"), ("log_position", "int8")), time_column="occurred_at"),
    View("competitor-observations", "analytics.competitor_observations", _OBSERVATION_COLUMNS,
         (("observed_at", "timestamptz"), ("log_position", "int8")), time_column="observed_at"),
    View("competitor-bands", f"analytics.competitor_bands({_FN_ARGS})", _BAND_COLUMNS,
         (("bucket", "timestamptz"), ("listing_id", "uuid")), bucketed=True, shop_filter=False),
    View("sales", "analytics.sales", _SALE_COLUMNS,
         (("sold_at", "timestamptz"), ("log_position", "int8")), time_column="sold_at"),
    View("sales-by-listing", f"analytics.sales_by_listing({_FN_ARGS})", _LISTING_SALES_COLUMNS,
         (("bucket", "timestamptz"), ("listing_id", "uuid")), bucketed=True, shop_filter=False),
    View("sales-by-shop",
         "analytics.sales_by_shop(%(width)s::interval, %(shop)s::uuid, %(since)s::timestamptz, %(until)s::timestamptz)",
         _SHOP_SALES_COLUMNS, (("bucket", "timestamptz"),), bucketed=True, by_listing=False, shop_filter=False),
)}


@dataclass(frozen=True)
class Query:
    view: View
    shop_id: UUID
    listing_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    bucket: str | None = None
    limit: int = 100
    cursor: str | None = None
    cursor_key: bytes = b""


@dataclass(frozen=True)
class Result:
    columns: tuple[str, ...]
    types: tuple[str, ...]    # PostgreSQL type names, for exports
    rows: list[tuple]
    next_cursor: str | None


def query(view_name: str, shop_id: UUID, *, listing_id: UUID | None = None, since: datetime | None = None,
          until: datetime | None = None, bucket: str | None = None, limit: int = 100,
          cursor: str | None = None, cursor_key: bytes) -> Query:
    """A validated query; InvalidQuery names the parameter that is wrong. `cursor_key` signs
    and checks cursors (the server's, e.g. Secrets.cursor_key)."""
    view = VIEWS.get(view_name)
    if view is None:
        raise InvalidQuery("view", f"unknown view {view_name!r}; known: {', '.join(VIEWS)}")
    if view.bucketed and bucket not in BUCKETS:
        raise InvalidQuery("bucket", f"required for {view.name}: one of {', '.join(BUCKETS)}")
    if not view.bucketed and bucket is not None:
        raise InvalidQuery("bucket", f"{view.name} is not bucketed")
    if listing_id is not None and not view.by_listing:
        raise InvalidQuery("listing_id", f"{view.name} is per shop")
    if (since is not None or until is not None) and view.time_column is None and not view.bucketed:
        raise InvalidQuery("since", f"{view.name} has no time range")
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidQuery(name, "must include a timezone offset (e.g. 2026-11-25T10:00:00Z)")
    if since is not None and until is not None and since >= until:
        raise InvalidQuery("until", "must be after since")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("limit", f"must be between 1 and {MAX_LIMIT}")
    if len(cursor_key) < 16:
        raise ValueError("a cursor key of at least 16 bytes is needed")
    q = Query(view, shop_id, listing_id, since, until, bucket, limit, cursor, cursor_key)
    if cursor is not None:
        _decode_cursor(q)  # refuse a cursor we did not give before touching the database
    return q


def run(conn: Connection, q: Query) -> Result:
    statement, params = _sql(q)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        cur.execute(statement, params)
        rows = cur.fetchall()
        shown = len(q.view.columns)  # the sort key's text follows the view's columns
        types = tuple(_type_name(conn, c.type_code) for c in cur.description[:shown])
    more = len(rows) > q.limit
    rows = rows[:q.limit]
    next_cursor = _encode_cursor(q, rows[-1][shown:]) if more else None
    return Result(q.view.columns, types, [row[:shown] for row in rows], next_cursor)


# -- SQL ----------------------------------------------------------------------------------
def _sql(q: Query) -> tuple[sql.Composed, dict[str, Any]]:
    view = q.view
    params: dict[str, Any] = {"shop": q.shop_id, "listing": q.listing_id, "since": q.since, "until": q.until,
                              "width": BUCKETS.get(q.bucket or ""), "limit": q.limit + 1}
    where = []
    if view.shop_filter:
        where.append("shop_id = %(shop)s")
        if q.listing_id is not None:
            where.append("listing_id = %(listing)s")
        if view.time_column and q.since is not None:
            where.append(f"{view.time_column} >= %(since)s")
        if view.time_column and q.until is not None:
            where.append(f"{view.time_column} < %(until)s")
    if q.cursor is not None:
        values = _decode_cursor(q)
        keys = ", ".join(k for k, _ in view.keys)
        after = ", ".join(f"%(after{i})s::{t}" for i, (_, t) in enumerate(view.keys))
        where.append(f"({keys}) > ({after})")
        params.update({f"after{i}": v for i, v in enumerate(values)})
    key_text = ", ".join(f"{k}::text AS cursor_key{i}" for i, (k, _) in enumerate(view.keys))
    text = (f"SELECT {', '.join(view.columns)}, {key_text} FROM {view.source}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY {', '.join(k for k, _ in view.keys)} LIMIT %(limit)s")
    return sql.SQL(text), params  # only our own constants are interpolated; values are parameters


# -- cursors ------------------------------------------------------------------------------
CURSOR_MAC_BYTES = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Only the one spelling _b64 gives: padding or spare low bits would let a cursor change and still pass."""
    raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(raw) != text:
        raise ValueError("not canonical")
    return raw


def _mac(q: Query, payload: bytes) -> bytes:
    bound = f"{q.view.name}\n{q.shop_id}\n".encode() + payload  # a cursor pages one view of one shop
    return hmac.new(q.cursor_key, bound, hashlib.sha256).digest()[:CURSOR_MAC_BYTES]


def _encode_cursor(q: Query, key_text: tuple[str, ...]) -> str:
    payload = json.dumps(list(key_text), separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(q, payload))}"


def _decode_cursor(q: Query) -> list[str]:
    """The sort key a cursor carries, if this server signed it for this view and shop."""
    try:
        payload_text, mac_text = q.cursor.split(".")
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (ValueError, binascii.Error):  # non-ASCII text is a ValueError too
        raise InvalidQuery("cursor", "not a cursor this view returned") from None
    if not hmac.compare_digest(mac, _mac(q, payload)):
        raise InvalidQuery("cursor", "not a cursor this view returned")
    return json.loads(payload)


def _type_name(conn: Connection, oid: int) -> str:
    info = conn.adapters.types.get(oid)
    if info is None:
        return "text"
    return f"{info.name}[]" if oid == info.array_oid else info.name
