"""Rebuild a projection by replaying the whole event log into fresh copies of its tables, then
swap the copies in atomically. Queries keep reading the live tables until the swap.

1. prepare: `<table>__rebuild` copies (same columns, constraints, comments and grants; only the
   unique indexes that ON CONFLICT needs, so the bulk load maintains as few indexes as possible),
   and a tracking row `rebuild:<name>`. If both already exist, a previous run was interrupted
   and this one resumes where its last committed batch left off.
2. replay: the ordinary projector, writing to the copies and tracking as `rebuild:<name>`.
3. index: the copies get the live tables' other indexes (built once, faster than maintained).
4. swap, in one transaction: lock the live projector's tracking rows (waiting out its batch in
   progress), apply the last few events to the copies so they are at least as current as the
   live tables, lock the live tables, rename live -> dropped and copy -> live, and set the live
   projections' positions to the copies'. The live projector carries on from there.

Several projections can be rebuilt by one replay of the log (`etsypro projections rebuild all`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import psycopg
from psycopg import Cursor, sql
from psycopg.rows import tuple_row

from projections import parking, tracking
from projections.base import SCHEMA, Projection, Tables
from projections.log import Decoder, EventLog, head, topics_of
from projections.projector import DEFAULT_BATCH, Projector

SUFFIX = "__rebuild"
COPIES = Tables(SUFFIX)
TRACK_PREFIX = "rebuild:"
SWAP_LOCK_TIMEOUT = "5s"
SWAP_ATTEMPTS = 10


@dataclass(frozen=True)
class Rebuilt:
    projections: tuple[str, ...]
    resumed_from: int      # log position the replay started from (0: from scratch)
    log_position: int      # position of the swapped-in tables
    events: int            # stored events replayed by this run
    seconds: float


def rebuild(conninfo: str, decode: Decoder, projections: Sequence[Projection], batch_size: int = DEFAULT_BATCH,
            progress: Callable[[int, int], None] | None = None, fresh: bool = False) -> Rebuilt:
    """Replay the log once into fresh copies of these projections' tables and swap them all in.

    progress(events replayed so far, events to replay) is called after each batch.
    fresh=True discards an interrupted rebuild's copies instead of resuming it."""
    started = time.monotonic()
    projections = tuple(projections)
    with psycopg.connect(conninfo, row_factory=tuple_row) as conn:
        resumed_from = min(_prepare(conn, p, fresh) for p in projections)
        with conn.cursor() as cur:
            total = head(cur) - resumed_from
    replayer = Projector(conninfo, decode, projections, batch_size=batch_size, tables=COPIES,
                         tracking_prefix=TRACK_PREFIX, application_name="etsypro-rebuild")
    try:
        replayed = replayer.catch_up((lambda n: progress(n, max(total, n))) if progress else None)
    finally:
        replayer.close()
    with psycopg.connect(conninfo, row_factory=tuple_row) as conn:
        for projection in projections:
            _build_indexes(conn, projection)
        position = _swap(conn, projections, EventLog(decode, projections), batch_size)
    return Rebuilt(tuple(p.name for p in projections), resumed_from, position, replayed, time.monotonic() - started)


# -- 1. prepare ---------------------------------------------------------------------------
def _prepare(conn: psycopg.Connection, projection: Projection, fresh: bool) -> int:
    track_as = TRACK_PREFIX + projection.name
    with conn.transaction(), conn.cursor() as cur:
        position = tracking.position(cur, track_as)
        if position is not None and _copies_exist(cur, projection) and not fresh:
            return position
        for table in projection.tables:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(COPIES.ident(table)))
            _create_copy(cur, table)
        tracking.set_position(cur, track_as, 0)
        return 0


def _copies_exist(cur: Cursor, projection: Projection) -> bool:
    return all(_exists(cur, COPIES.name(t)) for t in projection.tables)


def _exists(cur: Cursor, table: str) -> bool:
    return cur.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{SCHEMA}.{table}"]).fetchone()[0]


def _create_copy(cur: Cursor, table: str) -> None:
    live, copy = Tables().ident(table), COPIES.ident(table)
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(copy, live))
    for name, definition, primary in _indexes(cur, table, unique=True):
        cur.execute(_copy_index(definition, name, table))
        if primary:
            cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY USING INDEX {}").format(
                copy, sql.Identifier(name + SUFFIX), sql.Identifier(name + SUFFIX)))
    for grantee, privilege in cur.execute(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants"
            " WHERE table_schema = %s AND table_name = %s AND grantee <> current_user", [SCHEMA, table]).fetchall():
        to = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
        cur.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), copy, to))
    if _is_hypertable(cur, table):
        cur.execute("SELECT analytics.timescale_apply(%s::regclass, %s)", [f"{SCHEMA}.{COPIES.name(table)}", table])


def _indexes(cur: Cursor, table: str, unique: bool) -> list[tuple[str, str, bool]]:
    """(name, CREATE INDEX statement, is primary key) of the live table's (non-)unique indexes."""
    return cur.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisprimary FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND i.indisunique = %s ORDER BY c.relname",
        [f"{SCHEMA}.{table}", unique]).fetchall()


_INDEX_HEAD = re.compile(r"^CREATE (UNIQUE )?INDEX (\S+) ON (ONLY )?(\S+) ")


def _copy_index(definition: str, name: str, table: str) -> str:
    """The live table's CREATE INDEX, made to create `<index>__rebuild` on the copy."""
    match = _INDEX_HEAD.match(definition)
    if not match:
        raise RuntimeError(f"unexpected index definition: {definition}")
    target = sql.Identifier(SCHEMA, COPIES.name(table)).as_string(None)
    head_ = f"CREATE {match[1] or ''}INDEX {sql.Identifier(name + SUFFIX).as_string(None)} ON {target} "
    return head_ + definition[match.end():]


def _is_hypertable(cur: Cursor, table: str) -> bool:
    if not cur.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]:
        return False
    return cur.execute("SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
                       " WHERE hypertable_schema = %s AND hypertable_name = %s)", [SCHEMA, table]).fetchone()[0]


# -- 3. index -----------------------------------------------------------------------------
def _build_indexes(conn: psycopg.Connection, projection: Projection) -> None:
    with conn.transaction(), conn.cursor() as cur:
        for table in projection.tables:
            for name, definition, _ in _indexes(cur, table, unique=False):
                if not _exists(cur, name + SUFFIX):  # a resumed run may have built it already
                    cur.execute(_copy_index(definition, name, table))
            cur.execute(sql.SQL("ANALYZE {}").format(COPIES.ident(table)))


# -- 4. swap ------------------------------------------------------------------------------
def _swap(conn: psycopg.Connection, projections: tuple[Projection, ...], event_log: EventLog, batch_size: int) -> int:
    for attempt in range(SWAP_ATTEMPTS):
        try:
            with conn.transaction(), conn.cursor() as cur:
                return _swap_once(cur, projections, event_log, batch_size)
        except psycopg.errors.LockNotAvailable:
            # A long query holds a live table: let it finish rather than queue every reader
            # behind our lock; try again shortly.
            time.sleep(min(0.5 * 2 ** attempt, 10))
    raise TimeoutError(f"could not lock the live tables of {', '.join(p.name for p in projections)} to swap them")


def _swap_once(cur: Cursor, projections: tuple[Projection, ...], event_log: EventLog, batch_size: int) -> int:
    names = [p.name for p in projections]
    copies = [TRACK_PREFIX + n for n in names]
    cur.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
    tracking.ensure(cur, names)
    live = tracking.lock(cur, names)  # the live projector waits from here on
    done = tracking.lock(cur, copies)
    # The copies become the live tables: bring them to the head so that nothing a query could
    # see before the swap is missing after it.
    position = min(done.values())
    while (page := event_log.read(cur, position, batch_size)).last is not None:
        for projection, track_as in zip(projections, copies):
            projection.apply(cur, [pe for pe in page.events if pe[0] > done[track_as]], COPIES)
            topics = topics_of([projection])  # an event that does not decode is parked, as the projector does
            parking.park(cur, track_as, [f for f in page.undecodable if f.position > done[track_as] and f.topic in topics])
        position = page.last
    assert all(position >= p for p in live.values()), (position, live)  # the live ones read the same log
    tables = [t for p in projections for t in p.tables]
    for table in tables:
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(Tables().ident(table)))
    for table in tables:
        old = f"{table}__replaced"
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(Tables().ident(table), sql.Identifier(old)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(COPIES.ident(table), sql.Identifier(table)))
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, old)))
        _restore_index_names(cur, table)
    for name, track_as in zip(names, copies):
        tracking.set_position(cur, name, position)
        tracking.forget(cur, track_as)
        parking.rename(cur, track_as, name)  # what the copies lack is what the replay parked
    return position


def _restore_index_names(cur: Cursor, table: str) -> None:
    """`<index>__rebuild` -> `<index>`, and a primary key TimescaleDB named after the copy."""
    for (index,) in cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass", [f"{SCHEMA}.{table}"]).fetchall():
        original = index.removesuffix(SUFFIX).replace(f"{table}{SUFFIX}_", f"{table}_", 1)
        if original != index:
            cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(SCHEMA, index), sql.Identifier(original)))
