"""Prices out to Etsy: every accepted price change of a linked listing, exactly once in effect.

Two parts:
- `PushQueue` follows the global log. Each page's Listing.PriceChanged events of linked listings
  become (or replace) the listing's row in marketplace.etsy_push_queue, and the page's position
  commits in the same transaction (exactly once, like the projector). A row only ever moves to a
  newer version: an older change is superseded, never queued over a newer one; a change made at
  Etsy (source marketplace, drift) takes an older queued price off instead of pushing it back.
- `EtsyPusher` drains the queue: GET the listing's full inventory, transform it (ids and
  is_deleted dropped, money objects as floats, the new price set), PUT it back, and record the
  outcome as an event (EtsyPush.Pushed / Failed with Etsy's answer / Retrying) in the transaction
  that takes the row off the queue (Marketplace.record_push). A crash between the PUT and that
  record leaves the row: the same price is pushed again, which changes nothing at Etsy. One pusher
  works per database at a time (a session advisory lock), so a slow push of an older version can
  never land after a newer one.
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

import codec
from commands.marketplace import Marketplace
from domain.errors import DomainError
from domain.listing import Listing
from domain.marketplace import (FAILED, PUSHED, RETRYING, EtsyRefused, EtsyUnavailable, GrantRefused,
                                inventory_for_put, price_of_inventory)
from domain.meta import Source
from domain.money import Money
from projections.connection import LazyConnection
from projections.log import EventLog
from projections.projector import follow_log, keep_following
from streams.etsy_client import EtsyClient
from streams.etsy_grant import ShopSession

log = logging.getLogger(__name__)

QUEUE_NAME = "etsy-push"
PUSHER_LOCK = 0x45545950  # "ETYP": the advisory lock held by the one working pusher
RETRY_BASE_S, RETRY_CAP_S = 1.0, 300.0
PAUSED = "paused"


@dataclass
class QueueStats:
    pages: int = 0
    events_read: int = 0
    queued: int = 0
    position: int = 0
    last_error: str | None = None


class PushQueue:
    """The log follower that keeps the push queue; see the module's docstring."""

    event_types = (Listing.PriceChanged,)

    def __init__(self, conninfo: str, page_size: int = 1000, pause: float = 0.05):
        self.conninfo, self.page_size, self.pause = conninfo, page_size, pause
        self.name = QUEUE_NAME
        self.log = EventLog(codec.to_domain_event, [self])
        self.stats = QueueStats()
        self._db = LazyConnection(conninfo, "etsypro-etsy-queue")

    def step(self) -> int:
        conn = self._db.get()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("INSERT INTO streams.policy_positions (policy) VALUES (%s) ON CONFLICT DO NOTHING", [self.name])
            after = cur.execute("SELECT log_position FROM streams.policy_positions WHERE policy = %s FOR UPDATE",
                                [self.name]).fetchone()[0]
            page = self.log.read(cur, after, self.page_size)
            if page.last is None:
                return 0
            self.stats.queued += self._queue(cur, page.events)
            cur.execute("UPDATE streams.policy_positions SET log_position = %s, events_seen = events_seen + %s,"
                        " updated_at = now() WHERE policy = %s", [page.last, len(page.events), self.name])
        self.stats.pages += 1
        self.stats.events_read += page.rows
        self.stats.position = page.last
        return page.rows

    @staticmethod
    def _queue(cur, events) -> int:
        latest: dict[UUID, object] = {}
        for _, e in events:  # log order: the last change of a listing in the page is its newest
            latest[e.originator_id] = e
        pushed = [e for e in latest.values() if e.meta.source != Source.MARKETPLACE.value]
        at_etsy = [e for e in latest.values() if e.meta.source == Source.MARKETPLACE.value]
        if at_etsy:  # Etsy has these prices already: an older queued price must not go over them
            cur.execute("DELETE FROM marketplace.etsy_push_queue q USING unnest(%s::uuid[], %s::int8[]) AS d(listing_id, version)"
                        " WHERE q.listing_id = d.listing_id AND q.version < d.version",
                        [[e.originator_id for e in at_etsy], [e.originator_version for e in at_etsy]])
        if not pushed:
            return 0
        cur.execute(
            "INSERT INTO marketplace.etsy_push_queue AS q (listing_id, shop_id, version, price, currency)"
            " SELECT u.listing_id, l.shop_id, u.version, u.price, u.currency"
            " FROM unnest(%s::uuid[], %s::int8[], %s::numeric[], %s::text[]) AS u(listing_id, version, price, currency)"
            " JOIN marketplace.etsy_listings l ON l.listing_id = u.listing_id AND u.version > l.pushed_version"
            " ON CONFLICT (listing_id) DO UPDATE SET version = excluded.version, price = excluded.price,"
            " currency = excluded.currency, enqueued_at = now(), attempts = 0, next_try_at = now(), last_error = NULL"
            " WHERE excluded.version > q.version",
            [[e.originator_id for e in pushed], [e.originator_version for e in pushed],
             [e.price.amount for e in pushed], [e.price.currency for e in pushed]])
        return cur.rowcount

    def catch_up(self) -> int:
        total = 0
        while (covered := self.step()):
            total += covered
        return total

    def run(self, stop: threading.Event, idle_timeout: float = 1.0) -> None:
        keep_following("etsy push queue", self, stop, lambda: follow_log(
            self, self.conninfo, "etsypro-etsy-queue", stop, idle_timeout, self.page_size, self.pause))

    def close(self) -> None:
        self._db.close()


@dataclass
class PushStats:
    pushed: int = 0
    failed: int = 0
    retrying: int = 0
    paused: int = 0  # rows left for shops whose grant Etsy refused
    errors: list[str] = field(default_factory=list)


class EtsyPusher:
    """Drains the push queue; see the module's docstring."""

    def __init__(self, marketplace: Marketplace, client: EtsyClient, conninfo: str, batch: int = 50,
                 max_attempts: int = 10, parallel: int = 6):
        self.marketplace, self.client, self.conninfo = marketplace, client, conninfo
        self.batch, self.max_attempts = batch, max_attempts
        # Pushes of distinct listings overlap (a batch holds each listing once), so that one push's
        # recording keeps no call slot of the paced budget waiting: the budget is the limit, not latency.
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="etsy-push")
        self.stats = PushStats()
        self._sessions: dict[UUID, ShopSession] = {}
        self._random = random.Random()
        self._lock_conn: psycopg.Connection | None = None

    def _hold_lock(self) -> bool:
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = psycopg.connect(self.conninfo, autocommit=True, application_name="etsypro-etsy-pusher")
        return self._lock_conn.execute("SELECT pg_try_advisory_lock(%s)", [PUSHER_LOCK]).fetchone()[0]

    def due(self) -> list[dict]:
        with psycopg.connect(self.conninfo, row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT q.listing_id, q.shop_id, q.version, q.price, q.currency, q.attempts, l.etsy_listing_id"
                " FROM marketplace.etsy_push_queue q JOIN marketplace.etsy_listings l USING (listing_id)"
                " JOIN marketplace.etsy_grants g ON g.shop_id = q.shop_id AND g.status = 'connected'"
                " WHERE q.next_try_at <= now() ORDER BY q.next_try_at, q.enqueued_at LIMIT %s", [self.batch]).fetchall()

    def step(self) -> int:
        """Push the due rows (up to a batch); returns how many were tried (0: none due, or another pusher works)."""
        if not self._hold_lock():
            return 0
        rows = self.due()
        for outcome in self._pool.map(self.push, rows):
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        return len(rows)

    def push(self, row: dict) -> str:
        """One queued change to Etsy; its outcome: pushed, failed, retrying or paused (the grant is refused)."""
        price = Money(Decimal(row["price"]), row["currency"])
        session = self._session(row["shop_id"])
        etsy_id = row["etsy_listing_id"]
        try:
            inventory = session.call(lambda token: self.client.inventory(token, etsy_id))
            body = inventory_for_put(inventory, price)
            answer = session.call(lambda token: self.client.put_inventory(token, etsy_id, body))
            kept = price_of_inventory(answer)
            if kept != price and not body["price_on_property"]:
                raise EtsyRefused(200, f"Etsy kept {kept} after a PUT of {price}")
        except GrantRefused:
            return PAUSED  # recorded as the connection's GrantRevoked; the row waits for a reconnect
        except EtsyUnavailable as e:
            return self._retry_or_fail(row, price, e.status, str(e))
        except (EtsyRefused, DomainError) as e:
            status = getattr(e, "status", None)
            self._record(row, price, FAILED, status, getattr(e, "answer", None) or str(e))
            return FAILED
        self._record(row, price, PUSHED)
        return PUSHED

    def _retry_or_fail(self, row: dict, price: Money, status: int | None, answer: str) -> str:
        if row["attempts"] + 1 >= self.max_attempts:
            self._record(row, price, FAILED, status, f"gave up after {row['attempts'] + 1} attempts: {answer}")
            return FAILED
        wait = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** row["attempts"]) * self._random.uniform(0.5, 1.0)
        self._record(row, price, RETRYING, status, answer, wait)
        return RETRYING

    def _record(self, row: dict, price: Money, outcome: str, status: int | None = None, answer: str = "",
                wait: float = 0.0) -> None:
        self.marketplace.record_push(row["shop_id"], row["listing_id"], row["version"], price, outcome,
                                     status, answer, wait)

    def _session(self, shop_id: UUID) -> ShopSession:
        if shop_id not in self._sessions:
            self._sessions[shop_id] = ShopSession(self.marketplace, self.client, shop_id)
        return self._sessions[shop_id]

    def record_budget(self) -> None:
        """The budget as Etsy's headers told it, for the status read."""
        b = self.client.budget.snapshot()
        with psycopg.connect(self.conninfo) as conn:
            conn.execute("INSERT INTO marketplace.etsy_budget (app, limit_per_second, remaining_this_second,"
                         " limit_per_day, remaining_today, throttled_until, seen_at)"
                         " VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), now()) ON CONFLICT (app) DO UPDATE SET"
                         " limit_per_second = excluded.limit_per_second, remaining_this_second = excluded.remaining_this_second,"
                         " limit_per_day = excluded.limit_per_day, remaining_today = excluded.remaining_today,"
                         " throttled_until = excluded.throttled_until, seen_at = now()",
                         [self.client.app.keystring, b["limit_per_second"], b["remaining_this_second"],
                          b["limit_per_day"], b["remaining_today"], b["throttled_until"]])

    def run(self, stop: threading.Event, idle_s: float = 0.2) -> None:
        while not stop.is_set():
            try:
                tried = self.step()
                self.record_budget()
            except Exception as e:  # noqa: BLE001 - the database or a bug: logged, tried again
                self.stats.errors = (self.stats.errors + [f"{type(e).__name__}: {e}"])[-10:]
                log.exception("etsy pusher: %s", e)
                tried = 0
            if not tried:
                stop.wait(idle_s)

    def close(self) -> None:
        self._pool.shutdown()
        if self._lock_conn is not None:
            self._lock_conn.close()
        self.client.close()
