"""A Kafka sink: applies a batch of Kafka records to the projections, recording the last applied
offset of each topic partition in the same transaction as the view rows (streams.sink_offsets).

Exactly-once in effect over at-least-once delivery:
- a record at or below its partition's recorded offset was applied already: it is skipped, so
  redelivery after a crash or a rebalance changes nothing;
- the same event published twice by the relay (a restart re-publishes the unrecorded page)
  arrives at two offsets; the projections are idempotent per event (facts are keyed by the
  event's log position, current state moves forward by aggregate version), so the second copy
  changes nothing either;
- offsets only ever advance contiguously: the first record a batch applies in a partition must
  be the one right after the recorded offset. A record beyond that means the consumer passed
  over records (its committed offset ran ahead of what was applied): the sink refuses to skip
  them and reports where the partition must be re-read from (`Applied.rewind`).

An event that fails for what it is (not for the database's state) does not stop its partition:
the batch is applied again with that event parked (projections/parking.py, follower
`<sink>/<projection>`) in the transaction of the offsets; parked events are retried at the first
batch and every minute after.

Kafka orders records per partition only. Every projection here depends only on per-aggregate
order (facts and rollups are order-free, the price board is per listing), and one aggregate's
events share a partition (streams/wire.py), so views converge to what the in-process projector
produces. Within a batch, events are handed over in log order, deduplicated by position.

Plain psycopg and projections, no faust: the faust worker (streams/workers.py) calls apply()
from a thread.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import psycopg

from projections import parking
from projections.connection import LazyConnection
from projections.base import LIVE, Projection, Tables, of_types
from projections.log import Decoder, topics_of
from projections.registry import ALL
from streams.wire import Record

log = logging.getLogger(__name__)

TP = tuple[str, int]  # (topic, partition)
APPLICATION_NAME = "etsypro-kafka-sink"


@dataclass
class Applied:
    records: int = 0                                     # records in the batch
    skipped: int = 0                                     # at or below the recorded offsets: applied before
    events: int = 0                                      # distinct events handed to the projections
    offsets: dict[TP, int] = field(default_factory=dict)  # last applied offset per partition, after the batch
    rewind: dict[TP, int] = field(default_factory=dict)   # partitions with a gap: re-read from this offset


class Sink:
    def __init__(self, conninfo: str, decode: Decoder, name: str, projections: Sequence[Projection] = ALL,
                 tables: Tables = LIVE, application_name: str = APPLICATION_NAME):
        self.conninfo = conninfo
        self.decode = decode
        self.name = name
        self.projections = tuple(projections)
        self.tables = tables
        self.topics = topics_of(self.projections)  # event topics some projection reads
        self.application_name = application_name
        self._db = LazyConnection(conninfo, application_name)
        self._known: set[TP] = set()  # partitions that have an offsets row
        # One transaction at a time on our connection, even if a cancelled caller's thread is
        # still finishing one (faust restarts agents on a rebalance).
        self._busy = threading.Lock()
        self.retries = parking.RetrySchedule()

    def apply(self, records: Sequence[Record]) -> Applied:
        """Apply the records not applied yet, in one transaction with their partitions' offsets.
        Parked events are retried first when due (at the first batch, then every minute)."""
        with self._busy:
            self._retry_when_due()
            return self._apply(records)

    def _apply(self, records: Sequence[Record]) -> Applied:
        try:
            return self._apply_batch(records, isolating=False)
        except Exception as error:  # noqa: BLE001
            if parking.is_transient(error):
                raise  # the database, not an event: apply_retrying retries the whole batch
            log.warning("sink %s: a batch failed (%s); applying it again, parking the events that fail", self.name,
                        parking.describe(error))
            return self._apply_batch(records, isolating=True)

    def _apply_batch(self, records: Sequence[Record], isolating: bool) -> Applied:
        by_tp: dict[TP, list[Record]] = defaultdict(list)
        for r in records:
            by_tp[r.topic, r.partition].append(r)
        result = Applied(records=len(records))
        conn = self._db.get()
        with conn.transaction(), conn.cursor() as cur:
            recorded = self._lock(cur, sorted(by_tp))
            fresh: list[Record] = []
            for tp, batch in by_tp.items():
                batch = sorted({r.offset: r for r in batch}.values(), key=lambda r: r.offset)  # once per offset
                new = [r for r in batch if r.offset > recorded[tp]]
                result.skipped += len(by_tp[tp]) - len(new)
                contiguous = _contiguous_from(new, recorded[tp] + 1)
                if len(contiguous) < len(new):
                    result.rewind[tp] = recorded[tp] + 1 + len(contiguous)
                fresh.extend(contiguous)
                result.offsets[tp] = contiguous[-1].offset if contiguous else recorded[tp]
            events, undecodable = self._events(fresh)
            for projection in self.projections:
                self._project(conn, cur, projection, events, undecodable, isolating)
            self._advance(cur, result.offsets, recorded, _counts(fresh))
        self._known.update(by_tp)  # their offsets rows exist now (committed)
        result.events = len(events)
        return result

    def apply_retrying(self, records: Sequence[Record], max_backoff: float = 5.0) -> Applied:
        """apply(), retried while the database is unreachable or a concurrent writer deadlocks
        with us (another sink, the in-process projector): the batch must not be skipped."""
        # OperationalError: connection lost, deadlock, serialization failure.
        return retry_batch(lambda: self.apply(records), (psycopg.OperationalError,), f"sink {self.name}", self.close,
                           max_backoff=max_backoff)

    def parked_as(self, projection: Projection) -> str:
        """The follower name of this sink's parked events for one projection."""
        return f"{self.name}/{projection.name}"

    def retry_parked(self) -> tuple[int, int]:
        """Apply this sink's parked events again, in one transaction; returns (applied now, still parked)."""
        with self._busy:
            return self._retry()

    def _retry(self) -> tuple[int, int]:
        applied = remaining = 0
        conn = self._db.get()
        with conn.transaction(), conn.cursor() as cur:
            for projection in self.projections:
                ok, failing = parking.retry(conn, cur, self.parked_as(projection), projection, self.decode,
                                            self.tables)
                applied, remaining = applied + ok, remaining + failing
        self.retries.parked = remaining > 0
        return applied, remaining

    def _retry_when_due(self) -> None:
        if self.retries.due():
            self._retry()

    # -- steps --------------------------------------------------------------------------
    def _project(self, conn, cur, projection: Projection, events: list, undecodable: list[parking.Failure],
                 isolating: bool) -> None:
        """Apply the events to one projection; isolating, park those that fail alone (and those that
        did not decode) in this transaction."""
        failures = [f for f in undecodable if f.topic in topics_of([projection])] if undecodable else []
        if not isolating:
            projection.apply(cur, events, self.tables)
        else:
            mine = of_types(events, projection.event_types)
            failed = parking.isolate(mine, lambda chunk: parking.in_savepoint(
                conn, lambda: projection.apply(cur, chunk, self.tables)))
            failures += [parking.Failure.of(pe, error) for pe, error in failed]
        if failures:
            parking.park(cur, self.parked_as(projection), failures)
            self.retries.parked = True
            log.error("sink %s: %s parked %d event(s), the first at %d: %s", self.name, projection.name,
                      len(failures), failures[0].position, failures[0].error)

    def _events(self, records: list[Record]) -> tuple[list[tuple[int, object]], list[parking.Failure]]:
        """(position, domain event) of the records some projection reads, in log order, once each;
        and a Failure for each that does not decode."""
        wanted, decode, by_position = self.topics, self.decode, {}
        try:
            for r in records:
                if r.event_topic in wanted and r.position not in by_position:
                    by_position[r.position] = decode(r.stored_event())
        except Exception:  # noqa: BLE001 - decode one by one: the others are applied
            stored = {r.position: r.stored_event() for r in records if r.event_topic in wanted}
            return parking.decode_each(sorted(stored.items(), key=lambda ps: ps[0]), decode)
        return sorted(by_position.items(), key=lambda pe: pe[0]), []

    def _lock(self, cur: psycopg.Cursor, tps: list[TP]) -> dict[TP, int]:
        """The partitions' recorded offsets, rows locked in a fixed order until commit: two
        sinks of one name (a rebalance in flight) never apply the same records."""
        new = [tp for tp in tps if tp not in self._known]
        if new:
            cur.execute("INSERT INTO streams.sink_offsets (sink, topic, partition)"
                        " SELECT %s, * FROM unnest(%s::text[], %s::int[]) ON CONFLICT DO NOTHING",
                        [self.name, [t for t, _ in new], [p for _, p in new]])
        rows = cur.execute(
            "SELECT topic, partition, last_offset FROM streams.sink_offsets"
            " WHERE sink = %s AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
            " ORDER BY topic, partition FOR UPDATE",
            [self.name, [t for t, _ in tps], [p for _, p in tps]], prepare=True).fetchall()
        return {(t, p): offset for t, p, offset in rows}

    def _advance(self, cur: psycopg.Cursor, offsets: dict[TP, int], recorded: dict[TP, int],
                 applied: dict[TP, int]) -> None:
        moved = [tp for tp, offset in offsets.items() if offset > recorded[tp]]
        if moved:
            cur.execute(
                "UPDATE streams.sink_offsets s SET last_offset = u.last_offset,"
                " records_applied = s.records_applied + u.applied, updated_at = now()"
                " FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[])"
                " AS u(topic, partition, last_offset, applied)"
                " WHERE s.sink = %s AND s.topic = u.topic AND s.partition = u.partition",
                [[t for t, _ in moved], [p for _, p in moved], [offsets[tp] for tp in moved],
                 [applied.get(tp, 0) for tp in moved], self.name], prepare=True)

    def close(self) -> None:
        self._db.close()


T = TypeVar("T")


def retry_batch(attempt: Callable[[], T], retried: tuple[type[BaseException], ...], what: str,
                reset: Callable[[], None], stop: threading.Event | None = None, max_backoff: float = 5.0,
                on_error: Callable[[str], None] = lambda error: None) -> T:
    """attempt(), again after each `retried` error, backing off from 0.05 s to `max_backoff`: a
    Kafka worker must not skip a batch. `reset` drops what the error may have broken (the
    connection); once `stop` is set, the wait ends in InterruptedError."""
    stop = stop or threading.Event()
    backoff = 0.05
    while True:
        try:
            return attempt()
        except retried as e:
            error = f"{type(e).__name__}: {e}"
            on_error(error)
            log.warning("%s: %s; retrying the batch in %.2fs", what, error, backoff)
            reset()
            if stop.wait(backoff):
                raise InterruptedError("stopped while retrying a batch") from e
            backoff = min(backoff * 2, max_backoff)


def _contiguous_from(records: list[Record], expected: int) -> list[Record]:
    """The leading records whose offsets run expected, expected + 1, ... without a gap."""
    for i, r in enumerate(records):
        if r.offset != expected + i:
            return records[:i]
    return records


def _counts(records: list[Record]) -> dict[TP, int]:
    counts: dict[TP, int] = defaultdict(int)
    for r in records:
        counts[r.topic, r.partition] += 1
    return counts


def offsets(conninfo: str, sink: str) -> dict[TP, int]:
    """A sink's recorded offsets: (topic, partition) -> last applied offset."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT topic, partition, last_offset FROM streams.sink_offsets WHERE sink = %s",
                            [sink]).fetchall()
    return {(t, p): o for t, p, o in rows}
