"""Parking: what a follower of the log does with an event it cannot process.

A follower (the projector, a Kafka sink, the repricing policy) applies events in batches. When a
batch fails for a reason that retrying cannot fix (a value the database refuses, a bug reached
by one event's data), the batch is applied again with each failing event isolated: the events
that fail alone are parked in streams.parked_events with their error, in the same transaction
as the follower's new position, and everything else is applied. One poisoned event then holds
back nothing but itself. An infrastructure failure (a lost connection, a deadlock, a timeout)
is different: every event would fail, so the batch is retried whole and nothing is parked.

Parked events are retried later (when a follower starts, periodically, `etsypro projections
retry`); a row goes once its event is applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

import psycopg
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreUnavailable
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg import Cursor

from projections.base import Positioned

# Failures that are not the event's: the database or the network (retrying the whole batch
# fixes them), or the schema or a privilege (every event would fail alike: parking them all
# would empty the log into the parking table; the follower waits, showing the error, instead).
TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, psycopg.InterfaceError, psycopg.ProgrammingError, psycopg.InternalError,
    StoreUnavailable, StoreInterfaceError, OSError, TimeoutError, InterruptedError, MemoryError)

T = TypeVar("T")

RETRY_PARKED_EVERY = 60.0  # seconds between retries of parked events while a follower runs


class RetrySchedule:
    """When a follower retries its parked events: at its first step (whether any are parked is
    not known yet), then at most every `every` seconds, and only while some are parked."""

    def __init__(self, every: float = RETRY_PARKED_EVERY):
        self.every = every
        self.parked: bool | None = None
        self._next = 0.0

    def due(self) -> bool:
        if self.parked is False:
            return False
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every
        return True


def is_transient(error: BaseException, also: tuple[type[BaseException], ...] = ()) -> bool:
    return isinstance(error, TRANSIENT + also)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


@dataclass(frozen=True)
class Failure:
    """An event a follower could not process, and why."""

    position: int
    originator_id: object  # UUID
    originator_version: int
    topic: str
    error: str

    @classmethod
    def of(cls, positioned: Positioned, error: BaseException) -> Failure:
        position, event = positioned
        return cls(position, event.originator_id, event.originator_version, get_topic(type(event)), describe(error))

    @classmethod
    def undecodable(cls, position: int, stored: StoredEvent, error: BaseException) -> Failure:
        return cls(position, stored.originator_id, stored.originator_version, stored.topic, describe(error))


# -- finding the failing events -------------------------------------------------------------
def isolate(items: Sequence[T], attempt: Callable[[Sequence[T]], None], known_to_fail: bool = False,
            also_transient: tuple[type[BaseException], ...] = ()) -> list[tuple[T, BaseException]]:
    """Push `items` through attempt(chunk), which applies a chunk all or nothing (a savepoint),
    and return each item that fails alone with its error. A failing chunk is split in halves,
    tried in order, down to single items: every other item goes through exactly one successful
    attempt, in the order given, and a batch with k poisoned items of n costs O(k log n) attempts.
    A transient error is raised at once (the caller retries the whole batch).
    known_to_fail: the whole sequence just failed: start with its halves."""
    failed: list[tuple[T, BaseException]] = []
    pending = list(_halves(items)) if known_to_fail and len(items) > 1 else [list(items)]
    pending.reverse()  # a stack: the first chunk on top
    while pending:
        chunk = pending.pop()
        if not chunk:
            continue
        try:
            attempt(chunk)
        except Exception as error:  # noqa: BLE001 - which ones to park is decided here
            if is_transient(error, also_transient):
                raise
            if len(chunk) == 1:
                failed.append((chunk[0], error))
            else:
                first, second = _halves(chunk)
                pending += [second, first]
    return failed


def _halves(items: Sequence[T]) -> tuple[list[T], list[T]]:
    middle = len(items) // 2
    return list(items[:middle]), list(items[middle:])


def in_savepoint(conn: psycopg.Connection, work: Callable[[], object]) -> None:
    """work() all or nothing inside the current transaction."""
    with conn.transaction():
        work()


# -- the table -------------------------------------------------------------------------------
_PARK = """
    INSERT INTO streams.parked_events AS p (follower, log_position, originator_id, originator_version, topic,
                                            shop_id, tenant_id, error)
    SELECT %s, u.position, u.originator_id, u.originator_version, u.topic, i.shop_id, r.key, u.error
    FROM unnest(%s::int8[], %s::uuid[], %s::int8[], %s::text[], %s::text[])
         AS u(position, originator_id, originator_version, topic, error)
    LEFT JOIN event_index i ON i.notification_id = u.position
    LEFT JOIN reservations r ON r.shop_id = i.shop_id AND r.kind = 'tenant'
    ON CONFLICT (follower, log_position) DO UPDATE
    SET error = excluded.error, attempts = p.attempts + 1, last_tried_at = now()"""


def park(cur: Cursor, follower: str, failures: Iterable[Failure]) -> int:
    """Record the failures (a second failure of a parked event counts an attempt). Call it in the
    transaction that moves the follower's position past them."""
    statement, params = park_statement(follower, failures)
    if params[1]:
        cur.execute(statement, params)
    return len(params[1])


def park_statement(follower: str, failures: Iterable[Failure]) -> tuple[str, list]:
    """park() as (SQL, parameters), for a caller on an async connection (the relay)."""
    rows = list({f.position: f for f in failures}.values())
    return _PARK, [follower, [f.position for f in rows], [f.originator_id for f in rows],
                   [f.originator_version for f in rows], [f.topic for f in rows], [f.error for f in rows]]


def unpark(cur: Cursor, follower: str, positions: Iterable[int]) -> None:
    positions = list(positions)
    if positions:
        cur.execute("DELETE FROM streams.parked_events WHERE follower = %s AND log_position = ANY(%s)",
                    [follower, positions])


UNPARK_UNLESS_PARKED_AGAIN = ("DELETE FROM streams.parked_events WHERE follower = %s AND log_position = ANY(%s)"
                              " AND last_tried_at < now()")


def unpark_unless_parked_again(cur: Cursor, follower: str, positions: Iterable[int]) -> None:
    """unpark() those of `positions` that this transaction did not park again (a retry that
    failed once more: park() stamped it with this transaction's now())."""
    cur.execute(UNPARK_UNLESS_PARKED_AGAIN, [follower, list(positions)])


def parked_positions(cur: Cursor, follower: str) -> list[int]:
    rows = cur.execute("SELECT log_position FROM streams.parked_events WHERE follower = %s ORDER BY log_position",
                       [follower]).fetchall()
    return [row[0] for row in rows]


def followers_with_parked(cur: Cursor) -> list[str]:
    return [row[0] for row in cur.execute("SELECT DISTINCT follower FROM streams.parked_events ORDER BY 1")]


def rename(cur: Cursor, old: str, new: str) -> None:
    """A rebuild's parked events become the live projection's (its own are replaced)."""
    cur.execute("DELETE FROM streams.parked_events WHERE follower = %s", [new])
    cur.execute("UPDATE streams.parked_events SET follower = %s WHERE follower = %s", [new, old])


def stored_events(cur: Cursor, positions: Sequence[int]) -> list[tuple[int, StoredEvent]]:
    rows = cur.execute("SELECT notification_id, originator_id, originator_version, topic, state FROM pricing_events"
                       " WHERE notification_id = ANY(%s) ORDER BY notification_id", [list(positions)],
                       binary=True).fetchall()
    return [(position, StoredEvent(oid, version, topic, state)) for position, oid, version, topic, state in rows]


def decode_each(stored: Iterable[tuple[int, StoredEvent]], decode) -> tuple[list[Positioned], list[Failure]]:
    """Decode event by event: the ones that decode, and a Failure for each that does not."""
    events, failures = [], []
    for position, s in stored:
        try:
            events.append((position, decode(s)))
        except Exception as error:  # noqa: BLE001 - an event that does not decode is parked
            if is_transient(error):
                raise
            failures.append(Failure.undecodable(position, s, error))
    return events, failures


def retry(conn: psycopg.Connection, cur: Cursor, follower: str, projection, decode, tables) -> tuple[int, int]:
    """Apply `follower`'s parked events to `projection` again, in the caller's transaction (which
    holds the follower's position): returns (applied now, still parked)."""
    positions = parked_positions(cur, follower)
    if not positions:
        return 0, 0
    events, failures = decode_each(stored_events(cur, positions), decode)
    failed = isolate(events, lambda chunk: in_savepoint(conn, lambda: projection.apply(cur, chunk, tables)))
    failures += [Failure.of(pe, error) for pe, error in failed]
    park(cur, follower, failures)
    unpark(cur, follower, set(positions) - {f.position for f in failures})
    return len(positions) - len(failures), len(failures)
