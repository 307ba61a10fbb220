"""The Etsy connection as a shop's owner sees it: grant status, push queue and budget, sync cursors,
and the drift report (prices changed at Etsy outside the engine). Plain SQL on marketplace.*."""

from __future__ import annotations

from uuid import UUID

from psycopg.rows import dict_row

from read.pool import ReadPool


def _rows(pool: ReadPool, sql: str, params) -> list[dict]:
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as curs:
        return curs.execute(sql, params).fetchall()


def _text(row: dict | None) -> dict | None:
    """Times as ISO text and amounts as decimal strings, as every answer of the API gives them."""
    if row is None:
        return None
    return {k: (v.isoformat() if hasattr(v, "isoformat") else str(v) if hasattr(v, "as_tuple") else v)
            for k, v in row.items()}


def status(pool: ReadPool, shop_id: UUID) -> dict:
    grant = _rows(pool, "SELECT etsy_shop_id, status, status_reason AS reason, access_expires_at, updated_at"
                        " FROM marketplace.etsy_grants WHERE shop_id = %s", [shop_id])
    queue = _rows(pool, "SELECT count(*) AS waiting, count(*) FILTER (WHERE next_try_at <= now()) AS due,"
                        " min(enqueued_at) AS oldest, coalesce(max(attempts), 0) AS most_attempts"
                        " FROM marketplace.etsy_push_queue WHERE shop_id = %s", [shop_id])[0]
    sync = _rows(pool, "SELECT receipts_since, receipts_synced_at, listings_synced_at, last_error"
                       " FROM marketplace.etsy_sync WHERE shop_id = %s", [shop_id])
    budget = _rows(pool, "SELECT app, limit_per_second, remaining_this_second, limit_per_day, remaining_today,"
                         " throttled_until, seen_at FROM marketplace.etsy_budget ORDER BY app", [])
    linked = _rows(pool, "SELECT count(*) AS linked FROM marketplace.etsy_listings WHERE shop_id = %s", [shop_id])[0]
    connection = _text(grant[0]) if grant else {"status": "not connected"}
    return {"connection": connection, "paused": connection["status"] != "connected", "linked_listings": linked["linked"],
            "queue": _text(queue), "sync": _text(sync[0]) if sync else None,
            "budget": [_text(b) for b in budget]}


def queue(pool: ReadPool, shop_id: UUID, limit: int = 100) -> list[dict]:
    return [_text(r) for r in _rows(
        pool, "SELECT q.listing_id::text, l.etsy_listing_id, q.version, q.price, q.currency, q.enqueued_at, q.attempts,"
              " q.next_try_at, q.last_error FROM marketplace.etsy_push_queue q JOIN marketplace.etsy_listings l"
              " USING (listing_id) WHERE q.shop_id = %s ORDER BY q.next_try_at, q.enqueued_at LIMIT %s", [shop_id, limit])]


def drifts(pool: ReadPool, shop_id: UUID, limit: int = 100) -> list[dict]:
    return [_text(r) for r in _rows(
        pool, "SELECT listing_id::text, etsy_listing_id, seen_at, etsy_price, engine_price, currency, applied, refusal"
              " FROM marketplace.etsy_drifts WHERE shop_id = %s ORDER BY seen_at DESC LIMIT %s", [shop_id, limit])]
