"""`etsypro backup FILE` / `etsypro restore FILE`: the event store and every table that cannot be
derived from it, in one file; views are rebuilt after a restore, never restored.

The file: MAGIC, the format version (4 bytes), each table's rows as PostgreSQL text COPY (portable
across PostgreSQL versions and machines), the manifest (JSON: schema, chain head, per table its
columns, row count, sha256, offset and length), then a trailer giving the manifest's offset and
length and END. Every table is read in one REPEATABLE READ snapshot, so the file is one moment of
the database: events, their chain, the command log and the lookup rows agree.

A restore refuses (before changing anything) a file that is not a backup, one of a newer format or
schema, one whose bytes do not match the manifest, and a target that holds data; it then writes
every table in one transaction, so a failure leaves the target as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

import psycopg
from psycopg import sql

import migrations
from projections.registry import ALL

MAGIC = b"ETSYPRO-BACKUP\n"
END = b"ETSYPRO-BACKUP-END\n"
FORMAT = 1
TRAILER = struct.Struct(">QQ")  # manifest offset, manifest length
CHUNK = 1 << 20

# Text COPY is read back exactly only under the settings it was written with.
SESSION = {"DateStyle": "ISO, YMD", "TimeZone": "UTC", "IntervalStyle": "iso_8601",
           "extra_float_digits": "3", "bytea_output": "hex"}

RESTORED, REBUILT, RESET, MIGRATION = "restored", "rebuilt", "reset", "migration"

# Every table a migrated database holds, and what a restore does with it. Restored tables are in
# an order that satisfies their foreign keys. A table missing here makes `backup` refuse (and
# tests/test_backup.py fail): each new table needs a decision.
TABLES: dict[str, tuple[str, str]] = {
    "public.pricing_events": (RESTORED, "the event store"),
    "public.event_chain": (RESTORED, "tamper evidence (per-event hashes before 0007): recomputing it would trust the copy"),
    "public.event_chain_links": (RESTORED, "tamper evidence (one link per inserting statement)"),
    "public.event_index": (RESTORED, "who and which shop each event belongs to, written with it"),
    "public.command_log": (RESTORED, "idempotency records: retried commands replay their stored answers"),
    "public.reservations": (RESTORED, "write-side uniqueness (set validation), written with the events"),
    "public.shop_directory": (RESTORED, "tenant of each shop, written by the command"),
    "public.shop_rules": (RESTORED, "rules of each shop, written by the command"),
    "public.shop_listings": (RESTORED, "listings of each shop, written by the command"),
    "public.experiments": (RESTORED, "a shop's experiments and when the policy next tends each"),
    "public.experiment_listings": (RESTORED, "the listings of running experiments (one experiment per listing)"),
    "public.rollback_guards": (RESTORED, "each shop's rollback guard settings, written with the guard's event"),
    "public.accounts": (RESTORED, "identity: who exists"),
    "public.account_roles": (RESTORED, "identity: current roles"),
    "public.password_credentials": (RESTORED, "argon2 hashes (never in the log)"),
    "public.totp_credentials": (RESTORED, "TOTP secrets, encrypted under ETSYPRO_SECRET_KEY"),
    "public.recovery_codes": (RESTORED, "digests of recovery codes"),
    "public.api_keys": (RESTORED, "digests of API keys: automation keeps working"),
    "public.token_families": (RESET, "login sessions end: a refresh token rotated after the backup would be"
                                     " unused again in the copy, so everyone logs in anew"),
    "public.refresh_tokens": (RESET, "as token_families"),
    "public.mfa_challenges": (RESET, "minutes-long second-factor challenges"),
    "public.password_resets": (RESET, "one-time reset tokens: an admin issues a new one"),
    "public.subject_keys": (RESTORED, "each data subject's key, wrapped under ETSYPRO_SECRET_KEY: personal data in"
                                      " events opens only with it. A subject erased after the backup has its key back:"
                                      " erase it again (docs/operations.md, Erasure)"),
    "public.unknown_logins_suppressed": (RESTORED, "unknown-username failures over budget, not yet in the log"),
    "public.pricing_snapshots": (REBUILT, "a cache of aggregate state, retaken as aggregates grow"),
    "public.schema_migrations": (MIGRATION, "written by the migrations the restore applies; the manifest names them"),
    "streams.policy_positions": (RESTORED, "the policies' positions: consistent with the log in the snapshot,"
                                           " so they resume rather than re-reading the whole log"),
    "streams.repricing_listings": (RESTORED, "the repricing policy's index, committed with its position"),
    "streams.parked_events": (RESTORED, "only the policies' parked events (their positions passed over them);"
                                        " projections re-park theirs while rebuilding"),
    "streams.relay_positions": (RESET, "the Kafka path starts afresh on the restored database (new topics)"),
    "streams.sink_offsets": (RESET, "as relay_positions"),
    "marketplace.etsy_grants": (RESTORED, "Etsy tokens, encrypted under ETSYPRO_SECRET_KEY"),
    "marketplace.etsy_listings": (RESTORED, "which listing is which Etsy listing, and the price Etsy has"),
    "marketplace.etsy_push_queue": (RESTORED, "prices waiting for Etsy, committed with the pusher's position"),
    "marketplace.etsy_sync": (RESTORED, "the sync's cursors"),
    "marketplace.etsy_drifts": (RESTORED, "drift seen at Etsy, written with its event"),
    "marketplace.competitor_watches": (RESTORED, "which Etsy listings each listing's competitors are (the seller's setting)"),
    "marketplace.etsy_pkce": (RESET, "minutes-long connect attempts"),
    "marketplace.etsy_budget": (RESET, "Etsy's rate headers, re-read on the next call"),
    "analytics.model_runs": (RESTORED, "which model justified which price: a refit later sees another window"),
    "analytics.model_refreshes": (RESTORED, "the refresh each shop serves"),
    "analytics.model_refresh_passes": (RESET, "progress of an unfinished `analyze refresh`"),
    "analytics.projection_tracking": (REBUILT, "set by the rebuild"),
    "analytics.timescale_settings": (MIGRATION, "written by its migration"),
}
PROJECTION_TABLES = tuple(f"analytics.{table}" for projection in ALL for table in projection.tables)
TABLES.update({t: (REBUILT, "a projection: replayed from the log (projections/rebuild.py)") for t in PROJECTION_TABLES})

# Rows of a restored table that are kept (default: all).
ROWS = {"streams.parked_events": "follower IN (SELECT policy FROM streams.policy_positions)"}

SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


class BackupRefused(Exception):
    """A clear refusal: nothing was changed."""


@dataclass(frozen=True)
class Section:
    table: str
    columns: list[str]
    rows: int
    sha256: str
    offset: int
    length: int


def restored_tables() -> list[str]:
    return [t for t, (decision, _) in TABLES.items() if decision == RESTORED]


def unclassified(conn: psycopg.Connection) -> list[str]:
    """Base tables of the database that TABLES does not decide on (rebuild copies aside)."""
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables"
        f" WHERE table_type = 'BASE TABLE' AND table_schema NOT IN {SYSTEM_SCHEMAS}"
        " AND table_schema NOT LIKE '\\_timescaledb%%' AND table_schema NOT LIKE 'timescaledb%%'"
        " AND table_name NOT LIKE '%%\\_\\_rebuild' ORDER BY 1").fetchall()
    return [name for name, in rows if name not in TABLES]


def _ident(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def _session(conn: psycopg.Connection) -> None:
    for name, value in SESSION.items():
        conn.execute(sql.SQL("SELECT set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value)))


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    schema, name = table.split(".")
    return [c for c, in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum", [f"{schema}.{name}"]).fetchall()] if _exists(conn, table) else []


def _exists(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()[0]


def _sequences(conn: psycopg.Connection, table: str, columns: list[str]) -> dict[str, list]:
    """The table's serial columns' sequences: {sequence: [last_value, is_called]}."""
    found = {}
    for column in columns:
        seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", [table, column]).fetchone()[0]
        if seq:
            value, called = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.SQL(seq))).fetchone()
            found[seq] = [value, called]
    return found


def _chain_head(conn: psycopg.Connection) -> dict:
    """The hash covering the whole log as the chain stores it (the latest link, else the latest
    per-event row), with its position."""
    row = (conn.execute("SELECT last_id, hash FROM event_chain_links ORDER BY first_id DESC LIMIT 1").fetchone()
           or conn.execute("SELECT notification_id, hash FROM event_chain ORDER BY notification_id DESC LIMIT 1").fetchone())
    events = conn.execute("SELECT count(*) FROM pricing_events").fetchone()[0]
    return {"position": row[0] if row else 0, "hash": bytes(row[1]).hex() if row else None, "events": events}


# -- backup --------------------------------------------------------------------------------
def backup(conninfo: str, path: Path, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the backup to `path` (through a temporary file renamed at the end); returns the manifest."""
    partial = path.with_name(path.name + ".partial")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            _session(conn)
            if missing := unclassified(conn):
                raise BackupRefused(f"tables with no backup decision: {', '.join(missing)};"
                                    " add each to api/backup.py TABLES (restored, rebuilt or reset)")
            estimate = _estimated_rows(conn)
            with open(partial, "wb") as out:
                manifest = _write(conn, out, estimate, progress)
        finally:
            conn.execute("ROLLBACK")
    os.replace(partial, path)
    return manifest


def _estimated_rows(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(greatest(reltuples, 0)), 0) FROM pg_class WHERE oid IN"
                            " (SELECT to_regclass(t) FROM unnest(%s::text[]) t)", [restored_tables()]).fetchone()[0])


def _write(conn: psycopg.Connection, out: BinaryIO, estimate: int, progress) -> dict:
    out.write(MAGIC + struct.pack(">I", FORMAT))
    sections, sequences, done = [], {}, 0
    for table in restored_tables():
        if not _exists(conn, table):
            continue  # a table of a migration this database has not had yet
        columns = _columns(conn, table)
        section, done = _write_table(conn, out, table, columns, done, estimate, progress)
        sections.append(section.__dict__)
        sequences.update(_sequences(conn, table, columns))
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "server_version": conn.info.server_version,
        "schema": {"version": max((v for v, _, _ in _applied(conn)), default=0),
                   "migrations": [list(m) for m in _applied(conn)]},
        "chain_head": _chain_head(conn),
        "tables": sections,
        "sequences": sequences,
        "not_restored": {t: f"{d}: {why}" for t, (d, why) in TABLES.items() if d != RESTORED},
    }
    body = json.dumps(manifest, indent=1).encode()
    offset = out.tell()
    out.write(body + TRAILER.pack(offset, len(body)) + END)
    return manifest


def _write_table(conn, out: BinaryIO, table: str, columns: list[str], done: int, estimate: int,
                 progress) -> tuple[Section, int]:
    digest, offset, rows = hashlib.sha256(), out.tell(), 0
    selected = sql.SQL(", ").join(map(sql.Identifier, columns))
    query = sql.SQL("SELECT {} FROM {}").format(selected, _ident(table))
    if table in ROWS:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(ROWS[table]))
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as copy:
        for data in copy:
            data = bytes(data)
            out.write(data)
            digest.update(data)
            rows += data.count(b"\n")  # text COPY escapes newlines inside values: one per row
            if progress is not None:
                progress(done + rows, max(estimate, done + rows))
    return Section(table, columns, rows, digest.hexdigest(), offset, out.tell() - offset), done + rows


def _applied(conn: psycopg.Connection) -> list[tuple[int, str, str]]:
    return [tuple(r) for r in conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")]


# -- reading a backup ------------------------------------------------------------------------
def read_manifest(f: BinaryIO) -> dict:
    """The manifest, after checking the file is a backup of a format this release reads."""
    head = f.read(len(MAGIC) + 4)
    if len(head) < len(MAGIC) + 4 or not head.startswith(MAGIC):
        raise BackupRefused("not an EtsyPro backup (the file does not start with the backup signature)")
    (version,) = struct.unpack(">I", head[len(MAGIC):])
    if version > FORMAT:
        raise BackupRefused(f"backup format {version} is newer than this release reads ({FORMAT}): restore with a newer release")
    size = f.seek(0, os.SEEK_END)
    if size < len(head) + TRAILER.size + len(END):
        raise BackupRefused("corrupt backup: the file is truncated (no manifest)")
    f.seek(size - TRAILER.size - len(END))
    trailer = f.read(TRAILER.size + len(END))
    if not trailer.endswith(END):
        raise BackupRefused("corrupt backup: the file is truncated or altered at its end (no end marker)")
    offset, length = TRAILER.unpack(trailer[:TRAILER.size])
    if offset + length != size - len(trailer):
        raise BackupRefused("corrupt backup: the manifest's place does not match the file's size")
    f.seek(offset)
    try:
        return json.loads(f.read(length))
    except ValueError:
        raise BackupRefused("corrupt backup: the manifest is not valid JSON") from None


def check_schema(manifest: dict) -> int:
    """The backup's schema version, if this release knows every migration it names, unchanged."""
    known = {m.version: m for m in migrations.available()}
    latest = max(known)
    for version, name, checksum in manifest["schema"]["migrations"]:
        if version not in known:
            if version > latest:
                raise BackupRefused(f"the backup's schema is newer (migration {version}_{name}) than this release's"
                                    f" (up to {latest}): restore with the release that made it, or a newer one")
            raise BackupRefused(f"the backup names migration {version}_{name}, which this release does not have:"
                                " a backup of another application")
        if known[version].checksum != checksum:
            raise BackupRefused(f"migration {version}_{name} differs from this release's: a backup of another build")
    return manifest["schema"]["version"]


def check_sections(f: BinaryIO, manifest: dict, progress=None) -> None:
    """Every table's bytes hash to the manifest's sha256 and hold its row count."""
    total, done = sum(s["length"] for s in manifest["tables"]), 0
    for section in manifest["tables"]:
        digest, rows = hashlib.sha256(), 0
        for data in _section_chunks(f, section):
            digest.update(data)
            rows += data.count(b"\n")
            done += len(data)
            if progress is not None:
                progress(done, total)
        if digest.hexdigest() != section["sha256"] or rows != section["rows"]:
            raise BackupRefused(f"corrupt backup: the rows of {section['table']} do not match their checksum")


def _section_chunks(f: BinaryIO, section: dict):
    f.seek(section["offset"])
    left = section["length"]
    while left > 0:
        data = f.read(min(CHUNK, left))
        if not data:
            raise BackupRefused(f"corrupt backup: {section['table']} is cut short")
        left -= len(data)
        yield data


# -- restore ---------------------------------------------------------------------------------
def restore_tables(conninfo: str, path: Path, progress: Callable[[int, int], None] | None = None,
                   checking: Callable[[int, int], None] | None = None) -> dict:
    """Check the file whole, then write it into the (empty) target in one transaction; returns
    the manifest. The caller then migrates to the head and rebuilds the projections."""
    with open(path, "rb") as f:
        manifest = read_manifest(f)
        version = check_schema(manifest)
        _check_tables_known(manifest)
        check_sections(f, manifest, checking)
        with psycopg.connect(conninfo) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [migrations.LOCK_ID])
            _session(conn)
            _prepare_target(conn, manifest, version)
            _load(conn, f, manifest, progress)
            _check_head(conn, manifest)
    return manifest


def _check_tables_known(manifest: dict) -> None:
    for section in manifest["tables"]:
        if TABLES.get(section["table"], (None,))[0] != RESTORED:
            raise BackupRefused(f"the backup holds {section['table']}, which this release does not restore")


def _prepare_target(conn: psycopg.Connection, manifest: dict, version: int) -> None:
    """An empty database is migrated to the backup's schema here (in this transaction); a migrated
    one must be at exactly that schema and hold no data."""
    if _exists(conn, "public.schema_migrations"):
        applied = [list(m) for m in _applied(conn)]
        if applied != manifest["schema"]["migrations"]:
            at = max((m[0] for m in applied), default=0)
            raise BackupRefused(f"the target database is migrated to {at}, the backup to {version}: restore into an"
                                " empty database (the restore migrates it) or one migrated to the backup's schema")
    else:
        if others := _user_tables(conn):
            raise BackupRefused(f"the target database is not empty (it has {others[0]}{' and more' if len(others) > 1 else ''})")
        _migrate_in_transaction(conn, version)
    for section in manifest["tables"]:
        if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(_ident(section["table"]))).fetchone()[0]:
            raise BackupRefused(f"the target database is not empty: {section['table']} has rows;"
                                " restore only into a fresh database")


def _user_tables(conn: psycopg.Connection) -> list[str]:
    return [t for t, in conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables"
        f" WHERE table_schema NOT IN {SYSTEM_SCHEMAS} ORDER BY 1").fetchall()]


def _migrate_in_transaction(conn: psycopg.Connection, version: int) -> None:
    """migrations.apply's work up to `version`, inside the restore's transaction: a refused restore
    leaves an empty database empty."""
    conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                 " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    for migration in migrations.available():
        if migration.version > version:
            break
        conn.execute(migration.sql)
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                     [migration.version, migration.name, migration.checksum])
    _session(conn)  # a migration may have changed a setting


def _load(conn: psycopg.Connection, f: BinaryIO, manifest: dict, progress) -> None:
    total, done = sum(s["rows"] for s in manifest["tables"]), 0
    for section in manifest["tables"]:
        table, columns = section["table"], section["columns"]
        if _columns(conn, table) != columns:
            raise BackupRefused(f"{table} has other columns in the target than in the backup")
        # The chain's triggers would chain the copied events anew: the stored chain is restored instead.
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(_ident(table)))
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(_ident(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
        with conn.cursor().copy(statement) as copy:
            for data in _section_chunks(f, section):
                copy.write(data)
                if progress is not None:
                    done += data.count(b"\n")
                    progress(done, total)
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(_ident(table)))
    for sequence, (value, called) in manifest["sequences"].items():
        conn.execute("SELECT setval(%s, %s, %s)", [sequence, value, called])


def _check_head(conn: psycopg.Connection, manifest: dict) -> None:
    if _chain_head(conn) != manifest["chain_head"]:
        raise BackupRefused("the restored chain head differs from the manifest's: nothing restored")


@dataclass(frozen=True)
class Restored:
    manifest: dict
    migrated: list[str]      # migrations applied after the backup's schema
    rebuilt_at: int          # log position of the rebuilt projections
    verified: object         # read.audit.VerifyReport


def restore(conninfo: str, path: Path, progress=None, checking=None, rebuilding=None) -> Restored:
    """The drill's restore: the tables, the rest of the migrations, the projections replayed from
    the restored log, then the whole chain verified against the manifest's head."""
    import codec
    from projections.rebuild import rebuild
    from projections.registry import ALL
    from read.side import ReadSide

    manifest = restore_tables(conninfo, path, progress, checking)
    migrated = migrations.apply(conninfo, log=lambda *_: None)
    rebuilt = rebuild(conninfo, codec.to_domain_event, ALL, progress=rebuilding, fresh=True)
    reads = ReadSide(conninfo, pool_size=1)
    try:
        report = reads.audit.verify_chain()
    finally:
        reads.close()
    return Restored(manifest, migrated, rebuilt.log_position, report)


# -- the command line --------------------------------------------------------------------------
def backup_command(args) -> int:
    from api.progress import Progress
    from api.server import database_url
    from api.settings import Settings

    path = Path(args.file)
    if path.exists() and not args.overwrite:
        print(f"refused: {path} exists (use --overwrite)", file=sys.stderr)
        return 1
    try:
        with Progress("backing up", unit="rows") as shown:
            # The database as it is: a backup never migrates it (the manifest records its schema).
            manifest = backup(database_url(Settings.from_env(), log=lambda m: print(m, file=sys.stderr)), path,
                              shown.update)
    except BackupRefused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    except psycopg.Error as e:  # unreachable, or never migrated
        print(f"cannot back up: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    head = manifest["chain_head"]
    rows = sum(s["rows"] for s in manifest["tables"])
    print(f"backed up {len(manifest['tables'])} tables ({rows:,} rows; {head['events']:,} events, chain head"
          f" {head['hash']} at position {head['position']:,}; schema {manifest['schema']['version']}) to {path}")
    return 0


def restore_command(args) -> int:
    from api.progress import Progress
    from api.server import database_url
    from api.settings import Settings

    url = database_url(Settings.from_env(), log=lambda m: print(m, file=sys.stderr))
    try:
        with (Progress("checking the file", unit="bytes") as checking, Progress("restoring", unit="rows") as shown,
              Progress("rebuilding the projections") as rebuilding):
            done = restore(url, Path(args.file), shown.update, checking.update, rebuilding.update)
    except BackupRefused as e:
        print(f"refused: {e}; nothing was changed", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"refused: {e.filename}: no such file; nothing was changed", file=sys.stderr)
        return 1
    head, report = done.manifest["chain_head"], done.verified
    rows = sum(s["rows"] for s in done.manifest["tables"])
    print(f"restored {len(done.manifest['tables'])} tables ({rows:,} rows, {head['events']:,} events)"
          f" at schema {done.manifest['schema']['version']}"
          + (f"; then applied {len(done.migrated)} migration(s)" if done.migrated else "")
          + f"; projections rebuilt to position {done.rebuilt_at:,}")
    if not report.ok or report.head != head["hash"] and head["hash"] is not None:
        print(f"audit verify FAILED after the restore: {report.problem} at {report.first_bad_position}", file=sys.stderr)
        return 1
    print(f"audit verify: ok, {report.checked:,} events, head {report.head} as in the backup")
    return 0


def add_parsers(sub) -> None:
    """`etsypro backup FILE` and `etsypro restore FILE` (api/cli.py registers them)."""
    b = sub.add_parser("backup", help="write the event store and every table that cannot be derived to FILE"
                                      " (one consistent snapshot; views are rebuilt at restore)")
    b.add_argument("file")
    b.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    b.set_defaults(func=backup_command)
    r = sub.add_parser("restore", help="restore FILE into an empty (or freshly migrated) database, rebuild the"
                                       " projections and verify the chain; refuses anything else, changing nothing")
    r.add_argument("file")
    r.set_defaults(func=restore_command)
