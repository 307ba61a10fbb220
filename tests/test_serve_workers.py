"""`etsypro serve --workers N` on Unix: N worker processes behind one listening socket, which the
parent accepts on and hands each new connection to the next worker in turn (api/server.py Workers).
Connections opened at once are spread evenly; a worker killed with SIGKILL is replaced while the
other keeps serving; a second server on a taken port refuses to start; SIGTERM stops them all,
and so does the parent's death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.server import HAND_OVER, free_port
from bench.common import children
from conftest import ROOT

pytestmark = pytest.mark.skipif(not HAND_OVER, reason="handing connections to workers needs Unix")


def serve(url: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_SECRET_KEY": "k" * 40}
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2"], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def workers_of(parent: int) -> set[int]:
    """The server's worker processes (its spawned children, not multiprocessing's resource tracker)."""
    return set(children(parent, started_by=b"spawn_main"))


def wait_until(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_workers_share_a_port_survive_a_killed_worker_and_stop_together(new_database, tmp_path):
    url, port = new_database(), free_port()
    base, log = f"http://127.0.0.1:{port}", tmp_path / "serve.log"
    server = serve(url, port, log)
    try:
        wait_until(lambda: answers(base) and len(workers_of(server.pid)) == 2, 60, "two serving workers", log)
        first = workers_of(server.pid)

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # The other worker goes on serving meanwhile. (A connection handed to the killed worker
        # before its death was noticed is reset: clients retry it, as after any crash.)
        assert sum(answers(base) for _ in range(20)) >= 5
        def replacement() -> set[int] | None:
            now = workers_of(server.pid)
            return now if len(now) == 2 and victim not in now else None

        replaced = wait_until(replacement, 60, "a replacement worker", log)
        assert first - {victim} <= replaced
        wait_until(lambda: all(answers(base) for _ in range(10)), 30, "the replacement to serve", log)

        second_log = tmp_path / "second.log"
        second = serve(url, port, second_log)
        assert second.wait(60) != 0
        assert "cannot listen" in second_log.read_text()
        assert answers(base)  # the first server keeps its port

        server.send_signal(signal.SIGTERM)
        server.wait(30)  # raises if it does not stop
        assert not any(_alive(pid) for pid in replaced)
        assert not answers(base)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_connections_opened_at_once_are_spread_evenly_over_the_workers(new_database, tmp_path):
    url, port = new_database(), free_port()
    base, log = f"http://127.0.0.1:{port}", tmp_path / "serve.log"
    server = serve(url, port, log)
    clients = [httpx.Client(base_url=base, timeout=10) for _ in range(8)]
    try:
        wait_until(lambda: answers(base) and len(workers_of(server.pid)) == 2, 60, "two serving workers", log)
        for client in clients:  # eight keep-alive connections, as the write benchmark's clients hold
            assert client.get("/openapi.json").status_code == 200
        held = {pid: len(connections_to(port, pid)) for pid in workers_of(server.pid)}
        assert sorted(held.values()) == [4, 4], held
    finally:
        for client in clients:
            client.close()
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def test_workers_stop_when_their_parent_is_killed(new_database, tmp_path):
    """No orphans serving on: a worker learns of its parent's death from its hand-over socket."""
    url, port = new_database(), free_port()
    base, log = f"http://127.0.0.1:{port}", tmp_path / "serve.log"
    server, workers = serve(url, port, log), set()
    try:
        workers = wait_until(lambda: answers(base) and len(found := workers_of(server.pid)) == 2 and found, 60,
                             "two serving workers", log)
        server.kill()
        server.wait()
        wait_until(lambda: not any(_alive(pid) for pid in workers), 30, "the workers to stop", log)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def connections_to(port: int, pid: int) -> set[int]:
    """Socket inodes of `pid`'s established TCP connections on local `port` (from /proc)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                established.add(int(fields[9]))
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in established:
            held.add(int(target[8:-1]))
    return held


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
