"""The event store: the eventsourcing library's PostgreSQL recorder, extended so that the rows a
command owns besides its events (idempotency record, uniqueness reservations, audit index) commit
in the same transaction as the events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import (EventStore, IntegrityError, InterfaceError, Notification, OperationalError,
                                       Recording, StoredEvent)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.types.json import Jsonb


SMALL_SAVE = 200  # events; larger saves stream with COPY

# Readers' lookup rows (migrations/0510), committed with the events that make them true.
LIST_SHOP = "INSERT INTO shop_directory (shop_id, tenant_id, currency) VALUES (%s, %s, %s)"
LIST_RULE = "INSERT INTO shop_rules (shop_id, rule_id) VALUES (%s, %s)"
LIST_LISTINGS = "INSERT INTO shop_listings (shop_id, listing_id) SELECT %s, unnest(%s::uuid[])"


RECORD_EVENTS = ("SELECT * FROM record_events(%(ids)s::uuid[], %(versions)s::bigint[], %(topics)s::text[],"
                 " %(states)s::bytea[], %(shops)s::uuid[], %(actors)s::text[], %(occurred)s::timestamptz[],"
                 " %(recorded)s::timestamptz[], %(lock_timeout)s)")
# One event (a price change) sends scalars: psycopg dumps one-element lists far slower (docs/performance.md).
RECORD_ONE_EVENT = ("SELECT * FROM record_events(ARRAY[%s::uuid], ARRAY[%s::bigint], ARRAY[%s::text], ARRAY[%s::bytea],"
                    " ARRAY[%s::uuid], ARRAY[%s::text], ARRAY[%s::timestamptz], ARRAY[%s::timestamptz], %s)")


def record_events_call(stored_events: Sequence, index: Sequence | None, lock_timeout: int) -> tuple[str, Any]:
    """(query, parameters) of the record_events() call that stores these events and their index rows."""
    index = index or []
    assert not index or len(index) == len(stored_events), "one index row per stored event"
    if len(stored_events) == 1 and index:
        (e,), (r,) = stored_events, index
        return RECORD_ONE_EVENT, [e.originator_id, e.originator_version, e.topic, e.state,
                                  r.shop_id, r.actor_id, r.occurred_at, r.recorded_at, lock_timeout]
    return RECORD_EVENTS, {
        "ids": [e.originator_id for e in stored_events],
        "versions": [e.originator_version for e in stored_events],
        "topics": [e.topic for e in stored_events],
        "states": [e.state for e in stored_events],
        "shops": [r.shop_id for r in index],
        "actors": [r.actor_id for r in index],
        "occurred": [r.occurred_at for r in index],
        "recorded": [r.recorded_at for r in index],
        "lock_timeout": lock_timeout,
    }


@dataclass(frozen=True)
class IdempotencyRecord:
    scope: str
    key: str
    request_hash: str
    created: bool
    response: dict


@dataclass(frozen=True)
class Reservation:
    shop_id: Any
    kind: str
    key: str
    aggregate_id: Any


class IndexRow(NamedTuple):  # a tuple: one is made per stored event, 10,000 per batch
    shop_id: str | None
    actor_id: str | None
    occurred_at: Any
    recorded_at: Any


class PricingRecorder(PostgresApplicationRecorder):
    """Inserts events inside the library's locking protocol: a command's few events by one call
    of record_events() in a single round trip, a batch's by binary COPY.

    As in the library: one transaction takes an EXCLUSIVE lock on the events table before
    inserting, so notification ids are issued and committed in the same order and readers of the
    global log never pass over a gap that fills later. COPY (instead of INSERT ... unnest) is what
    lets one command carry 10,000 events at more than 20k events/s.
    """

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence, **kwargs: Any) -> Sequence[int] | None:
        if len(stored_events) > SMALL_SAVE or kwargs.get("unchanged"):
            return self._insert_with_copy(stored_events, **kwargs)
        return self._insert_pipelined(stored_events, **kwargs)

    def _insert_with_copy(self, stored_events: Sequence, **kwargs: Any) -> list[int]:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_side_rows(curs, kwargs)
            if not stored_events:
                return []
            self._lock_table(curs)
            self._refuse_if_moved(curs, kwargs.get("unchanged") or ())
            self._notify_channel(curs)
            last = curs.execute("SELECT coalesce(max(notification_id), 0) AS last FROM pricing_events").fetchone()["last"]
            with curs.copy("COPY pricing_events (originator_id, originator_version, topic, state)"
                           " FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["uuid", "int8", "text", "bytea"])
                for e in stored_events:
                    copy.write_row((e.originator_id, e.originator_version, e.topic, e.state))
            ids = self._ids_after(curs, last, len(stored_events))
            index: list[IndexRow] = kwargs.get("index") or []
            if index:
                with curs.copy("COPY event_index (notification_id, shop_id, actor_id, occurred_at, recorded_at)"
                               " FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "uuid", "text", "timestamptz", "timestamptz"])
                    shop_ids: dict[str, UUID] = {}  # a batch has one shop: parse it once, not per row
                    for notification_id, row in zip(ids, index, strict=True):
                        shop = row.shop_id and (shop_ids.get(row.shop_id) or shop_ids.setdefault(row.shop_id, UUID(row.shop_id)))
                        copy.write_row((notification_id, shop, row.actor_id, row.occurred_at, row.recorded_at))
            return ids

    @staticmethod
    def _ids_after(curs, last: int, count: int) -> list[int]:
        """The ids our COPY was given. We hold the lock, so the rows above `last` are ours, issued
        in COPY order: when the greatest is `last + count`, they are that whole range (usual:
        nothing else drew from the sequence). One index probe, cheaper than counting or fetching them."""
        top = curs.execute("SELECT max(notification_id) AS top FROM pricing_events").fetchone()["top"]
        if top - last == count:
            return list(range(last + 1, top + 1))
        ids = [r["notification_id"] for r in curs.execute(
            "SELECT notification_id FROM pricing_events WHERE notification_id > %s ORDER BY notification_id", [last])]
        assert len(ids) == count, "the events table moved while we held its lock"
        return ids

    def _insert_pipelined(self, stored_events: Sequence, **kwargs: Any) -> list[int]:
        """A command's few events in one round trip: its side rows and record_events()
        (migrations/0008: lock, notify, insert events and index rows) written as one pipeline whose
        single Sync ends the implicit transaction they share. The table lock is then held only
        while the server works and flushes the commit, never across a client round trip or this
        process's wait for its GIL. If a statement fails, the server skips the rest and the whole
        transaction rolls back.

        Every statement here is prepared from its first run (`prepare=True`). By default psycopg
        prepares on the sixth, and if the server skipped that run's Parse (an earlier statement
        failed), psycopg still counted the statement as prepared: every later save on the
        connection failed with 'prepared statement "_pg3_N" does not exist'. A first-run prepare
        is one psycopg checks, and forgets when the server skipped it."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs, conn.cursor() as inserted:
            with conn.pipeline():
                self._insert_side_rows(curs, kwargs)
                if stored_events:
                    inserted.execute(*record_events_call(stored_events, kwargs.get("index"), self.datastore.lock_timeout),
                                     prepare=True)
            if not stored_events:
                return []
            ids = {(r["aggregate_id"], r["aggregate_version"]): r["log_position"] for r in inserted.fetchall()}
        return [ids[e.originator_id, e.originator_version] for e in stored_events]

    @staticmethod
    def _insert_side_rows(curs, kwargs: dict) -> None:
        """The command's rows beside its events; prepared from their first run (see _insert_pipelined)."""
        record: IdempotencyRecord | None = kwargs.get("idempotency")
        if record is not None:
            curs.execute(
                "INSERT INTO command_log (scope, idempotency_key, request_hash, created, response)"
                " VALUES (%s, %s, %s, %s, %s)",
                [record.scope, record.key, record.request_hash, record.created,
                 Jsonb(record.response, dumps=_dumps)], prepare=True,
            )
        # Rows outside the log that must agree with it (identity's credential and lookup tables).
        for sql, params in kwargs.get("statements") or ():
            curs.execute(sql, params, prepare=True)
        reservations: list[Reservation] = kwargs.get("reservations") or []
        if reservations:
            # Binary arrays (%b): psycopg quotes each element of a text-format array by regex (docs/performance.md).
            curs.execute(
                "INSERT INTO reservations (shop_id, kind, key, aggregate_id)"
                " SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::uuid[])",
                [[r.shop_id for r in reservations], [r.kind for r in reservations],
                 [r.key for r in reservations], [r.aggregate_id for r in reservations]], prepare=True,
            )

    @staticmethod
    def _refuse_if_moved(curs, unchanged: Sequence[tuple[Any, int]]) -> None:
        """Aggregates a decision read but does not change (a shop's stop switch, a rule) must still
        be at the versions it read. Checked under the table lock, so nothing commits in between:
        an automated change can never commit after the stop that should have refused it."""
        if not unchanged:
            return
        rows = curs.execute(
            "SELECT originator_id, max(originator_version) AS version FROM pricing_events"
            " WHERE originator_id = ANY(%s) GROUP BY originator_id", [[a for a, _ in unchanged]]).fetchall()
        current = {r["originator_id"]: r["version"] for r in rows}
        for aggregate_id, version in unchanged:
            if current.get(aggregate_id, 0) != version:
                raise IntegrityError(f"aggregate {aggregate_id} moved on from version {version}")

    def find_command(self, scope: str, key: str) -> tuple[str, bool, dict] | None:
        with self.datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT request_hash, created, response FROM command_log WHERE scope = %s AND idempotency_key = %s",
                [scope, key],
            ).fetchone()
        return (row["request_hash"], row["created"], row["response"]) if row else None

    def reserved(self, shop_id, kind: str, keys: list[str]) -> dict[str, Any]:
        """Which of these keys are already reserved in the shop, and by which aggregate."""
        # A join on unnest, not `key = ANY(%s)`: once psycopg prepares the statement (5th call),
        # PostgreSQL may pick a generic plan that tests every row against the whole array; on a
        # table without statistics (autovacuum off, bulk import) that took ~100 s per 10k keys.
        with self.datastore.get_connection() as conn:
            rows = conn.execute(
                "SELECT r.key, r.aggregate_id FROM unnest(%b::text[]) AS wanted(key)"
                " JOIN reservations r ON r.shop_id = %s AND r.kind = %s AND r.key = wanted.key",
                [keys, shop_id, kind],
            ).fetchall()
        return {r["key"]: r["aggregate_id"] for r in rows}

    def reserved_all(self, shop_id, kind: str) -> dict[str, Any]:
        with self.datastore.get_connection() as conn:
            rows = conn.execute("SELECT key, aggregate_id FROM reservations WHERE shop_id = %s AND kind = %s",
                                [shop_id, kind]).fetchall()
        return {r["key"]: r["aggregate_id"] for r in rows}


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


class Recordings(Sequence):
    """What a save recorded, as the library's Recording objects, made only when read: most
    listeners look at the domain events alone, and a batch has 10,000 of them."""

    def __init__(self, domain_events: Sequence, stored_events: Sequence[StoredEvent], ids: Sequence[int]):
        self.domain_events, self._stored, self._ids = domain_events, stored_events, ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        s = self._stored[i]
        return Recording(self.domain_events[i], Notification(
            originator_id=s.originator_id, originator_version=s.originator_version, topic=s.topic, state=s.state,
            id=self._ids[i]))


class PricingEventStore(EventStore):
    """The library's event store, answering a save with Recordings made when read."""

    def put(self, domain_events: Sequence, **kwargs: Any) -> Recordings:
        stored_events = list(map(self.mapper.to_stored_event, domain_events))
        ids = self.recorder.insert_events(stored_events, **kwargs) or []
        assert not ids or len(ids) == len(stored_events), "one notification id per stored event"
        return Recordings(domain_events if ids else [], stored_events, ids)
