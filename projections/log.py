"""Reading the global event log (pricing_events, in notification_id order) in pages.

Commit order equals notification order (the recorder inserts under an EXCLUSIVE table lock, see
commands/persistence.py), so once an id is visible every lower id that will ever exist is
visible too: a reader that remembers the last id it applied never passes over an event that
commits late. Ids may have holes (a rolled-back insert burns its sequence numbers); nothing
fills them later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg import Cursor

from projections.base import Positioned, Projection
from projections.parking import decode_each

# Turns a stored event into a domain event: codec.to_domain_event, the codec every side shares.
# Injected, because projections/ depends on the domain's events, not on the write side.
Decoder = Callable[[StoredEvent], object]

PAGE_SQL = ("SELECT notification_id, originator_id, originator_version, topic, state FROM pricing_events"
           " WHERE notification_id > %s ORDER BY notification_id LIMIT %s")


@dataclass(frozen=True)
class Page:
    events: list[Positioned]  # decoded events some projection reads, in log order
    last: int | None          # the highest id read (events of no interest included); None: nothing new
    rows: int                 # how many stored events the page covered
    undecodable: tuple = ()   # parking.Failure of each event of interest that did not decode


def topics_of(projections: Iterable[Projection]) -> frozenset[str]:
    return frozenset(get_topic(t) for p in projections for t in p.event_types)


class EventLog:
    def __init__(self, decode: Decoder, projections: Iterable[Projection]):
        self.decode = decode
        self.topics = topics_of(projections)

    def read(self, cur: Cursor, after: int, limit: int) -> Page:
        # Binary results: the state arrives as raw bytes rather than hex text, which halves
        # the reading cost on both sides.
        rows = cur.execute(PAGE_SQL, [after, limit], prepare=True, binary=True).fetchall()
        if not rows:
            return Page([], None, 0)
        topics, decode = self.topics, self.decode
        try:
            events = [(pos, decode(StoredEvent(oid, version, topic, state)))
                      for pos, oid, version, topic, state in rows if topic in topics]
        except Exception:  # noqa: BLE001 - one event that does not decode must not stop the page
            events, failures = decode_each(((pos, StoredEvent(oid, version, topic, state))
                                            for pos, oid, version, topic, state in rows if topic in topics), decode)
            return Page(events, rows[-1][0], len(rows), tuple(failures))
        return Page(events, rows[-1][0], len(rows))


def head(cur: Cursor) -> int:
    """The id of the latest committed event (0 for an empty log)."""
    return cur.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]
