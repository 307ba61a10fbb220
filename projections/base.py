"""What a projection is: a named set of analytics tables and a handler that turns a batch of
events into row writes on a psycopg cursor.

A handler knows nothing about where its events came from or how progress is recorded: the
in-process projector (projections/projector.py) feeds it pages of the global log and records a
log position; a Kafka sink can feed it the same (position, event) pairs and record its topic,
partition and offset. Either way the caller commits the handler's writes and its own tracking
in one transaction.

Handlers are idempotent per event, so even a duplicate that slips past tracking (a relay may
publish an event twice) changes nothing: facts are keyed by the event's log position and
inserted with ON CONFLICT DO NOTHING, rollups only count facts that were actually inserted,
and current-state rows only move forward by aggregate version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence
from uuid import UUID

from psycopg import Cursor, sql

SCHEMA = "analytics"

Positioned = tuple[int, Any]  # (position in the global log, domain event)


@dataclass(frozen=True)
class Tables:
    """Where a handler writes: the live tables, or a rebuild's fresh copies (same name + suffix)."""

    suffix: str = ""

    def name(self, table: str) -> str:
        return f"{table}{self.suffix}"

    def ident(self, table: str) -> sql.Identifier:
        return sql.Identifier(SCHEMA, self.name(table))


LIVE = Tables()


class Projection(Protocol):
    name: str                      # what operators call it: `etsypro projections rebuild NAME`
    tables: tuple[str, ...]        # its tables in the analytics schema (a rebuild copies these)
    event_types: tuple[type, ...]  # the domain event classes it reads

    def apply(self, cur: Cursor, events: Sequence[Positioned], tables: Tables = LIVE) -> None:
        """Write the rows for these events (in log order). Must be idempotent per event."""


@dataclass
class Statements:
    """SQL templates with {table} placeholders, composed once per Tables (live or a copy)."""

    templates: dict[str, str]
    _composed: dict[tuple[str, str], sql.Composed] = field(default_factory=dict)

    def get(self, key: str, tables: Tables) -> sql.Composed:
        cached = self._composed.get((key, tables.suffix))
        if cached is None:
            template = self.templates[key]
            names = {t: tables.ident(t) for t in _placeholders(template)}
            cached = self._composed[key, tables.suffix] = sql.SQL(template).format(**names)
        return cached


def _placeholders(template: str) -> Iterable[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True)
class Staging:
    """A per-session temporary table that a batch is COPYed into (binary COPY is several times
    cheaper than passing arrays), to be consumed by one set-based statement that reads it with
    `DELETE FROM pg_temp.<name> RETURNING *`, which also leaves it empty for the next batch."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (column, PostgreSQL type)

    def ddl(self) -> str:
        cols = ", ".join(f"{c} {t}" for c, t in self.columns)
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.name} ({cols}) ON COMMIT DELETE ROWS"

    def load(self, cur: Cursor, rows: list[tuple]) -> None:
        cur.execute(self.ddl())
        with cur.copy(f"COPY pg_temp.{self.name} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([t for _, t in self.columns])
            for row in rows:
                copy.write_row(row)


class UUIDs(dict):
    """str -> UUID, memoised: event metadata carries shop ids as strings, a batch has few shops."""

    def __missing__(self, key: str) -> UUID:
        value = self[key] = UUID(key)
        return value


def of_types(events: Sequence[Positioned], types: tuple[type, ...]) -> list[Positioned]:
    return [pe for pe in events if type(pe[1]) in types]


def columns(rows: list[tuple]) -> list[list]:
    """Rows to one list per column: the parameters of an INSERT ... SELECT FROM unnest(...)."""
    return [list(c) for c in zip(*rows)] if rows else []
