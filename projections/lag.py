"""How far behind the head of the event log each projection is: events and seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from psycopg import Connection
from psycopg.rows import tuple_row


@dataclass(frozen=True)
class Lag:
    projection: str
    log_position: int          # last applied pricing_events.notification_id (0: never ran)
    head: int                  # latest committed notification_id
    events_behind: int         # committed events not yet applied
    seconds_behind: float      # how long the oldest unapplied event has been waiting (0 when caught up)
    updated_at: datetime | None  # when the projection last committed a batch

    def as_dict(self) -> dict:
        return {"projection": self.projection, "log_position": self.log_position, "head": self.head,
                "events_behind": self.events_behind, "seconds_behind": round(self.seconds_behind, 3),
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


_LAG = """
    WITH head AS (SELECT coalesce(max(notification_id), 0) AS head FROM pricing_events)
    SELECT n.name, coalesce(t.log_position, 0), head.head,
           (SELECT count(*) FROM pricing_events e WHERE e.notification_id > coalesce(t.log_position, 0)),
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT i.recorded_at FROM event_index i WHERE i.notification_id > coalesce(t.log_position, 0)
               ORDER BY i.notification_id LIMIT 1))::float8, 0),
           t.updated_at
    FROM unnest(%s::text[]) WITH ORDINALITY AS n(name, ord)
    CROSS JOIN head
    LEFT JOIN analytics.projection_tracking t ON t.projection = n.name
    ORDER BY n.ord"""


def lag(conn: Connection, names: Sequence[str]) -> list[Lag]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return [Lag(*row) for row in cur.execute(_LAG, [list(names)]).fetchall()]
