"""Numbered SQL migrations and the runner that applies them.

Safe to run concurrently (an advisory lock serialises runners) and twice (applied versions are
recorded with a checksum; a changed migration that was already applied is an error, not a
silent re-run). Each migration runs in its own transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

HERE = Path(__file__).parent
LOCK_ID = 0x45545359  # "ETSY": any fixed number shared by all runners


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for path in sorted(HERE.glob("*.sql")):
        match = re.match(r"(\d+)_(.+)\.sql$", path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    assert len(versions) == len(set(versions)), f"duplicate migration numbers: {versions}"
    return found


def apply(conninfo: str, log=print, up_to: int | None = None) -> list[str]:
    """Apply pending migrations (those numbered up to `up_to` only, if given: tests use it to
    build a database as an older release left it); returns the names applied."""
    applied_now = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_ID])
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
            for migration in available():
                if up_to is not None and migration.version > up_to:
                    break  # available() is in version order
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version}_{migration.name} changed after it was applied;"
                            " add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        [migration.version, migration.name, migration.checksum],
                    )
                applied_now.append(f"{migration.version:04d}_{migration.name}")
                log(f"applied migration {migration.version:04d}_{migration.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_ID])
    return applied_now
