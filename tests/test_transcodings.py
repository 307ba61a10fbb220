"""Value objects survive the trip into a stored event and back, field for field."""

from dataclasses import fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import TRANSCODINGS, PricingMapper
from domain.facts import Observation, ObservationBatch
from domain.meta import EventMeta
from domain.money import Money


def test_event_meta_round_trips_every_field():
    meta = EventMeta(*(f"value-{f.name}" for f in fields(EventMeta)[:-1]), datetime(2026, 1, 2, tzinfo=timezone.utc))
    transcoding = next(t for t in TRANSCODINGS if t.type is EventMeta)
    encoded = transcoding.encode(meta)
    assert set(encoded) == {f.name for f in fields(EventMeta)}
    assert transcoding.decode(encoded) == meta


# The observation event's direct encoding must write the very bytes the library's encoder writes.
observations = st.builds(
    Observation, listing_id=st.uuids(), competitor=st.text(min_size=1, max_size=60),
    price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2).map(lambda d: Money(d, "GBP")),
    observed_at=st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5, minutes=-30))])),
    source=st.text(min_size=1, max_size=20))
metas = st.builds(EventMeta, shop_id=st.one_of(st.none(), st.uuids().map(str)), actor_id=st.text(max_size=20),
                  actor_kind=st.sampled_from(["user", "service", "policy"]), source=st.just("import"),
                  reason=st.text(max_size=40), command_id=st.text(max_size=20), correlation_id=st.text(max_size=20),
                  causation_id=st.one_of(st.none(), st.text(max_size=20)), occurred_at=st.datetimes(timezones=st.just(timezone.utc)))


@settings(max_examples=200, deadline=None)
@given(st.lists(observations, min_size=1, max_size=5), metas)
def test_observations_are_stored_exactly_as_the_library_would_store_them(batch, meta):
    fast, library = _mappers()
    events = ObservationBatch.record(uuid4(), "GBP", batch, meta).collect_events()
    for event in events:
        assert fast.to_stored_event(event) == library.to_stored_event(event)
        assert fast.to_domain_event(fast.to_stored_event(event)) == event


def _mappers() -> tuple[PricingMapper, Mapper]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), *TRANSCODINGS):
        transcoder.register(transcoding)
    return PricingMapper(transcoder), Mapper(transcoder)
