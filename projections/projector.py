"""The projector: follows the global log in commit order and applies it to the projections in
batches, each batch one transaction holding the view rows and the new tracking positions.

A crash at any point loses nothing and counts nothing twice: either the batch's transaction
committed (rows and positions together) or none of it did, and the next run resumes from the
committed positions. Catch-up reads pages of `batch_size` events; once caught up, the projector
sleeps until the recorder's NOTIFY on channel `pricing_events` says a transaction committed new
events (or `idle_timeout` passes), so new events are visible in the views within milliseconds.

A batch that fails for what one of its events is (not for the database's state) is applied
again with the failing events found by bisection and parked (projections/parking.py) in the
batch's transaction: one poisoned event holds back no other. The happy path pays nothing for it.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import psycopg

from projections import parking, tracking
from projections.connection import LazyConnection
from projections.base import LIVE, Projection, Tables, of_types
from projections.log import Decoder, EventLog, Page, topics_of
from projections.registry import ALL

log = logging.getLogger(__name__)

CHANNEL = "pricing_events"  # the recorder NOTIFYs it in every transaction that inserts events
DEFAULT_BATCH = 10_000  # events per transaction: larger batches amortise round trips
APPLICATION_NAME = "etsypro-projector"


@dataclass
class Stats:
    batches: int = 0
    events_read: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.monotonic)


class Projector:
    def __init__(self, conninfo: str, decode: Decoder, projections: Sequence[Projection] = ALL,
                 batch_size: int = DEFAULT_BATCH, tables: Tables = LIVE, tracking_prefix: str = "",
                 application_name: str = APPLICATION_NAME, pause: float = 0.0):
        self.conninfo = conninfo
        self.pause = pause  # seconds to let commits gather after a partial batch (follow_log)
        self.projections = tuple(projections)
        self.batch_size = batch_size
        self.tables = tables
        self.track_as = {p.name: f"{tracking_prefix}{p.name}" for p in self.projections}
        self.log = EventLog(decode, self.projections)
        self.application_name = application_name
        self.stats = Stats()
        self.retries = parking.RetrySchedule()
        self._db = LazyConnection(conninfo, application_name)

    # -- one batch ------------------------------------------------------------------------
    def step(self) -> int:
        """Apply the next batch in one transaction; returns how many stored events it covered
        (0 when the projections are at the head of the log)."""
        self._retry_parked_when_due()
        covered = self._step(None)
        self.stats.last_error = None
        return covered

    def _step(self, prefetched: tuple[int, Page] | None) -> int | None:
        """As step(), using a page read ahead when it starts where the projections are.
        None: the prefetched page starts elsewhere (someone else moved the positions)."""
        try:
            return self._apply_page(prefetched, isolating=False)
        except Exception as error:  # noqa: BLE001
            if parking.is_transient(error):
                raise  # the database, not an event: the whole batch is retried (keep_following)
            log.warning("projector: a batch failed (%s); applying it again, parking the events that fail",
                        parking.describe(error))
            return self._apply_page(prefetched, isolating=True)

    def _apply_page(self, prefetched: tuple[int, Page] | None, isolating: bool) -> int | None:
        conn = self._db.get()
        names = list(self.track_as.values())
        with conn.transaction(), conn.cursor() as cur:
            # Views are derived data: a server crash may lose the last few batches committed
            # without waiting for the disk, but recovery keeps or loses each transaction whole
            # (rows and position together), so the projector simply applies them again.
            cur.execute("SET LOCAL synchronous_commit = off", prepare=True)
            positions = tracking.lock(cur, names)
            start = min(positions.values())
            if prefetched is None:
                page = self.log.read(cur, start, self.batch_size)
            elif prefetched[0] == start:
                page = prefetched[1]
            else:
                return None
            if page.last is None:
                return 0
            moves = {}
            for projection in self.projections:
                name = self.track_as[projection.name]
                done = positions[name]
                mine = page.events if done == start else [pe for pe in page.events if pe[0] > done]
                applied = self._apply(conn, cur, projection, name, of_types(mine, projection.event_types),
                                      [f for f in page.undecodable if f.position > done], isolating)
                moves[name] = (max(done, page.last), applied)
            tracking.advance(cur, moves)
        self.stats.batches += 1
        self.stats.events_read += page.rows
        return page.rows

    def _apply(self, conn, cur, projection: Projection, name: str, events: list, undecodable: list,
               isolating: bool) -> int:
        """Apply one projection's events of the page; returns how many were applied. Isolating:
        each chunk in a savepoint, and the events that fail alone parked (in this transaction)."""
        failed = []
        if not isolating:
            projection.apply(cur, events, self.tables)
        else:
            failed = parking.isolate(events, lambda chunk: parking.in_savepoint(
                conn, lambda: projection.apply(cur, chunk, self.tables)))
        topics = topics_of([projection]) if undecodable else ()
        failures = [parking.Failure.of(pe, error) for pe, error in failed] + [
            f for f in undecodable if f.topic in topics]
        if failures:
            parking.park(cur, name, failures)
            self.retries.parked = True
            log.error("projector: %s parked %d event(s), the first at %d: %s", name, len(failures),
                      failures[0].position, failures[0].error)
        return len(events) - len(failed)

    # -- parked events ------------------------------------------------------------------------
    def retry_parked(self) -> tuple[int, int]:
        """Apply the parked events again (in one transaction with the positions, so no batch runs
        meanwhile); returns (applied now, still parked)."""
        self._ensure_tracking()
        conn = self._db.get()
        applied = remaining = 0
        with conn.transaction(), conn.cursor() as cur:
            tracking.lock(cur, list(self.track_as.values()))
            for projection in self.projections:
                ok, failing = parking.retry(conn, cur, self.track_as[projection.name], projection, self.log.decode,
                                            self.tables)
                applied, remaining = applied + ok, remaining + failing
        self.retries.parked = remaining > 0
        if applied or remaining:
            log.warning("projector: retried parked events: %d applied, %d still parked", applied, remaining)
        return applied, remaining

    def _retry_parked_when_due(self) -> None:
        if self.retries.due():
            self.retry_parked()

    def catch_up(self, progress: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> int:
        """Apply batches until the head of the log; returns the stored events covered.

        The next pages are read and decoded on another thread and connection while this one
        applies the current page, so Python's decoding overlaps with the database's writing."""
        self._ensure_tracking()
        self._retry_parked_when_due()
        total = 0
        reader = None
        try:
            while stop is None or not stop.is_set():
                if reader is None:
                    reader = _ReadAhead(self.conninfo, self.log, self._start(), self.batch_size)
                covered = self._step(reader.next())
                if covered is None:  # positions moved under us: read from where they are now
                    reader.close()
                    reader = None
                    continue
                if covered == 0:
                    return total
                total += covered
                if progress:
                    progress(total)
            return total
        finally:
            if reader is not None:
                reader.close()

    def _start(self) -> int:
        conn = self._db.get()
        with conn.transaction(), conn.cursor() as cur:
            rows = cur.execute("SELECT min(log_position) FROM analytics.projection_tracking"
                               " WHERE projection = ANY(%s)", [list(self.track_as.values())]).fetchone()
        return rows[0] or 0

    # -- following the log ----------------------------------------------------------------
    def run(self, stop: threading.Event, idle_timeout: float = 1.0) -> None:
        """Follow the log until `stop` is set, surviving database restarts and failing batches."""
        keep_following("projector", self, stop, lambda: self._follow(stop, idle_timeout))

    def _follow(self, stop: threading.Event, idle_timeout: float) -> None:
        self._ensure_tracking()
        follow_log(self, self.conninfo, self.application_name, stop, idle_timeout, self.batch_size, self.pause,
                   first=lambda: self.catch_up(stop=stop))

    # -- connections ----------------------------------------------------------------------
    def _ensure_tracking(self) -> None:
        conn = self._db.get()
        with conn.transaction(), conn.cursor() as cur:
            tracking.ensure(cur, self.track_as.values())

    def close(self) -> None:
        self._db.close()


class _ReadAhead:
    """Reads and decodes the pages after `after`, in order, on its own thread and connection.

    Pages read on any connection are the same pages: ids are only ever visible in commit order,
    so reading ahead never skips an event. It stops after the first empty page (the head)."""

    def __init__(self, conninfo: str, event_log: EventLog, after: int, limit: int, depth: int = 2):
        self._pages: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._args = (conninfo, event_log, after, limit)
        self._thread = threading.Thread(target=self._run, name="projector-read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conninfo, event_log, after, limit = self._args
        try:
            with psycopg.connect(conninfo, autocommit=True, application_name=f"{APPLICATION_NAME}-read") as conn, \
                    conn.cursor() as cur:
                while not self._stop.is_set():
                    page = event_log.read(cur, after, limit)
                    self._put((after, page))
                    if page.last is None:
                        return
                    after = page.last
        except BaseException as e:  # hand it to the consumer, who raises it
            self._put(e)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._pages.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[int, Page]:
        item = self._pages.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def tune_gc() -> None:
    """Fewer, larger garbage collections: decoding a page allocates about a million small
    objects, and the default thresholds collect far too often for that. Called by the
    processes that do such work: `etsypro serve`, `project`, rebuild, workers and benchmarks;
    memory stays bounded by the batch size."""
    gc.set_threshold(100_000, 50, 1000)


def follow_log(follower, conninfo: str, application_name: str, stop: threading.Event, idle_timeout: float,
               page_size: int, pause: float = 0.0, first: Callable[[], object] = lambda: None) -> None:
    """The loop of both log followers (the projector, the repricing policy): step while pages come
    full; after a partial one, wait `pause` seconds and then for a commit's NOTIFY (or
    `idle_timeout`). The pause lets commits gather: under a steady stream of single commands an
    unpaced step covers one or two events and pays a whole transaction for them (in `serve` that
    cost more CPU than the HTTP request that wrote them); the views trail the log by up to
    `pause` more, and catching up (full pages) is not slowed."""
    with psycopg.connect(conninfo, autocommit=True, application_name=f"{application_name}-listen") as listener:
        # LISTEN before reading: a commit that happens while a page is being applied leaves its
        # notification queued, so the wait below returns at once instead of sleeping.
        listener.execute(f"LISTEN {CHANNEL}")
        first()
        while not stop.is_set():
            if follower.step() < page_size:
                if pause > 0 and stop.wait(pause):
                    return
                for _ in listener.notifies(timeout=idle_timeout, stop_after=1):
                    pass
                for _ in listener.notifies(timeout=0.0):  # drain the rest: one step reads them all
                    pass


def keep_following(name: str, follower, stop: threading.Event, follow) -> None:
    """Run follow() until `stop` is set. A database outage or an event that cannot be applied is
    retried with back-off, and shown as follower.stats.last_error (the lag endpoint), rather than
    ending the follower silently. follow() may raise InterruptedError to end at once."""
    backoff = 0.1
    while not stop.is_set():
        try:
            follow()
        except InterruptedError:
            return
        except Exception as e:  # noqa: BLE001
            follower.stats.last_error = f"{type(e).__name__}: {e}"
            log.exception("%s: %s; retrying in %.1fs", name, follower.stats.last_error, backoff)
            follower.close()
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        else:
            backoff = 0.1


class InBackground:
    """A log follower (anything with run(stop_event) and close()) on a daemon thread: how
    `etsypro serve` runs the projector and the repricing policy next to the HTTP API."""

    def __init__(self, follower, name: str):
        self.follower = follower
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.follower.run(self._stop)
        finally:
            self.follower.close()

    def start(self) -> InBackground:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @classmethod
    def projector(cls, projector: Projector) -> InBackground:
        return cls(projector, "projector")

