"""New events as they commit, for open dashboards: ONE database listener per process (LISTEN on the
recorder's channel, then a read of the log after the last position seen), fanned out in memory to
every subscriber whose shops the event belongs to.

Each event is decoded and serialised once, whatever the number of subscribers; a subscriber holds a
bounded queue of shared bytes. A subscriber that falls too far behind is dropped (its stream ends)
rather than buffered without bound: the browser reconnects with Last-Event-ID and `backlog` reads
what it missed from the log, so nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

import codec
from codec.plain import describe_event
from domain.facts import ObservationBatch, SalesBatch
from read.pool import ReadPool

log = logging.getLogger(__name__)

CHANNEL = "pricing_events"  # the recorder NOTIFYs it in every transaction that inserts events
PAGE = 500
MAX_DATA_BYTES = 4096  # a batch of 10,000 observations is announced, not shipped to every page
QUEUE_LIMIT = 1000     # events waiting for one slow client before it is dropped (it resumes by position)
BACKLOG_LIMIT = 5000   # events a reconnecting client may catch up on; beyond that it reloads its page

# Not streamed: a batch's lines (10,000 per batch: its one Received event announces them) and anything
# of an account (logins, grants: never a dashboard's business, whatever shop they may name).
QUIET = [get_topic(t) for t in (ObservationBatch.CompetitorPriceObserved, SalesBatch.Sold, SalesBatch.Returned)]
_QUIET_SQL = "(e.topic = ANY(%(quiet)s) OR e.topic LIKE 'domain.account:%%')"
# The listener reads every row (so that its position passes the quiet ones) but no quiet event's bytes.
_FOLLOW = ("SELECT e.notification_id, e.originator_id, e.originator_version, e.topic,"
           f" CASE WHEN {_QUIET_SQL} THEN NULL ELSE e.state END, i.shop_id"
           " FROM pricing_events e JOIN event_index i ON i.notification_id = e.notification_id"
           " WHERE e.notification_id > %(after)s ORDER BY e.notification_id LIMIT %(limit)s")
_BACKLOG = ("SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, i.shop_id"
            " FROM pricing_events e JOIN event_index i ON i.notification_id = e.notification_id"
            f" WHERE e.notification_id > %(after)s AND NOT {_QUIET_SQL}"
            " AND i.shop_id IN (SELECT shop_id FROM shop_directory WHERE tenant_id = %(tenant)s) {shops}"
            " ORDER BY e.notification_id LIMIT %(limit)s")


@dataclass(eq=False)  # compared and hashed by identity: a set holds them
class Subscriber:
    """One open stream: its tenant and shops (None: every shop of the tenant), and its queue."""

    tenant_id: str
    shops: frozenset[str] | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    dropped: bool = False
    since: int = 0  # the feed's position when it subscribed: it is offered every event after it

    def wants(self, tenant_id: str, shop_id: str) -> bool:
        return tenant_id == self.tenant_id and (self.shops is None or shop_id in self.shops)

    def offer(self, position: int, message: bytes) -> None:
        """Called on the subscriber's event loop; drops it (None ends its stream) when it is full."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait((position, message))
        except asyncio.QueueFull:
            self.end()

    def end(self) -> None:
        """End its stream now (on its event loop): the client resumes from its Last-Event-ID."""
        self.dropped = True
        self.queue._queue.clear()  # noqa: SLF001 - make room for the end-of-stream marker
        self.queue.put_nowait(None)


def sse_message(position: int, event: dict) -> bytes:
    """One Server-Sent Event: its id is the log position, so Last-Event-ID resumes after it."""
    return b"id: %d\nevent: event\ndata: %s\n\n" % (position, orjson.dumps(event))


def describe(row: tuple) -> tuple[int, str | None, dict]:
    """(position, shop id, event as the audit routes show it, data left out when large)."""
    position, originator_id, version, topic, state, shop_id = row
    event = describe_event(codec.to_domain_event(StoredEvent(originator_id, version, topic, bytes(state))), position)
    event["shop_id"] = str(shop_id) if shop_id is not None else None
    if len(state) > MAX_DATA_BYTES:
        event["data"], event["data_omitted"] = {}, True
    return position, event["shop_id"], event


class LiveFeed:
    """The process's one follower of the log for dashboards; started by the first subscriber."""

    def __init__(self, conninfo: str, pool: ReadPool, idle_timeout: float = 1.0,
                 reveal: Callable[[dict], dict] = lambda event: event):
        self.conninfo, self.pool, self.idle_timeout = conninfo, pool, idle_timeout
        self.reveal = reveal  # personal data sealed in events (a reason someone wrote), opened for the page
        self.subscribers: set[Subscriber] = set()
        self.position = 0
        self.last_event_at: str | None = None
        self.events_seen = 0
        self._tenants: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # -- subscribers (called on the event loop) ---------------------------------------------------
    def subscribe(self, tenant_id: str, shops: Iterable[str] | None) -> Subscriber:
        subscriber = Subscriber(tenant_id, None if shops is None else frozenset(shops), asyncio.get_running_loop())
        with self._lock:
            subscriber.since = self.position
            self.subscribers.add(subscriber)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
                self._thread.start()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self.subscribers.discard(subscriber)

    def wait_started(self, timeout: float = 5.0) -> bool:
        """Whether the listener is in place (tests and the benchmark wait for it)."""
        return self._started.wait(timeout)

    def backlog(self, subscriber: Subscriber, after: int, upto: int | None = None) -> list[tuple[int, bytes]] | None:
        """The subscriber's events after `after` (up to `upto`), from the log; None when more than
        BACKLOG_LIMIT are missing (the page had better reload than replay them)."""
        params = {"after": after, "quiet": QUIET, "tenant": subscriber.tenant_id, "limit": BACKLOG_LIMIT + 1}
        shops = ""
        if subscriber.shops is not None:
            shops += " AND i.shop_id = ANY(%(shops)s)"
            params["shops"] = [UUID(s) for s in subscriber.shops]
        if upto is not None:
            shops += " AND e.notification_id <= %(upto)s"
            params["upto"] = upto
        rows = self.pool.rows(_BACKLOG.format(shops=shops), params)
        if len(rows) > BACKLOG_LIMIT:
            return None
        return [(position, sse_message(position, event)) for position, _, event in map(describe, rows)]

    # -- the listener (its own thread) ------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception:  # noqa: BLE001 - a database outage: retry, the position is kept
                log.exception("live feed: retrying in %.1fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _follow(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True, application_name="etsypro-live") as conn:
            conn.execute(f"LISTEN {CHANNEL}")  # before reading: a commit meanwhile leaves its notification queued
            if self.position == 0:
                head = conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]
                with self._lock:  # the first subscribers are offered what commits from now on
                    self.position = head
                    for subscriber in self.subscribers:
                        subscriber.since = head
            self._started.set()
            while not self._stop.is_set():
                while self._read_page(conn) == PAGE:
                    pass
                for _ in conn.notifies(timeout=self.idle_timeout, stop_after=1):
                    pass

    def _read_page(self, conn: psycopg.Connection) -> int:
        rows = conn.execute(_FOLLOW, {"after": self.position, "quiet": QUIET, "limit": PAGE}, binary=True).fetchall()
        for row in rows:
            if row[4] is None:  # quiet: passed over
                self.position = row[0]
                continue
            position, shop_id, event = describe(row)
            with self._lock:  # with the fan-out's: a new subscriber's `since` is exact
                self.position, self.events_seen = position, self.events_seen + 1
            self.last_event_at = event["recorded_at"]
            if shop_id is not None:
                self._fan_out(self._tenant_of(conn, shop_id), shop_id, position, sse_message(position, self.reveal(event)))
        return len(rows)

    def _fan_out(self, tenant_id: str | None, shop_id: str, position: int, message: bytes) -> None:
        with self._lock:
            wanting = [s for s in self.subscribers if s.wants(tenant_id, shop_id)]
        for subscriber in wanting:
            try:
                subscriber.loop.call_soon_threadsafe(subscriber.offer, position, message)
            except RuntimeError:  # its loop is closed: the server stopped
                self.unsubscribe(subscriber)

    def _tenant_of(self, conn: psycopg.Connection, shop_id: str) -> str | None:
        if shop_id not in self._tenants:  # a shop's tenant is fixed at its opening
            row = conn.execute("SELECT tenant_id FROM shop_directory WHERE shop_id = %s", [shop_id]).fetchone()
            if row is None:
                return None
            self._tenants[shop_id] = row[0]
        return self._tenants[shop_id]

    def end_streams(self) -> None:
        """End every open stream (the server is stopping): each page reconnects where it left off."""
        with self._lock:
            subscribers = list(self.subscribers)
        for subscriber in subscribers:
            try:
                subscriber.loop.call_soon_threadsafe(subscriber.end)
            except RuntimeError:  # its loop is closed already
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.idle_timeout + 1)


def stats(feed: LiveFeed) -> dict:
    return {"subscribers": len(feed.subscribers), "position": feed.position,
            "last_event_at": feed.last_event_at, "events_seen": feed.events_seen}

