"""Tracking by global log position: where each projection is, written in the same transaction as
its view rows.

`lock` takes the projections' tracking rows FOR UPDATE at the start of a batch, so two projector
processes never apply the same batch: the second waits, then sees the first's new positions and
skips what is already applied. (A Kafka sink tracks (topic, partition, offset) instead, with the
same rule: its offsets commit with its view rows.)
"""

from __future__ import annotations

from typing import Iterable

from psycopg import Cursor

_TABLE = "analytics.projection_tracking"


def ensure(cur: Cursor, names: Iterable[str]) -> None:
    cur.execute(f"INSERT INTO {_TABLE} (projection) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                [list(names)])


def lock(cur: Cursor, names: list[str]) -> dict[str, int]:
    rows = cur.execute(f"SELECT projection, log_position FROM {_TABLE} WHERE projection = ANY(%s)"
                       " ORDER BY projection FOR UPDATE", [names], prepare=True).fetchall()
    positions = dict(rows)
    missing = set(names) - positions.keys()
    if missing:
        raise LookupError(f"no tracking row for {sorted(missing)}: call tracking.ensure() first")
    return positions


def advance(cur: Cursor, moves: dict[str, tuple[int, int]]) -> None:
    """moves: name -> (new position, events applied in this batch)."""
    names = list(moves)
    cur.execute(
        f"UPDATE {_TABLE} t SET log_position = u.position, events_applied = t.events_applied + u.applied,"
        " updated_at = now()"
        " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS u(projection, position, applied)"
        " WHERE t.projection = u.projection",
        [names, [moves[n][0] for n in names], [moves[n][1] for n in names]], prepare=True)


def position(cur: Cursor, name: str) -> int | None:
    row = cur.execute(f"SELECT log_position FROM {_TABLE} WHERE projection = %s", [name]).fetchone()
    return row[0] if row else None


def set_position(cur: Cursor, name: str, log_position: int) -> None:
    cur.execute(f"INSERT INTO {_TABLE} (projection, log_position) VALUES (%s, %s)"
                " ON CONFLICT (projection) DO UPDATE SET log_position = excluded.log_position, updated_at = now()",
                [name, log_position])


def forget(cur: Cursor, name: str) -> None:
    cur.execute(f"DELETE FROM {_TABLE} WHERE projection = %s", [name])
