"""The read side's own connections: readers never borrow the write application's pool."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from codec.time_loaders import reading_adapters


class ReadPool:
    """A small pool of autocommit connections, opened on first use and closed with the app."""

    def __init__(self, conninfo: str, max_size: int = 4):
        self._pool = ConnectionPool(conninfo, min_size=0, max_size=max_size, open=False,
                                    kwargs={"autocommit": True, "context": reading_adapters()})
        self._opened = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if not self._opened:
            self._pool.open()
            self._opened = True
        with self._pool.connection() as conn:
            yield conn

    def rows(self, sql: str, params=None) -> list[tuple]:
        with self.connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            return curs.execute(sql, params).fetchall()

    def close(self) -> None:
        if self._opened:
            self._pool.close()
