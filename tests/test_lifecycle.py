"""Every command that starts the embedded PostgreSQL stops it when it is asked to end (SIGTERM from
systemd, Docker or Kubernetes; SIGHUP from a closed terminal; SIGINT from Ctrl-C), and a data
directory that a killed run left behind works, and is cleaned up, the next time. Real processes on
a temporary data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from api.database import _is_postmaster_of
from api.server import free_port

ROOT = Path(__file__).resolve().parents[1]
UP_SECONDS = 90  # the first start of a data directory runs initdb and every migration


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One data directory for the module: each case must leave it as it found it, nothing running."""
    return tmp_path_factory.mktemp("lifecycle")


def etsypro(data_dir: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETSYPRO_")}
    env.update(ETSYPRO_DATA_DIR=str(data_dir), ETSYPRO_SECRET_KEY="k" * 40, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def postmasters(data_dir: Path) -> list[psutil.Process]:
    pgdata = (data_dir / "postgres").resolve()
    return [p for p in psutil.process_iter() if _is_postmaster_of(p.pid, pgdata)]


def wait_for_line(process: subprocess.Popen, text: str) -> list[str]:
    """Output lines up to the first containing `text`."""
    lines, deadline = [], time.monotonic() + UP_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if text in line:
            return lines
    process.kill()
    raise AssertionError(f"no {text!r} in the output:\n{''.join(lines)}{process.stdout.read()}")


def assert_nothing_left(data_dir: Path) -> None:
    deadline = time.monotonic() + 15  # pg_ctl stop waits for the server's shutdown checkpoint
    while postmasters(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert postmasters(data_dir) == [], "the embedded PostgreSQL outlived its last user"
    assert (data_dir / "postgres" / ".handle_pids.json").read_text() == "[]"


COMMANDS = {  # what the command prints once it runs with its embedded PostgreSQL up
    "serve": (["serve", "--port", "{port}"], "Uvicorn running"),
    "serve --workers 2": (["serve", "--port", "{port}", "--workers", "2"], "worker processes"),
    "project": (["project"], "following the event log"),
    "reprice": (["reprice"], "repricing: following the event log"),
    "demo": (["demo"], "engine serving at"),
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_signal_stops_the_command_and_its_embedded_postgres(data_dir, command, signum):
    args, ready = COMMANDS[command]
    process = etsypro(data_dir, *[a.format(port=free_port()) for a in args])
    wait_for_line(process, ready)
    assert postmasters(data_dir), "the command runs on the embedded PostgreSQL"

    process.send_signal(signum)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode >= 0, f"killed by the signal, not stopped by it:\n{output}"
    assert "Traceback" not in output, output
    assert_nothing_left(data_dir)


def test_a_killed_run_leaves_an_orphan_that_the_next_command_adopts_and_stops(data_dir):
    crashed = etsypro(data_dir, "project")
    wait_for_line(crashed, "following the event log")
    crashed.kill()  # no exit handler runs: the server keeps running, listing a dead user
    crashed.wait()
    assert postmasters(data_dir)

    migrate = etsypro(data_dir, "migrate")
    output, _ = migrate.communicate(timeout=UP_SECONDS)
    assert migrate.returncode == 0, output
    assert_nothing_left(data_dir)


@pytest.mark.parametrize("owner", ["dead", "reused"])
def test_a_postmaster_pid_left_by_a_crashed_server_is_recovered(data_dir, owner):
    """The crashed server's pid is now no process at all, or an unrelated live one."""
    migrate = etsypro(data_dir, "migrate")
    assert migrate.wait(UP_SECONDS) == 0
    assert_nothing_left(data_dir)
    stranger = subprocess.Popen(["sleep", "60"])
    if owner == "dead":
        stranger.kill()
        stranger.wait()
    try:
        pgdata = (data_dir / "postgres").resolve()
        (pgdata / "postmaster.pid").write_text(f"{stranger.pid}\n{pgdata}\n{int(time.time())}\n5432\n{pgdata}\n\n"
                                               "  1234 5678\nready   \n")
        migrate = etsypro(data_dir, "migrate")
        output, _ = migrate.communicate(timeout=UP_SECONDS)
        assert migrate.returncode == 0, output
        assert "schema is current" in output
        assert_nothing_left(data_dir)
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("command", [["relay"], ["worker"], ["reprice", "--kafka"]], ids=" ".join)
def test_no_broker_at_the_bootstrap_servers_is_one_line_and_a_failure(data_dir, command):
    nobody = f"127.0.0.1:{free_port()}"
    process = etsypro(data_dir, *command, "--bootstrap-servers", nobody)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"still running: {process.communicate()[0]}") from None
    assert process.returncode == 2
    [line] = output.splitlines()
    assert nobody in line and "connection refused" in line and "ETSYPRO_KAFKA_BOOTSTRAP" in line, line
    assert postmasters(data_dir) == []  # it failed before starting anything
