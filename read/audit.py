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
from typing import Callable, Iterator
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg.rows import tuple_row

import codec
from domain.errors import NotFound
from domain.account import Grants
from domain.personal import KeyRing, Unwrap
from codec.plain import describe_event
from read.pool import ReadPool
from read.shops import ShopDirectory, Viewer

AUDIT_READ = "audit:read"
SECURITY_READ = "security:read"

GENESIS = bytes(32)  # the head before the first event (migrations/0003 and 0007)
VERIFY_PAGE = 5000  # rows per round trip of the verifier's server-side cursors
EXPORT_PAGE = 2000  # events per query of an export: memory stays flat whatever the range

# -- the hash chain, byte for byte as the database computes it --------------------------------
# Two formats, one chain. Up to migrations/0007 each event got a row of event_chain with
# hash = sha256(previous hash || event_bytes). Since then each inserting statement gets one row
# of event_chain_links: the digest sha256(event_bytes) of each of its events, concatenated in
# position order, and hash = sha256(previous head || digests). The first link chains from the
# last event_chain row, so a database keeps its old rows and carries on with links.
def event_bytes(notification_id: int, originator_id: UUID, originator_version: int, topic: str,
                state: bytes | None) -> bytes:
    """Python twin of event_bytes() in migrations/0003_hash_chain.sql: fixed-width fields first,
    then the topic length-prefixed, then the state."""
    topic_bytes = topic.encode("utf-8")
    return (struct.pack(">q", notification_id) + originator_id.bytes
            + struct.pack(">qi", originator_version, len(topic_bytes)) + topic_bytes + (state or b""))


def chain_hash(previous: bytes, notification_id: int, originator_id: UUID, originator_version: int,
               topic: str, state: bytes | None) -> bytes:
    """One event's hash in event_chain (the per-event format of migrations/0003)."""
    return hashlib.sha256(previous + event_bytes(notification_id, originator_id, originator_version,
                                                 topic, state)).digest()


def event_digest(notification_id: int, originator_id: UUID, originator_version: int, topic: str,
                 state: bytes | None) -> bytes:
    """One event's digest in a link of event_chain_links (migrations/0007)."""
    return hashlib.sha256(event_bytes(notification_id, originator_id, originator_version, topic, state)).digest()


def link_hash(previous: bytes, digests: bytes) -> bytes:
    """A link's hash: the previous head followed by its events' digests, in position order."""
    return hashlib.sha256(previous + digests).digest()


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int                      # events whose hash (or digest in a link) was recomputed and matched
    first_bad_position: int | None = None
    problem: str | None = None
    # The hash covering the log up to last_position, as the chain stores it: the last verified
    # event's hash in event_chain, or the last verified link's hash. Publish it to anchor the
    # tail. Both move past whole chain entries only: a link counts once all its events matched.
    head: str | None = None
    last_position: int | None = None

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
FROM shop_directory r """ + _OWNER_EVENTS.replace("{owner}", "i.shop_id = r.shop_id") + """
WHERE r.tenant_id = %(tenant)s{shops}{accounts}
ORDER BY notification_id
LIMIT %(limit)s
"""

# Account events (logins, lockouts, grants...) belong to no shop: readers with security:read over
# the whole tenant (AuditReader.accounts) see those of their tenant's accounts too.
_ACCOUNT_EVENTS = """
UNION ALL
SELECT p.notification_id, p.originator_id, p.originator_version, p.topic, p.state
FROM accounts a """ + _OWNER_EVENTS.replace("{owner}", "e.originator_id = a.account_id") + """
WHERE a.tenant_id = %(tenant)s
"""

NO_END = 2**63 - 1


@dataclass(frozen=True)
class AuditReader:
    """Who reads history, and what of it: the one rule every route returning events goes through.

    Shops' events: the shops where the caller holds audit:read (seeing a shop in another role does
    not open its history). Account events (logins, failures, lockouts, roles, keys) tell who works
    when and from where: only for security:read over the whole tenant, as in /security/...
    """

    ctx: Viewer  # shops narrowed to those the caller may audit
    accounts: bool       # may read the tenant's account events

    @classmethod
    def of(cls, ctx: Viewer, grants: Grants) -> AuditReader:
        audited = [a for a in grants.accesses if AUDIT_READ in a.permissions]
        shops = None if any(a.shops is None for a in audited) else frozenset(s for a in audited for s in a.shops)
        return cls(dataclasses.replace(ctx, shops=shops), reads_account_events(grants))


def reads_account_events(grants: Grants) -> bool:
    return grants.allows(SECURITY_READ, tenant_wide=True)


class AuditHistory:
    """Reading history, never writing it: on the read side's own pool, tenancy by its shop directory.
    Personal data sealed in events is shown opened, or as erased (domain/personal.py), once the
    API gave what unwraps subjects' keys (use_unwrap); before that, as sealed."""

    def __init__(self, pool: ReadPool, shops: ShopDirectory):
        self.pool, self.shops = pool, shops
        self._unwrap: Unwrap | None = None
        self.personal = KeyRing(self._wrapped_keys, lambda: self._unwrap)

    def use_unwrap(self, unwrap: Unwrap | None) -> None:
        """The write side's Vault.unwrap (the server key; readers never build the write side)."""
        self._unwrap = unwrap

    def _wrapped_keys(self, subject_ids: list[UUID]) -> dict[UUID, bytes]:
        rows = self.pool.rows("SELECT subject_id, wrapped_key FROM subject_keys WHERE subject_id = ANY(%s)", [subject_ids])
        return {subject_id: bytes(wrapped) for subject_id, wrapped in rows}

    # -- one aggregate --------------------------------------------------------------------
    def aggregate_history(self, reader: AuditReader, aggregate_id: UUID, after_version: int = 0,
                          limit: int = 100) -> dict:
        self.check_aggregate_owner(reader, aggregate_id)
        rows = self.pool.rows(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM pricing_events"
            " WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version LIMIT %s",
            [aggregate_id, after_version, limit + 1])
        events = self._described(rows[:limit])
        return {"aggregate_id": str(aggregate_id), "events": events,
                "next_after_version": events[-1]["version"] if events else after_version,
                "more": len(rows) > limit}

    def check_aggregate_owner(self, reader: AuditReader, aggregate_id: UUID) -> None:
        """Every event names its shop; the caller's tenant must own the aggregate's shop. An
        account (no shop) is readable only with `reader.accounts`; else it looks unknown."""
        ctx = reader.ctx
        rows = self.pool.rows(
            "SELECT i.shop_id FROM pricing_events e JOIN event_index i ON i.notification_id = e.notification_id"
            " WHERE e.originator_id = %s ORDER BY e.originator_version LIMIT 1", [aggregate_id])
        if not rows:
            raise NotFound("aggregate not found")
        if rows[0][0] is None:  # no shop: an account's history, for tenant-wide readers of its tenant
            tenant = self.pool.rows("SELECT tenant_id FROM accounts WHERE account_id = %s", [aggregate_id])
            if not tenant or tenant[0][0] != ctx.tenant_id or not reader.accounts or ctx.shops is not None:
                raise NotFound("aggregate not found")
            return
        try:
            self.shops.facts(ctx, rows[0][0])
        except NotFound:
            raise NotFound("aggregate not found") from None  # the same answer as for unknown ids

    # -- the global log -------------------------------------------------------------------
    def audit_events(self, reader: AuditReader, after: int = 0, limit: int = 100,
                     filters: LogFilter = LogFilter(), to: int | None = None) -> dict:
        """A page of the caller's tenant's events in commit order, after position `after`."""
        self._check_shop_filter(reader.ctx, filters)
        rows = self._log_rows(reader, after, limit + 1, filters, to)
        events = self._described(rows[:limit])
        return {"events": events, "next_after": events[-1]["position"] if events else after,
                "more": len(rows) > limit}

    def export_events(self, reader: AuditReader, start: int = 1, stop: int | None = None,
                      filters: LogFilter = LogFilter()) -> tuple[int, Iterator[dict]]:
        """(last position, events from `start` to it inclusive), read lazily page by page.

        Without `stop` the export ends at the log's head as of now, so it is a fixed range
        rather than chasing writers. Tenancy is checked here, before the first event is read,
        so a refused export fails before any response starts streaming.
        """
        self._check_shop_filter(reader.ctx, filters)
        if stop is None:
            stop = self.pool.rows("SELECT max(notification_id) FROM pricing_events")[0][0] or 0

        def pages() -> Iterator[dict]:
            after = start - 1
            while after < stop:
                rows = self._log_rows(reader, after, EXPORT_PAGE, filters, stop)
                yield from self._described(rows)
                if len(rows) < EXPORT_PAGE:
                    return
                after = rows[-1][0]

        return stop, pages()

    def _check_shop_filter(self, ctx: Viewer, filters: LogFilter) -> None:
        """Someone else's shop is a 404 naming the filter, not an empty page."""
        if filters.shop_id is not None:
            try:
                self.shops.facts(ctx, filters.shop_id)
            except NotFound:
                raise NotFound("shop not found", field="shop_id") from None

    def _log_rows(self, reader: AuditReader, after: int, limit: int, filters: LogFilter,
                  to: int | None) -> list[tuple]:
        ctx = reader.ctx
        conditions, params = filters.conditions()
        shops = ""
        if filters.shop_id is not None:
            shops, params["shop"] = " AND r.shop_id = %(shop)s", filters.shop_id
        if ctx.shops is not None:  # a caller granted some shops only sees those
            shops, params["visible"] = shops + " AND r.shop_id = ANY(%(visible)s::uuid[])", sorted(ctx.shops)
        accounts = ""
        if filters.shop_id is None and ctx.shops is None and reader.accounts:
            accounts = _ACCOUNT_EVENTS.format(conditions=conditions)
        sql = _LOG_PAGE.format(conditions=conditions, shops=shops, accounts=accounts)
        return self.pool.rows(sql, {**params, "after": after, "to": NO_END if to is None else to,
                                 "limit": limit, "tenant": ctx.tenant_id})

    def _described(self, rows: list[tuple]) -> list[dict]:
        """Rows as events are shown, personal data opened (one key query for the lot)."""
        return self.personal.reveal([self._describe_row(row) for row in rows])

    def _describe_row(self, row: tuple) -> dict:
        notification_id, originator_id, version, topic, state = row
        stored = StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=bytes(state))
        return describe_event(codec.to_domain_event(stored), notification_id)

    # -- tamper evidence ------------------------------------------------------------------
    def verify_for(self, reader: AuditReader, from_position: int | None = None) -> dict:
        """The chain check as a tenant sees it. The whole log is verified (one chain links every
        tenant's events), but how many events that took is a figure of every tenant's activity:
        a tenant is told how many of the events it may read were among them (`checked_own`); the
        whole-log count is the operator's (`etsypro audit verify`)."""
        report = self.verify_chain(from_position)
        answer = {k: v for k, v in report.as_dict().items() if k != "checked"}
        answer["checked_own"] = self._readable_count(reader, from_position or 1, report.last_position or 0)
        return answer

    def _readable_count(self, reader: AuditReader, first: int, last: int) -> int:
        """How many events at positions first..last the reader may read (the same rule as the log)."""
        if last < first:
            return 0
        ctx, params = reader.ctx, {"tenant": reader.ctx.tenant_id, "first": first, "last": last}
        visible = ""
        if ctx.shops is not None:
            visible, params["visible"] = " AND r.shop_id = ANY(%(visible)s::uuid[])", sorted(ctx.shops)
        sql = ("SELECT (SELECT count(*) FROM shop_directory r JOIN event_index i ON i.shop_id = r.shop_id"
               " WHERE r.tenant_id = %(tenant)s AND i.notification_id BETWEEN %(first)s AND %(last)s"
               + visible + ")")
        if ctx.shops is None and reader.accounts:
            sql += (" + (SELECT count(*) FROM accounts a JOIN pricing_events e ON e.originator_id = a.account_id"
                    " WHERE a.tenant_id = %(tenant)s AND e.notification_id BETWEEN %(first)s AND %(last)s)")
        return self.pool.rows(sql, params)[0][0]

    def verify_chain(self, from_position: int | None = None, progress: Progress | None = None) -> VerifyReport:
        """Recompute the hash chain and compare it with what is stored, streaming the events, the
        per-event rows of event_chain and the links of event_chain_links side by side.

        Detects an altered event (hash or digest mismatch), a removed event (the chain expects an
        event the log lacks), an event added behind the trigger's back (no chain entry covers it),
        reordered or swapped content (positions are hashed, so a moved event no longer matches),
        an altered or removed link (its hash does not follow from the previous head) and a link
        whose digests were rewritten along with its hash (the next link's hash then does not
        follow).

        Starting from the middle trusts the stored hash just before the start. A link is hashed
        whole, so when `from_position` falls inside one, verifying starts at that link's first
        event. Removing the newest events together with their chain entries leaves a shorter
        valid chain: compare `head` (the stored hash at the end of the verified range; for links,
        the last link's hash) with a head published earlier to catch that.
        """
        with self.pool.connection() as conn, conn.transaction():
            # One snapshot for all cursors: a writer committing between them is not tampering.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")  # long logs take a while
            start = _chain_start(conn, from_position or 1)
            with (_server_cursor(conn, "verify_events") as events, _server_cursor(conn, "verify_chain") as rows,
                  _server_cursor(conn, "verify_links") as links):
                events.execute("SELECT notification_id, originator_id, originator_version, topic, state"
                               " FROM pricing_events WHERE notification_id >= %s ORDER BY notification_id",
                               [start.position])
                rows.execute("SELECT notification_id, hash FROM event_chain WHERE notification_id >= %s"
                             " AND notification_id < %s ORDER BY notification_id", [start.position, start.links_begin])
                links.execute("SELECT first_id, last_id, digests, hash FROM event_chain_links"
                              " WHERE first_id >= %s ORDER BY first_id", [start.position])
                walk = _ChainWalk(iter(events), start.head, start.last, progress)
                return walk.run(iter(rows), _links(links))


@dataclass(frozen=True)
class _ChainStart:
    position: int     # where verifying starts
    head: bytes       # the stored hash just before it, trusted
    links_begin: int  # the first link's first position: event_chain rows from there on are no part of the chain
    last: int         # the log's last position, for progress


def _chain_start(conn, requested: int) -> _ChainStart:
    with conn.cursor(row_factory=tuple_row) as curs:
        def one(sql: str, *params) -> tuple | None:
            return curs.execute(sql, params).fetchone()

        around = one("SELECT first_id, last_id FROM event_chain_links WHERE first_id <= %s"
                     " ORDER BY first_id DESC LIMIT 1", requested)
        start = around[0] if around and around[1] >= requested else requested  # a link is checked whole
        before = (one("SELECT hash FROM event_chain_links WHERE first_id < %s ORDER BY first_id DESC LIMIT 1", start)
                  or one("SELECT hash FROM event_chain WHERE notification_id < %s"
                         " ORDER BY notification_id DESC LIMIT 1", start))
        links_begin, last = one(
            "SELECT (SELECT min(first_id) FROM event_chain_links), greatest("
            " (SELECT max(notification_id) FROM pricing_events), (SELECT max(notification_id) FROM event_chain),"
            " (SELECT last_id FROM event_chain_links ORDER BY first_id DESC LIMIT 1))")
    return _ChainStart(start, bytes(before[0]) if before else GENESIS, links_begin or NO_END, last or 0)


def _server_cursor(conn, name: str):
    """Rows stream from the server a page at a time: memory stays flat however long the log."""
    curs = conn.cursor(name=name, row_factory=tuple_row, binary=True)  # bytea without hex decoding
    curs.itersize = VERIFY_PAGE
    return curs


DIGEST_SIZE = 32  # sha256


@dataclass(frozen=True)
class _Link:
    """One row of event_chain_links: the events one statement inserted."""
    first_id: int
    last_id: int
    digests: bytes
    hash: bytes

    @property
    def size(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    @property
    def well_formed(self) -> bool:
        return bool(self.digests) and len(self.digests) % DIGEST_SIZE == 0 and self.first_id <= self.last_id

    def digest(self, k: int) -> bytes:
        return self.digests[k * DIGEST_SIZE:(k + 1) * DIGEST_SIZE]

    def position_of(self, k: int) -> int | None:
        """Where the k-th digest's event sits: known at both ends, and everywhere when the ids are
        consecutive (a statement's are, unless something drew from the id sequence meanwhile)."""
        if k == 0:
            return self.first_id
        if k == self.size - 1:
            return self.last_id
        if self.last_id - self.first_id + 1 == self.size:
            return self.first_id + k
        return None


def _links(curs) -> Iterator[_Link]:
    """The links, each fetch about VERIFY_PAGE digests: a link holds 32 bytes per event, for one
    event (a price change) up to 10,000 (a batch), so a fixed number of links per fetch would not
    keep memory flat."""
    size = 1
    while rows := curs.fetchmany(size):
        page = [_Link(first, last, bytes(digests), bytes(hash_)) for first, last, digests, hash_ in rows]
        yield from page
        size = max(1, VERIFY_PAGE * len(page) // max(1, sum(link.size for link in page)))


NO_ENTRY = "event has no entry in the hash chain (inserted behind the chain's back)"
MISSING = "the hash chain has an entry but the event is missing (removed)"
ALTERED_IN_LINK = "event does not match its digest in the link (altered)"
UNPLACED_IN_LINK = ("event does not match the link's next digest (altered, slipped into a gap between the"
                    " link's ids, or an event of the link before it removed)")


class _ChainWalk:
    """Walks the events in position order against the chain's entries (event_chain rows, then
    links) and stops at the first position that does not hold. `head` and `position` move past
    whole entries only, so a report's head is always a hash the chain stores."""

    def __init__(self, events: Iterator[tuple], head: bytes, last: int, progress: Progress | None):
        self._events, self._last, self._progress = events, last, progress
        self.event = next(events, None)
        self.head, self.position, self.checked = head, None, 0

    def run(self, rows: Iterator[tuple], links: Iterator[_Link]) -> VerifyReport:
        for position, stored in rows:
            if (bad := self.chain_row(position, bytes(stored))) is not None:
                return bad
        for link in links:
            if (bad := self.link(link)) is not None:
                return bad
        if self.event is not None:
            return self._bad(self.event[0], NO_ENTRY)
        if self._progress is not None:
            self._progress(self.checked, self.position or 0, self._last)
        return VerifyReport(True, self.checked, None, None, self.head.hex(), self.position)

    def chain_row(self, position: int, stored: bytes) -> VerifyReport | None:
        """Per-event format: the event at `position`, chained from head, hashes to `stored`."""
        if self.event is not None and self.event[0] < position:
            return self._bad(self.event[0], NO_ENTRY)
        if self.event is None or self.event[0] > position:
            return self._bad(position, MISSING)
        if self.event[3] is None or chain_hash(self.head, *self._fields()) != stored:
            return self._bad(position, "event does not match its hash (altered, or an earlier event "
                                       "was removed with its chain entry)")
        self._matched()
        self.position, self.head = position, stored
        return None

    def link(self, link: _Link) -> VerifyReport | None:
        """Link format: the link's hash follows from head, and its digests are its events'."""
        if self.event is not None and self.event[0] < link.first_id:
            return self._bad(self.event[0], NO_ENTRY)
        if not link.well_formed or link_hash(self.head, link.digests) != link.hash:
            return self._bad(link.first_id, "the link's hash does not follow from the previous head"
                                            " (link altered, or an earlier link removed or rewritten)")
        if (bad := self._match_digests(link)) is not None:
            return bad
        if self.event is not None and self.event[0] <= link.last_id:  # in a gap between the link's ids
            return self._bad(self.event[0], NO_ENTRY)
        self.position, self.head = link.last_id, link.hash
        return None

    def _match_digests(self, link: _Link) -> VerifyReport | None:
        """The k-th digest is the k-th event's in the link's range. Where the k-th event must sit
        is known (see _Link.position_of), a missing or extra event is named exactly; otherwise
        the first event that does not match is."""
        earliest = link.first_id  # the first position the next digest's event can hold
        for k in range(link.size):
            slot = link.position_of(k)
            if self.event is None or self.event[0] > (link.last_id if slot is None else slot):
                return self._bad(earliest if slot is None else slot, MISSING)
            if slot is not None and self.event[0] < slot:  # in a gap between the link's ids
                return self._bad(self.event[0], NO_ENTRY)
            if self.event[3] is None or event_digest(*self._fields()) != link.digest(k):
                return self._bad(self.event[0], ALTERED_IN_LINK if slot is not None else UNPLACED_IN_LINK)
            earliest = self.event[0] + 1
            self._matched()
        return None

    def _fields(self) -> tuple:
        notification_id, originator_id, version, topic, state = self.event
        return notification_id, originator_id, version, topic, state and bytes(state)

    def _matched(self) -> None:
        """The current event matched: count it, tell progress now and then, move to the next."""
        self.checked += 1
        if self._progress is not None and self.checked % VERIFY_PAGE == 0:
            self._progress(self.checked, self.event[0], self._last)
        self.event = next(self._events, None)

    def _bad(self, at: int, problem: str) -> VerifyReport:
        return VerifyReport(False, self.checked, at, problem, self.head.hex(), self.position)
