"""Value objects survive the trip into a stored event and back, field for field."""

from dataclasses import fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import _TEMPLATES, TRANSCODINGS, PricingMapper
from domain.facts import Observation, ObservationBatch, SaleLine, SalesBatch
from domain.meta import EventMeta
from domain.money import Money
from domain.orders import TOTALS, Order, OrderBatch


def test_event_meta_round_trips_every_field():
    meta = EventMeta(*(f"value-{f.name}" for f in fields(EventMeta)[:-1]), datetime(2026, 1, 2, tzinfo=timezone.utc))
    transcoding = next(t for t in TRANSCODINGS if t.type is EventMeta)
    encoded = transcoding.encode(meta)
    assert set(encoded) == {f.name for f in fields(EventMeta)}
    assert transcoding.decode(encoded) == meta


# The bulk facts' direct encodings must write the very bytes the library's encoder writes.
gbp = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2).map(lambda d: Money(d, "GBP"))
moments = st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5, minutes=-30))]))
observations = st.builds(
    Observation, listing_id=st.uuids(), competitor=st.text(min_size=1, max_size=60), price=gbp,
    observed_at=moments, source=st.text(min_size=1, max_size=20))
sale_lines = st.builds(
    SaleLine, listing_id=st.uuids(), quantity=st.integers(-100_000, 100_000).filter(bool), unit_price=gbp,
    order_id=st.text(min_size=1, max_size=30), transaction_id=st.text(min_size=1, max_size=30), sold_at=moments)
orders = st.builds(
    Order, order_id=st.text(min_size=1, max_size=30), buyer=st.one_of(st.none(), st.text(max_size=32)),
    items=st.one_of(st.none(), st.integers(1, 100_000)), placed_at=moments, status=st.one_of(st.none(), st.text(max_size=20)),
    totals=st.dictionaries(st.sampled_from(TOTALS), gbp))
metas = st.builds(EventMeta, shop_id=st.one_of(st.none(), st.uuids().map(str)), actor_id=st.text(max_size=20),
                  actor_kind=st.sampled_from(["user", "service", "policy"]), source=st.just("import"),
                  reason=st.text(max_size=40), command_id=st.text(max_size=20), correlation_id=st.text(max_size=20),
                  causation_id=st.one_of(st.none(), st.text(max_size=20)), occurred_at=st.datetimes(timezones=st.just(timezone.utc)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([(ObservationBatch, observations), (SalesBatch, sale_lines), (OrderBatch, orders)]).flatmap(
    lambda kind: st.tuples(st.just(kind[0]), st.lists(kind[1], min_size=1, max_size=5))), metas)
def test_bulk_facts_are_stored_exactly_as_the_library_would_store_them(batch, meta):
    fast, library = _mappers()
    aggregate, facts = batch
    events = aggregate.record(uuid4(), "GBP", facts, meta).collect_events()
    assert {type(e) for e in events[1:]} <= set(_TEMPLATES)  # each fact took its template, not the library's path
    for event in events:
        assert fast.to_stored_event(event) == library.to_stored_event(event)
        assert fast.to_domain_event(fast.to_stored_event(event)) == event


def test_a_sale_is_stored_as_it_was_before_its_event_class_was_spelled_out():
    """SalesBatch.Sold and .Returned were made by @event methods: the events written since keep those bytes."""
    meta = EventMeta("1b4e28ba-2fa1-11d2-883f-0016d3cca427", 'actor é"x', "user", "import", "Etsy CSV import", "cmd1",
                     "corr1", "cause1", datetime(2026, 11, 30, 12, tzinfo=timezone.utc))
    line = SaleLine(UUID(int=0x12345678), -2, Money(Decimal("18.50"), "GBP"), "o1", "t1",
                    datetime(2026, 11, 28, 12, tzinfo=timezone.utc))
    returned = SalesBatch.record(UUID(int=1), "GBP", [line], meta).collect_events()[1]
    stored = _mappers()[0].to_stored_event(returned)
    assert stored.topic == "domain.facts:SalesBatch.Returned"
    assert stored.state.decode().split(",", 2)[2] == (
        '"listing_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000012345678"},"quantity":2,'
        '"unit_price":{"_type_":"money","_data_":["18.50","GBP"]},"order_id":"o1","transaction_id":"t1",'
        '"meta":{"_type_":"meta","_data_":{"shop_id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","actor_id":"actor é\\"x",'
        '"actor_kind":"user","source":"import","reason":"Etsy CSV import","command_id":"cmd1","correlation_id":"corr1",'
        '"causation_id":"cause1","occurred_at":{"_type_":"datetime_iso","_data_":"2026-11-28T12:00:00+00:00"}}}}')


def _mappers() -> tuple[PricingMapper, Mapper]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), *TRANSCODINGS):
        transcoder.register(transcoding)
    return PricingMapper(transcoder), Mapper(transcoder)


def test_one_instant_at_two_offsets_is_stored_at_each_its_own():
    """The same instant at another offset is an equal datetime but other text: caches keyed by the
    instant alone wrote one sale's day at the other's offset (found by the property test above)."""
    utc = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    india = utc.astimezone(timezone(timedelta(hours=5, minutes=30)))
    meta = EventMeta(None, "a", "user", "import", "", "c", "c", None, utc)
    lines = [SaleLine(uuid4(), 1, Money(Decimal("1.00"), "GBP"), "o", f"t{i}", moment)
             for i, moment in enumerate((utc, india, utc, india))]
    fast, library = _mappers()
    sold = SalesBatch.record(uuid4(), "GBP", lines, meta).collect_events()[1:]
    assert [e.meta.occurred_at.utcoffset() for e in sold] == [line.sold_at.utcoffset() for line in lines]
    assert [fast.to_stored_event(e) for e in sold] == [library.to_stored_event(e) for e in sold]
