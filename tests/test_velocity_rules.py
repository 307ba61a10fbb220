"""The velocity rules' maths (domain/velocity.py) on their own: stock_runway raises only while the
stock runs out before the restock at the forecast rate, stale_listing lowers only after N days
without a sale, neither ever moves the wrong way or leaves the floor-ceiling band, and each holds
saying why when an input is missing. No database."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import codec
from domain.errors import DomainError
from domain.listing import Automation, Guardrails, Listing, StockCount
from domain.meta import EventMeta
from domain.money import Money
from domain.rules import ListingFacts, Rule, evaluate
from domain.velocity import ForecastRun, Velocity, days_without_sale

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
TODAY = NOW.date()


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


def facts(price: str = "20.00", floor: str | None = "10.00", ceiling: str | None = "40.00") -> ListingFacts:
    return ListingFacts(gbp(price), None if floor is None else gbp(floor), None if ceiling is None else gbp(ceiling))


def forecast(per_day: str = "2", days: int = 90, hours_old: float = 3, upper: str | None = None,
             refusal: str | None = None) -> ForecastRun:
    if refusal:
        return ForecastRun("run-f", NOW - timedelta(hours=hours_old), refusal=refusal)
    return ForecastRun("run-f", NOW - timedelta(hours=hours_old), TODAY, (Decimal(per_day),) * days,
                       (Decimal(upper or per_day),) * days)


def stocked(counted: int | None = 10, sold: int = 0, restock_in: int | None = 14, **kw) -> Velocity:
    return Velocity(listed_on=TODAY - timedelta(days=200), forecast=kw.pop("run", forecast()), counted=counted,
                    counted_at=None if counted is None else NOW - timedelta(days=1), sold_since_count=sold,
                    restock_on=None if restock_in is None else TODAY + timedelta(days=restock_in), **kw)


RUNWAY = Rule.define("stock_runway", "GBP", percent="5")
STALE = Rule.define("stale_listing", "GBP", percent="10", days=14)


# -- stock_runway --------------------------------------------------------------------------------
@pytest.mark.parametrize("velocity, listing, price, reason", [
    # 10 on hand, 2 a day, restock in 14 days: a buyer finds none on day 5 -> up 5%
    (stocked(), facts(), "21.00", "in 5 day(s)"),
    (stocked(counted=40, sold=20), facts(), "21.00", "stock on hand 20 (counted 40"),
    # 28 on hand lasts exactly the 14 days at 2 a day
    (stocked(counted=28), facts(), None, "the stock lasts until the restock"),
    (stocked(counted=10, sold=12), facts(), None, "no stock on hand"),
    (stocked(counted=None), facts(), None, "no stock count recorded"),
    (stocked(restock_in=None), facts(), None, "no restock date recorded"),
    (stocked(restock_in=0), facts(), None, "today or past"),
    (stocked(run=None), facts(), None, "no forecast model run"),
    (stocked(run=forecast(refusal="too few sales")), facts(), None, "gave no forecast: too few sales"),
    (stocked(run=forecast(hours_old=72)), facts(), None, "older than the rule's 48 h"),
    (stocked(), facts(price="40.00"), None, "at the ceiling"),
    (stocked(), facts(price="39.00"), "40.00", "held at the ceiling"),
    (stocked(), facts(ceiling=None), "21.00", "raise by 5%"),
    (None, facts(), None, "no stock, forecast or sales facts"),
])
def test_stock_runway_raises_only_when_stock_runs_out_before_restock(velocity, listing, price, reason):
    proposal = evaluate(RUNWAY, listing, [], NOW, velocity=velocity)
    assert (None if proposal.price is None else str(proposal.price.amount)) == price
    assert any(reason in step for step in proposal.reasons), proposal.reasons


def test_stock_runway_cites_the_forecast_run_stock_and_restock():
    proposal = evaluate(RUNWAY, facts(), [], NOW, velocity=stocked(counted=12, sold=2, run=forecast(upper="3")))
    assert proposal.inputs["forecast_run"] == "run-f" and proposal.inputs["stock_on_hand"] == "10"
    assert proposal.inputs["restock_on"] == str(TODAY + timedelta(days=14))
    assert "forecast run run-f: 28.0 units until the restock (80% upper bound 42.0)" in proposal.reasons


def test_a_forecast_shorter_than_the_wait_uses_its_average_day_beyond_it():
    short = ForecastRun("run-s", NOW, TODAY, (Decimal(1),) * 3, (Decimal(2),) * 3)
    assert short.demand(TODAY, TODAY + timedelta(days=10)) == 10
    assert short.runway(TODAY, 5, TODAY + timedelta(days=10)) == 5
    assert short.runway(TODAY, 10, TODAY + timedelta(days=10)) is None


def test_charm_rounding_that_would_undo_a_raise_holds():
    rule = Rule.define("stock_runway", "GBP", percent="1", rounding=".99")
    proposal = evaluate(rule, facts(price="19.99"), [], NOW, velocity=stocked())  # 20.19 rounds down to 19.99
    assert proposal.price is None and "does not raise" in proposal.reasons[-1]


# -- stale_listing -------------------------------------------------------------------------------
@pytest.mark.parametrize("last_sale_ago, listing, price, reason", [
    (20, facts(), "18.00", "20 day(s) without a sale"),
    (14, facts(), "18.00", "14 day(s) without a sale"),
    (13, facts(), None, "the rule waits for 14"),
    (None, facts(), "18.00", "no sale since it was listed"),  # listed 200 days ago, never sold
    (30, facts(floor="19.00"), "19.00", "held at the floor"),
    (30, facts(floor="20.00"), None, "at the floor"),
    (30, facts(floor=None), "18.00", "lower by 10%"),
])
def test_stale_listing_lowers_only_after_n_days_without_a_sale(last_sale_ago, listing, price, reason):
    velocity = stocked(last_sale_on=None if last_sale_ago is None else TODAY - timedelta(days=last_sale_ago))
    proposal = evaluate(STALE, listing, [], NOW, velocity=velocity)
    assert (None if proposal.price is None else str(proposal.price.amount)) == price
    assert any(reason in step for step in proposal.reasons), proposal.reasons
    assert proposal.inputs["days_without_sale"] == str(days_without_sale(velocity, NOW))


@pytest.mark.parametrize("stepped_ago, price, reason", [
    (5, None, "5 day(s) counted; the rule waits for 14"),     # 30 days without a sale, but a step 5 days ago
    (14, "18.00", "counting from then"),
    (40, "18.00", "30 day(s) without a sale"),                # a step before the last sale: the sale counts
])
def test_each_step_down_waits_another_n_days_without_a_sale(stepped_ago, price, reason):
    listing = replace(facts(), last_automated_at=NOW - timedelta(days=stepped_ago))
    proposal = evaluate(STALE, listing, [], NOW, velocity=stocked(last_sale_on=TODAY - timedelta(days=30)))
    assert (None if proposal.price is None else str(proposal.price.amount)) == price
    assert any(reason in step for step in proposal.reasons), proposal.reasons


# -- properties: never the wrong way, never outside the band ----------------------------------------
prices = st.decimals("1.00", "500.00", places=2)
percents = st.decimals("0.01", "99.99", places=2)


@settings(max_examples=300, deadline=None)
@given(price=prices, low=st.decimals("0", "1", places=2), high=st.decimals("1", "3", places=2), percent=percents,
       per_day=st.decimals("0", "20", places=1), counted=st.integers(0, 500), sold=st.integers(-5, 500),
       restock_in=st.integers(-3, 400), last_sale_ago=st.none() | st.integers(0, 400), days=st.integers(1, 365),
       stepped_ago=st.none() | st.integers(0, 400),
       rounding=st.sampled_from(["none", ".99", ".95", "whole"]), kind=st.sampled_from(["stock_runway", "stale_listing"]))
def test_a_velocity_rule_never_moves_the_wrong_way_or_outside_floor_and_ceiling(
        price, low, high, percent, per_day, counted, sold, restock_in, last_sale_ago, days, stepped_ago, rounding, kind):
    floor, ceiling = (price * low).quantize(Decimal("0.01")), (price * high).quantize(Decimal("0.01"))
    listing = ListingFacts(gbp(str(price)), gbp(str(floor)) if floor > 0 else None, gbp(str(ceiling)),
                           last_automated_at=None if stepped_ago is None else NOW - timedelta(days=stepped_ago))
    rule = Rule.define(kind, "GBP", percent=percent, rounding=rounding, days=days if kind == "stale_listing" else None)
    velocity = stocked(counted=counted, sold=sold, restock_in=restock_in, run=forecast(str(per_day)),
                       last_sale_on=None if last_sale_ago is None else TODAY - timedelta(days=last_sale_ago))
    proposal = evaluate(rule, listing, [], NOW, velocity=velocity)
    if proposal.price is None:
        return
    amount = proposal.price.amount
    assert (amount > price) if kind == "stock_runway" else (amount < price)
    assert listing.floor is None or amount >= listing.floor.amount
    assert amount <= ceiling
    if kind == "stock_runway":
        assert restock_in > 0 and counted - sold > 0 and per_day * restock_in > counted - sold
    else:
        assert days_without_sale(velocity, NOW) >= days and (stepped_ago is None or stepped_ago >= days)


# -- definitions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("params, field", [
    ({"kind": "stock_runway"}, "percent"),
    ({"kind": "stock_runway", "percent": "0"}, "percent"),
    ({"kind": "stock_runway", "amount": "1"}, "amount"),
    ({"kind": "stock_runway", "percent": "5", "days": 3}, "days"),
    ({"kind": "stale_listing", "percent": "5"}, "days"),
    ({"kind": "stale_listing", "percent": "5", "days": 0}, "days"),
    ({"kind": "stale_listing", "percent": "5", "days": True}, "days"),
    ({"kind": "stale_listing", "percent": "5", "days": 400}, "days"),
    ({"kind": "stale_listing", "percent": "5", "days": 7, "max_run_age_hours": 24}, "max_run_age_hours"),
    ({"kind": "beat_lowest", "percent": "5", "days": 7}, "days"),
])
def test_definitions_refused_naming_the_field(params, field):
    with pytest.raises(DomainError) as refused:
        Rule.define(currency="GBP", **params)
    assert refused.value.field == field


def test_the_rules_and_their_inputs_round_trip_through_the_codec_and_older_forms_keep_theirs():
    transcoder = codec._MAPPER.transcoder
    rule = Rule.define("stale_listing", "GBP", percent="10", days=14)
    assert transcoder.decode(transcoder.encode(rule)) == rule
    assert b'"days"' not in transcoder.encode(Rule.define("fixed", "GBP", amount="3"))
    automation = Automation(None, 1, "model_run:r", gbp("18.00"), inputs={"forecast_run": "r", "stock_on_hand": "3"})
    assert transcoder.decode(transcoder.encode(automation)) == automation
    assert b'"inputs"' not in transcoder.encode(Automation(None, 1, "x", None))


# -- the stock count on the listing ----------------------------------------------------------------
def meta(at: datetime = NOW) -> EventMeta:
    return EventMeta(shop_id="s", actor_id="pytest", actor_kind="user", source="manual", reason="",
                     command_id="c", correlation_id="c", causation_id="c", occurred_at=at)


def mug() -> Listing:
    return Listing.register(uuid4(), "e", "s", "t", "active", gbp("20.00"), Guardrails(), meta())


@pytest.mark.parametrize("quantity, restock_on, field", [
    (-1, None, "quantity"), (True, None, "quantity"), (1.5, None, "quantity"), (10**9, None, "quantity"),
    (3, TODAY - timedelta(days=1), "restock_on"), (3, "2026-12-20", "restock_on"), (3, NOW, "restock_on"),
])
def test_a_stock_count_refuses_nonsense_naming_the_field(quantity, restock_on, field):
    with pytest.raises(DomainError) as refused:
        mug().count_stock(quantity, restock_on, meta())
    assert refused.value.field == field


def test_a_stock_count_is_an_event_on_the_listing_and_replays():
    listing = mug()
    listing.count_stock(12, date(2026, 12, 21), meta())
    listing.count_stock(12, None, meta(NOW + timedelta(hours=1)))  # a recount is recorded even when equal
    events = listing.collect_events()
    assert [type(e).__name__ for e in events] == ["Registered", "StockCounted", "StockCounted"]
    assert listing.stock == StockCount(12, None, NOW + timedelta(hours=1), 3)
    stored = [codec._MAPPER.to_stored_event(e) for e in events]
    replayed = None
    for s in stored:
        replayed = codec.to_domain_event(s).mutate(replayed)
    assert replayed.stock == listing.stock
