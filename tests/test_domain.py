"""The domain on its own: Money, the Listing's invariants and compensation. No database, no HTTP."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal
from uuid import uuid4

import pytest

from domain.errors import DomainError, InvalidValue, InvariantViolated
from domain.facts import Observation, ObservationBatch, SaleLine, SalesBatch
from domain.listing import Guardrails, Listing
from domain.meta import EventMeta
from domain.money import Money

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def meta(source: str = "manual", reason: str = "") -> EventMeta:
    return EventMeta(shop_id=str(uuid4()), actor_id="alice", actor_kind="user", source=source, reason=reason,
                     command_id="cmd-1", correlation_id="cmd-1", causation_id="cmd-1", occurred_at=NOW)


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


def guardrails(floor: str | None = "10.00", ceiling: str | None = "40.00") -> Guardrails:
    return Guardrails(floor=floor and gbp(floor), ceiling=ceiling and gbp(ceiling), cost=gbp("6.00"))


def mug(price: str = "20.00", rails: Guardrails | None = None) -> Listing:
    return Listing.register(uuid4(), "ext-1", "MUG-1", "Blue mug", "active", gbp(price),
                            rails or guardrails(), meta())


def refused(call, *args, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(*args, **kwargs)
    return caught.value


# -- Money -------------------------------------------------------------------------------------
class TestMoney:
    def test_a_price_is_a_decimal_with_the_currency_minor_units(self):
        assert Money.price("19.9", "GBP") == Money(Decimal("19.90"), "GBP")
        assert Money.price(19.99, "GBP").amount == Decimal("19.99")  # an exactly-decimal float is fine
        assert Money.price(1500, "JPY") == Money(Decimal("1500"), "JPY")

    @pytest.mark.parametrize("amount", ["NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf",
                                        math.nan, math.inf, -math.inf])
    def test_refuses_nan_and_infinity(self, amount):
        error = refused(Money.price, amount, "GBP")
        assert isinstance(error, InvalidValue)
        assert error.field == "price"

    @pytest.mark.parametrize("amount", ["0", "0.00", "-0.01", -5, "-0"])
    def test_a_price_must_be_greater_than_zero(self, amount):
        assert refused(Money.price, amount, "GBP").field == "price"

    def test_plain_money_may_be_zero_as_a_cost_can_be(self):
        assert Money.of("0", "GBP").amount == Decimal("0.00")

    @pytest.mark.parametrize("amount, currency", [("1.234", "GBP"), ("19.999", "USD"), ("100.5", "JPY")])
    def test_refuses_more_decimals_than_the_currency_has_instead_of_rounding(self, amount, currency):
        assert "decimals" in refused(Money.price, amount, currency).detail

    def test_refuses_a_float_that_is_not_exactly_decimal(self):
        assert 0.1 + 0.2 != 0.3  # the float 0.30000000000000004: accepting it would be a silent rounding
        assert refused(Money.price, 0.1 + 0.2, "GBP").field == "price"

    @pytest.mark.parametrize("amount", ["1e309", "1000000000", 1e300, "9" * 400])
    def test_refuses_absurdly_large_amounts(self, amount):
        assert refused(Money.price, amount, "GBP").field == "price"

    @pytest.mark.parametrize("amount", [True, None, [1], {"amount": 1}, "", "12,50", "£12", "0x10", "1 2"])
    def test_refuses_what_is_not_a_number(self, amount):
        assert refused(Money.price, amount, "GBP").field == "price"

    @pytest.mark.parametrize("currency", ["XYZ", "gbp", "GB", "", None, 826, "GBP "])
    def test_refuses_an_unknown_currency_naming_the_sibling_field(self, currency):
        assert refused(Money.of, "1.00", currency, "items[3].price").field == "items[3].currency"

    def test_refuses_comparing_different_currencies(self):
        with pytest.raises(InvalidValue):
            assert gbp("1.00") < Money.of("2.00", "USD")
        assert refused(gbp("1.00").same_currency, Money.of("1.00", "EUR"), "price").field == "price"


# -- Listing invariants --------------------------------------------------------------------------
class TestListingInvariants:
    def test_a_registered_listing_is_at_version_one_with_its_price(self):
        listing = mug("20.00")
        assert (listing.version, listing.price, listing.last_price_change) == (1, gbp("20.00"), 0)

    @pytest.mark.parametrize("price, field", [("9.99", "price"), ("40.01", "price")])
    def test_cannot_register_a_price_outside_the_guardrails(self, price, field):
        error = refused(mug, price)
        assert isinstance(error, InvariantViolated) and error.field == field

    def test_floor_may_not_be_above_ceiling(self):
        assert refused(mug, "20.00", guardrails(floor="30.00", ceiling="25.00")).field == "floor"

    def test_guardrails_must_be_in_the_listing_currency(self):
        rails = Guardrails(floor=Money.of("10.00", "USD"))
        assert refused(mug, "20.00", rails).field == "floor"

    def test_an_unknown_status_is_refused(self):
        error = refused(Listing.register, uuid4(), "e", "s", "t", "deleted", gbp("20.00"), guardrails(), meta())
        assert error.field == "status"

    def test_the_price_may_sit_exactly_on_floor_and_ceiling(self):
        listing = mug()
        assert listing.change_price(gbp("10.00"), meta())
        assert listing.change_price(gbp("40.00"), meta())
        assert listing.version == 3

    @pytest.mark.parametrize("price", ["9.99", "40.01"])
    def test_a_price_change_outside_the_guardrails_is_refused_and_records_nothing(self, price):
        listing = mug()
        assert refused(listing.change_price, gbp(price), meta()).field == "price"
        assert listing.version == 1 and listing.price == gbp("20.00")
        assert [type(e).__name__ for e in listing.collect_events()] == ["Registered"]

    def test_a_price_change_in_another_currency_is_refused(self):
        listing = mug()
        assert refused(listing.change_price, Money.of("20.00", "USD"), meta()).field == "price"
        assert listing.version == 1

    def test_setting_the_same_price_records_nothing(self):
        listing = mug("20.00")
        assert listing.change_price(gbp("20.00"), meta()) is False
        assert listing.version == 1

    def test_a_price_change_remembers_the_previous_price_and_who_asked(self):
        listing = mug("20.00")
        listing.change_price(gbp("22.50"), meta(source="experiment"), rule="beat-lowest")
        change = listing.collect_events()[-1]
        assert isinstance(change, Listing.PriceChanged)
        assert (change.previous, change.price, change.rule, change.compensates) == (
            gbp("20.00"), gbp("22.50"), "beat-lowest", [])
        assert change.meta.source == "experiment" and change.meta.actor_id == "alice"
        assert listing.last_price_change == change.originator_version == 2


class TestGuardrailChanges:
    @pytest.mark.parametrize("floor, ceiling, field", [
        ("25.00", None, "floor"),       # the current price 20.00 would be below the new floor
        (None, "15.00", "ceiling"),     # ... or above the new ceiling
    ])
    def test_guardrails_that_would_put_the_current_price_outside_are_refused(self, floor, ceiling, field):
        listing = mug("20.00")
        error = refused(listing.set_guardrails, guardrails(floor, ceiling), meta())
        assert isinstance(error, InvariantViolated) and error.field == field
        assert listing.version == 1 and listing.guardrails == guardrails()

    def test_guardrails_that_keep_the_price_inside_are_set(self):
        listing = mug("20.00")
        assert listing.set_guardrails(guardrails("20.00", "20.00"), meta())
        assert listing.guardrails.floor == gbp("20.00") and listing.version == 2

    def test_unchanged_guardrails_record_nothing(self):
        listing = mug()
        assert listing.set_guardrails(guardrails(), meta()) is False
        assert listing.version == 1

    def test_removing_the_guardrails_leaves_the_price_unbounded(self):
        listing = mug()
        listing.set_guardrails(Guardrails(), meta())
        assert listing.change_price(gbp("999.99"), meta())


# -- compensation -----------------------------------------------------------------------------------
class TestCompensation:
    def test_a_compensation_names_the_versions_it_compensates(self):
        listing = mug("20.00")
        listing.change_price(gbp("25.00"), meta())  # v2
        listing.change_price(gbp("30.00"), meta())  # v3
        assert listing.restore_price(gbp("20.00"), [3, 2], meta(source="rollback", reason="bad rule"))
        compensation = listing.collect_events()[-1]
        assert isinstance(compensation, Listing.PriceChanged)
        assert compensation.compensates == [2, 3]
        assert (compensation.previous, compensation.price) == (gbp("30.00"), gbp("20.00"))
        assert compensation.meta.source == "rollback" and compensation.meta.reason == "bad rule"

    def test_only_a_rollback_may_compensate(self):
        listing = mug()
        listing.change_price(gbp("25.00"), meta())
        assert refused(listing.restore_price, gbp("20.00"), [2], meta(source="manual")).field == "source"
        assert listing.version == 2

    def test_a_compensation_still_respects_the_current_guardrails(self):
        listing = mug("12.00")
        listing.change_price(gbp("30.00"), meta())
        listing.set_guardrails(guardrails("25.00", "40.00"), meta())
        assert isinstance(refused(listing.restore_price, gbp("12.00"), [2], meta(source="rollback")),
                          InvariantViolated)
        assert listing.price == gbp("30.00")


# -- facts --------------------------------------------------------------------------------------
class TestFacts:
    def test_an_observation_batch_has_one_event_per_observation_at_business_time(self):
        seen_at = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
        observations = [Observation(uuid4(), f"rival-{i}", gbp("19.00"), seen_at, "scraper") for i in range(3)]
        batch = ObservationBatch.record(uuid4(), "GBP", observations, meta())
        events = batch.collect_events()
        assert [type(e).__name__ for e in events] == ["Received"] + ["CompetitorPriceObserved"] * 3
        assert all(e.meta.occurred_at == seen_at for e in events[1:])

    def test_an_observation_in_another_currency_names_its_index(self):
        observations = [Observation(uuid4(), "r", gbp("1.00"), NOW, "s"),
                        Observation(uuid4(), "r", Money.of("1.00", "USD"), NOW, "s")]
        assert refused(ObservationBatch.record, uuid4(), "GBP", observations, meta()).field == \
            "observations[1].currency"

    def test_a_negative_quantity_is_a_return_with_its_own_event(self):
        lines = [SaleLine(uuid4(), 2, gbp("20.00"), "o-1", "t-1", NOW),
                 SaleLine(uuid4(), -1, gbp("20.00"), "o-1", "t-2", NOW)]
        events = SalesBatch.record(uuid4(), "GBP", lines, meta()).collect_events()
        assert [type(e).__name__ for e in events] == ["Received", "Sold", "Returned"]
        assert events[2].quantity == 1  # the Returned event counts units returned
        assert lines[1].revenue == gbp("-20.00")

    def test_a_zero_quantity_sale_is_refused(self):
        lines = [SaleLine(uuid4(), 0, gbp("20.00"), "o", "t", NOW)]
        assert refused(SalesBatch.record, uuid4(), "GBP", lines, meta()).field == "sales[0].quantity"

    def test_empty_batches_are_refused(self):
        assert refused(ObservationBatch.record, uuid4(), "GBP", [], meta()).field == "observations"
        assert refused(SalesBatch.record, uuid4(), "GBP", [], meta()).field == "sales"



def test_a_plain_price_change_cannot_pose_as_a_rule_or_a_rollback():
    """Automated changes go through reprice() (stops, caps, cooldown); compensations through
    restore_price() (naming what they compensate). The aggregate refuses them here, whatever the edge."""
    listing = mug("20.00")
    for source in ("rule", "rollback"):
        with pytest.raises(InvalidValue) as refused:
            listing.change_price(gbp("21.00"), meta(source=source))
        assert refused.value.field == "source"
    assert listing.change_price(gbp("21.00"), meta(source="experiment"))


# -- copies handed out from the aggregate cache --------------------------------------------------
def _through_every_kind_of_change() -> Listing:
    from dataclasses import replace

    from domain.rules import Proposal

    listing = mug()
    listing.change_price(gbp("22.00"), meta())
    listing.set_guardrails(guardrails("9.00", "45.00"), meta())
    rule = uuid4()
    listing.assign_rule(rule, meta())
    listing.reprice(Proposal(gbp("21.00"), ("match the cheapest rival",), ("batch/1",)), rule, 1, "obs:1",
                    replace(meta("rule"), occurred_at=NOW))
    listing.restore_price(gbp("20.00"), [2], meta("rollback"))
    listing.collect_events()
    return listing


def test_a_listing_holds_only_immutable_values_so_its_cheap_copy_is_a_deep_copy():
    """Listing.__deepcopy__ copies the attributes and a new pending list, relying on every value
    being immutable. A mutable attribute added later (a list, a dict) would be shared between the
    cached listing and each command's copy: this test names it."""
    listing = _through_every_kind_of_change()
    shared = {name: type(value).__name__ for name, value in vars(listing).items()
              if name != "_pending_events" and not _immutable(value)}
    assert not shared, f"mutable state on Listing: {shared}"


def _immutable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def test_a_copy_of_a_listing_changes_apart_from_the_original():
    import copy

    original = _through_every_kind_of_change()
    state, version = dict(vars(original)), original.version
    duplicate = copy.deepcopy(original)
    assert vars(duplicate) == vars(original) and duplicate._pending_events is not original._pending_events
    duplicate.change_price(gbp("30.00"), meta())
    assert (original.version, original.price, original.pending_events) == (version, gbp("20.00"), [])
    assert vars(original) == state and duplicate.price == gbp("30.00")
