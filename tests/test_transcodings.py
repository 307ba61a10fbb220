"""Value objects survive the trip into a stored event and back, field for field."""

from dataclasses import fields
from datetime import datetime, timezone

from commands.persistence import TRANSCODINGS
from domain.meta import EventMeta


def test_event_meta_round_trips_every_field():
    meta = EventMeta(*(f"value-{f.name}" for f in fields(EventMeta)[:-1]), datetime(2026, 1, 2, tzinfo=timezone.utc))
    transcoding = next(t for t in TRANSCODINGS if t.type is EventMeta)
    encoded = transcoding.encode(meta)
    assert set(encoded) == {f.name for f in fields(EventMeta)}
    assert transcoding.decode(encoded) == meta
