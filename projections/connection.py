"""The one connection a follower (projector, sink, policy) writes through."""

from __future__ import annotations

import psycopg

from codec.time_loaders import reading_adapters


class LazyConnection:
    """Opened at first use, and opened again after it closed (a database restart), so that a
    follower built while the database is down starts once it is back."""

    def __init__(self, conninfo: str, application_name: str):
        self.conninfo = conninfo
        self.application_name = application_name
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, application_name=self.application_name,
                                         context=reading_adapters())
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
