"""Reading history for auditors: one aggregate's events, the global log in commit order, exports
of any range, and the hash chain that proves the log was not edited.

Positions are notification ids. The recorder inserts under an exclusive table lock, so positions
are committed in increasing order: paging with "after position N" never skips an event that
commits later (a later commit always gets a higher position) and never returns one twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Callable, Iterator
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg.rows import tuple_row

from commands.context import CommandContext
from commands.errors import NotFound

GENESIS = bytes(32)  # the hash the first event chains from (see migrations/0003_hash_chain.sql)
VERIFY_PAGE = 5000  # rows per round trip of the verifier's server-side cursors
EXPORT_PAGE = 2000  # events per query of an export: memory stays flat whatever the range

# The event's own header, already given at the top level of a described event.
_HEADER_FIELDS = {"originator_id", "originator_version", "timestamp", "meta"}


# -- describing events ------------------------------------------------------------------------
def describe_event(domain_event, notification_id: int | None = None) -> dict:
    """A stored event as JSON-friendly data: the one conversion used by history, log and export.

    Who and why (`meta`) sits at the top next to the position; the event's own fields are under
    `data`, so that no field name can ever collide with the envelope.
    """
    fields = vars(domain_event)
    return {
        "position": notification_id,
        "aggregate_id": str(domain_event.originator_id),
        "version": domain_event.originator_version,
        "type": type(domain_event).__qualname__,
        "topic": get_topic(type(domain_event)),
        "recorded_at": domain_event.timestamp.isoformat(),
        "meta": _plain(fields.get("meta")),
        "data": {name: _plain(value) for name, value in fields.items() if name not in _HEADER_FIELDS},
    }


def _plain(value: Any) -> Any:
    # Money, EventMeta and Guardrails are dataclasses of plain values: one rule covers them all,
    # giving Money as {"amount": "12.50", "currency": "GBP"} (amounts stay exact decimal strings).
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# -- the hash chain, byte for byte as the database computes it --------------------------------
def event_bytes(notification_id: int, originator_id: UUID, originator_version: int, topic: str,
                state: bytes | None) -> bytes:
    """Python twin of event_bytes() in migrations/0003_hash_chain.sql: fixed-width fields first,
    then the topic length-prefixed, then the state."""
    topic_bytes = topic.encode("utf-8")
    return (struct.pack(">q", notification_id) + originator_id.bytes
            + struct.pack(">qi", originator_version, len(topic_bytes)) + topic_bytes + (state or b""))


def chain_hash(previous: bytes, notification_id: int, originator_id: UUID, originator_version: int,
               topic: str, state: bytes | None) -> bytes:
    return hashlib.sha256(previous + event_bytes(notification_id, originator_id, originator_version,
                                                 topic, state)).digest()


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int                      # events whose hash was recomputed and matched
    first_bad_position: int | None = None
    problem: str | None = None
    head: str | None = None           # hex hash at last_position: publish it to anchor the tail
    last_position: int | None = None  # the last position verified (or reached)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


Progress = Callable[[int, int, int], None]  # (checked, position, last position of the log)


# -- filters of the global log ----------------------------------------------------------------
@dataclass(frozen=True)
class LogFilter:
    types: tuple[str, ...] = ()       # event types as in describe_event: "Listing.PriceChanged"
    actor_id: str | None = None
    shop_id: UUID | None = None
    since: datetime | None = None     # recorded time, inclusive
    until: datetime | None = None     # recorded time, exclusive

    def conditions(self) -> tuple[str, dict]:
        """SQL conditions on event_index `i` and pricing_events `e`, with their parameters."""
        sql, params = [], {}
        if self.types:
            sql.append("split_part(e.topic, ':', 2) = ANY(%(types)s)")
            params["types"] = list(self.types)
        if self.actor_id is not None:
            sql.append("i.actor_id = %(actor_id)s")
            params["actor_id"] = self.actor_id
        if self.since is not None:
            sql.append("i.recorded_at >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            sql.append("i.recorded_at < %(until)s")
            params["until"] = self.until
        return "".join(f" AND {c}" for c in sql), params


# One owner's events (a shop's, or an account's) after a position, in log order, at most `limit`.
_OWNER_EVENTS = """
CROSS JOIN LATERAL (
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
    FROM event_index i JOIN pricing_events e ON e.notification_id = i.notification_id
    WHERE {owner} AND i.notification_id > %(after)s AND i.notification_id <= %(to)s{conditions}
    ORDER BY i.notification_id
    LIMIT %(limit)s
) p
"""

# The tenant's shops are read in the same statement as their events: one snapshot, so a shop
# opened while someone pages cannot have its first events skipped. Each shop's events come from
# the (shop_id, notification_id) index in order; the outer ORDER BY merges at most `limit` each.
_LOG_PAGE = """
SELECT p.notification_id, p.originator_id, p.originator_version, p.topic, p.state
FROM reservations r """ + _OWNER_EVENTS.replace("{owner}", "i.shop_id = r.shop_id") + """
WHERE r.kind = 'tenant' AND r.key = %(tenant)s{shops}{accounts}
ORDER BY notification_id
LIMIT %(limit)s
"""

# Account events (logins, lockouts, grants...) belong to no shop: tenant-wide readers see those
# of their tenant's accounts too.
_ACCOUNT_EVENTS = """
UNION ALL
SELECT p.notification_id, p.originator_id, p.originator_version, p.topic, p.state
FROM accounts a """ + _OWNER_EVENTS.replace("{owner}", "e.originator_id = a.account_id") + """
WHERE a.tenant_id = %(tenant)s
"""

NO_END = 2**63 - 1


class AuditLog:
    """Mixed into PricingEngine: reading history, never writing it."""

    # -- one aggregate --------------------------------------------------------------------
    def aggregate_history(self, ctx: CommandContext, aggregate_id: UUID, after_version: int = 0,
                          limit: int = 100) -> dict:
        self._check_aggregate_owner(ctx, aggregate_id)
        rows = self._query(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM pricing_events"
            " WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version LIMIT %s",
            [aggregate_id, after_version, limit + 1])
        events = [self._describe_row(row) for row in rows[:limit]]
        return {"aggregate_id": str(aggregate_id), "events": events,
                "next_after_version": events[-1]["version"] if events else after_version,
                "more": len(rows) > limit}

    def _check_aggregate_owner(self, ctx: CommandContext, aggregate_id: UUID) -> None:
        """Every event names its shop; the caller's tenant must own the aggregate's shop."""
        rows = self._query(
            "SELECT i.shop_id FROM pricing_events e JOIN event_index i ON i.notification_id = e.notification_id"
            " WHERE e.originator_id = %s ORDER BY e.originator_version LIMIT 1", [aggregate_id])
        if not rows:
            raise NotFound("aggregate not found")
        if rows[0][0] is None:  # no shop: an account's history, for tenant-wide readers of its tenant
            tenant = self._query("SELECT tenant_id FROM accounts WHERE account_id = %s", [aggregate_id])
            if not tenant or tenant[0][0] != ctx.tenant_id or ctx.shops is not None:
                raise NotFound("aggregate not found")
            return
        try:
            self.shop_facts(ctx, rows[0][0])
        except NotFound:
            raise NotFound("aggregate not found") from None  # the same answer as for unknown ids

    # -- the global log -------------------------------------------------------------------
    def audit_events(self, ctx: CommandContext, after: int = 0, limit: int = 100,
                     filters: LogFilter = LogFilter(), to: int | None = None) -> dict:
        """A page of the caller's tenant's events in commit order, after position `after`."""
        self._check_shop_filter(ctx, filters)
        rows = self._log_rows(ctx, after, limit + 1, filters, to)
        events = [self._describe_row(row) for row in rows[:limit]]
        return {"events": events, "next_after": events[-1]["position"] if events else after,
                "more": len(rows) > limit}

    def export_events(self, ctx: CommandContext, start: int = 1, stop: int | None = None,
                      filters: LogFilter = LogFilter()) -> tuple[int, Iterator[dict]]:
        """(last position, events from `start` to it inclusive), read lazily page by page.

        Without `stop` the export ends at the log's head as of now, so it is a fixed range
        rather than chasing writers. Tenancy is checked here, before the first event is read,
        so a refused export fails before any response starts streaming.
        """
        self._check_shop_filter(ctx, filters)
        if stop is None:
            stop = self.recorder.max_notification_id() or 0

        def pages() -> Iterator[dict]:
            after = start - 1
            while after < stop:
                rows = self._log_rows(ctx, after, EXPORT_PAGE, filters, stop)
                for row in rows:
                    yield self._describe_row(row)
                if len(rows) < EXPORT_PAGE:
                    return
                after = rows[-1][0]

        return stop, pages()

    def _check_shop_filter(self, ctx: CommandContext, filters: LogFilter) -> None:
        """Someone else's shop is a 404 naming the filter, not an empty page."""
        if filters.shop_id is not None:
            try:
                self.shop_facts(ctx, filters.shop_id)
            except NotFound:
                raise NotFound("shop not found", field="shop_id") from None

    def _log_rows(self, ctx: CommandContext, after: int, limit: int, filters: LogFilter, to: int | None) -> list[tuple]:
        conditions, params = filters.conditions()
        shops = ""
        if filters.shop_id is not None:
            shops, params["shop"] = " AND r.shop_id = %(shop)s", filters.shop_id
        if ctx.shops is not None:  # a caller granted some shops only sees those
            shops, params["visible"] = shops + " AND r.shop_id = ANY(%(visible)s::uuid[])", sorted(ctx.shops)
        accounts = ""
        if filters.shop_id is None and ctx.shops is None:
            accounts = _ACCOUNT_EVENTS.format(conditions=conditions)
        sql = _LOG_PAGE.format(conditions=conditions, shops=shops, accounts=accounts)
        return self._query(sql, {**params, "after": after, "to": NO_END if to is None else to,
                                 "limit": limit, "tenant": ctx.tenant_id})

    def _describe_row(self, row: tuple) -> dict:
        notification_id, originator_id, version, topic, state = row
        stored = StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=bytes(state))
        return describe_event(self.mapper.to_domain_event(stored), notification_id)

    def _query(self, sql: str, params) -> list[tuple]:
        with self.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            return curs.execute(sql, params).fetchall()

    # -- tamper evidence ------------------------------------------------------------------
    def verify_chain(self, from_position: int | None = None, progress: Progress | None = None) -> VerifyReport:
        """Recompute the hash chain and compare it with event_chain, streaming both tables.

        Detects an altered event (hash mismatch), a removed event (chain row without event), an
        event added behind the trigger's back (event without chain row) and reordered or swapped
        content (positions are hashed, so a moved event no longer matches). Starting from the
        middle trusts the stored hash just before `from_position`. Removing the newest events
        together with their chain rows leaves a shorter valid chain: compare `head` with a head
        published earlier to catch that.
        """
        start = from_position or 1
        with self.recorder.datastore.get_connection() as conn, conn.transaction():
            # One snapshot for both cursors: a writer committing between them is not tampering.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")  # long logs take a while
            head, last = self._chain_start(conn, start)
            with _server_cursor(conn, "verify_events") as events, _server_cursor(conn, "verify_chain") as chain:
                events.execute("SELECT notification_id, originator_id, originator_version, topic, state"
                               " FROM pricing_events WHERE notification_id >= %s ORDER BY notification_id", [start])
                chain.execute("SELECT notification_id, hash FROM event_chain"
                              " WHERE notification_id >= %s ORDER BY notification_id", [start])
                return _compare(iter(events), iter(chain), head, last, progress)

    @staticmethod
    def _chain_start(conn, start: int) -> tuple[bytes, int]:
        with conn.cursor(row_factory=tuple_row) as curs:
            previous = curs.execute("SELECT hash FROM event_chain WHERE notification_id < %s"
                                    " ORDER BY notification_id DESC LIMIT 1", [start]).fetchone()
            last = curs.execute("SELECT greatest((SELECT max(notification_id) FROM pricing_events),"
                                " (SELECT max(notification_id) FROM event_chain))").fetchone()[0]
        return (bytes(previous[0]) if previous else GENESIS), (last or 0)


def _server_cursor(conn, name: str):
    """Rows stream from the server a page at a time: memory stays flat however long the log."""
    curs = conn.cursor(name=name, row_factory=tuple_row, binary=True)  # bytea without hex decoding
    curs.itersize = VERIFY_PAGE
    return curs


def _compare(events: Iterator[tuple], chain: Iterator[tuple], head: bytes, last: int,
             progress: Progress | None) -> VerifyReport:
    """Walk both ordered streams side by side; stop at the first position that does not hold."""
    checked, position = 0, None
    event, link = next(events, None), next(chain, None)

    def bad(at: int, problem: str) -> VerifyReport:
        return VerifyReport(False, checked, at, problem, head.hex(), position)

    while event is not None or link is not None:
        if link is None or (event is not None and event[0] < link[0]):
            return bad(event[0], "event has no entry in the hash chain (inserted behind the chain's back)")
        if event is None or link[0] < event[0]:
            return bad(link[0], "the hash chain has an entry but the event is missing (removed)")
        notification_id, originator_id, version, topic, state = event
        if topic is None:
            return bad(notification_id, "event has no topic (altered)")
        expected = chain_hash(head, notification_id, originator_id, version, topic, state and bytes(state))
        if expected != bytes(link[1]):
            return bad(notification_id, "event does not match its hash (altered, or an earlier event "
                                        "was removed with its chain entry)")
        head, position, checked = expected, notification_id, checked + 1
        if progress is not None and checked % VERIFY_PAGE == 0:
            progress(checked, position, last)
        event, link = next(events, None), next(chain, None)
    if progress is not None:
        progress(checked, position or 0, last)
    return VerifyReport(True, checked, None, None, head.hex(), position)
