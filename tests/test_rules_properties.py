"""Property-based tests (hypothesis) of automated repricing in the pure domain.

Random sequences of competitor observations, rule revisions, shop and global stops and resumes,
manual price changes, changes of the automation limits and the passing of time are applied to a
listing exactly as the command handler applies them (evaluate the rule, let Listing.reprice
decide). After every step the guardrails must hold:

- the price never leaves the fixed floor/ceiling, and an automated change never leaves the band
  automated changes respect (or, starting outside it, only moves towards it);
- no automated step exceeds the maximum step;
- the daily cap and the cooldown hold;
- a stopped shop (or a global stop) gets no automated change;
- every automated change and refusal names its cause and the rule version that made it;
- replaying the recorded events rebuilds the same listing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.automation import AutomationSwitch, stop_reason
from domain.errors import DomainError
from domain.listing import CHANGED, DAY, REFUSED, Guardrails, Listing
from domain.meta import EventMeta
from domain.money import Money
from domain.pricing_rule import PricingRule
from domain.rules import CompetitorPrice, Rule, evaluate
from domain.shop import Shop

START = datetime(2026, 11, 25, 0, 0, tzinfo=timezone.utc)
SHOP = str(uuid4())
CENT = Decimal("0.01")


def gbp(cents: int) -> Money:
    return Money(Decimal(cents) * CENT, "GBP")


def meta(at: datetime, source: str = "manual", reason: str = "because", actor: str = "alice") -> EventMeta:
    return EventMeta(shop_id=SHOP, actor_id=actor, actor_kind="user", source=source, reason=reason,
                     command_id="c", correlation_id="c", causation_id="c", occurred_at=at)


# -- strategies --------------------------------------------------------------------------------
percents = st.integers(1, 60).map(Decimal)


@st.composite
def rules(draw) -> Rule:
    kind = draw(st.sampled_from(["beat_lowest", "match_lowest", "match_median", "offset_from_average",
                                 "cost_plus", "fixed"]))
    params: dict = {}
    if kind in ("beat_lowest", "offset_from_average"):
        if draw(st.booleans()):
            params["amount"] = Decimal(draw(st.integers(0, 500))) * CENT
        else:
            params["percent"] = draw(percents)
    if kind == "offset_from_average":
        params["direction"] = draw(st.sampled_from(["above", "below"]))
    if kind == "cost_plus":
        params["percent"] = draw(st.integers(0, 90).map(Decimal))
    if kind == "fixed":
        params["amount"] = Decimal(draw(st.integers(1, 8000))) * CENT
    return Rule.define(
        kind=kind, currency="GBP", rounding=draw(st.sampled_from(["none", ".99", ".95", "whole"])),
        exclude=draw(st.lists(st.sampled_from(COMPETITORS), max_size=2, unique=True)),
        max_age_minutes=draw(st.sampled_from([30, 240, 1440, None])),
        no_competition=draw(st.sampled_from(["hold", "ceiling"])),
        below_floor=draw(st.sampled_from(["hold_at_floor", "ignore_competitor"])), **params)


COMPETITORS = ["etsy:a", "etsy:b", "etsy:c", "etsy:d", "etsy:e"]


@st.composite
def limits(draw) -> dict:
    return {
        "min_margin": draw(st.none() | st.integers(0, 60).map(Decimal)),
        "max_step_percent": draw(st.none() | st.integers(1, 50).map(Decimal)),
        "max_daily_changes": draw(st.none() | st.integers(1, 8)),
        "cooldown_minutes": draw(st.none() | st.integers(0, 240)),
    }


@st.composite
def listings(draw) -> tuple[int, Guardrails]:
    """(price in cents, guardrails) with the price inside floor and ceiling."""
    floor = draw(st.integers(100, 3000))
    ceiling = draw(st.integers(floor, floor + 5000))
    cost = draw(st.integers(0, floor))
    price = draw(st.integers(floor, ceiling))
    rails = Guardrails(floor=gbp(floor), ceiling=gbp(ceiling), cost=gbp(cost))
    chosen = draw(limits())
    candidate = replace(rails, **chosen)
    try:
        candidate.check("GBP")
        rails = candidate
    except DomainError:  # e.g. a margin floor above the ceiling: keep the limits that fit
        rails = replace(rails, **{**chosen, "min_margin": None})
    return price, rails


observation = st.tuples(st.sampled_from(COMPETITORS), st.integers(50, 9000), st.integers(0, 3000))
steps = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 600)),
    st.tuples(st.just("observe"), st.lists(observation, min_size=1, max_size=6)),
    st.tuples(st.just("observe"), st.lists(observation, min_size=1, max_size=6)),  # the common case
    st.tuples(st.just("revise"), rules()),
    st.tuples(st.just("stop"), st.sampled_from(["shop", "global"])),
    st.tuples(st.just("resume"), st.sampled_from(["shop", "global"])),
    st.tuples(st.just("manual"), st.integers(50, 9000)),
    st.tuples(st.just("limits"), limits()),
)


# -- the world the steps act on ------------------------------------------------------------------
class World:
    def __init__(self, price: int, rails: Guardrails, rule: Rule):
        self.now = START
        self.shop = Shop.open("t", "Hedgerow", "GBP", "etsy", meta(self.now))
        self.switch = AutomationSwitch(tenant_id="t", meta=meta(self.now))
        self.rule = PricingRule.define(self.shop.id, "the rule", rule, meta(self.now))
        self.listing = Listing.register(self.shop.id, "e", "s", "t", "active", gbp(price), rails, meta(self.now))
        self.listing.assign_rule(self.rule.id, meta(self.now))
        self.observations: list[CompetitorPrice] = []
        self.automated: list[tuple[datetime, Money, Money]] = []  # (at, previous, price)
        self.causes = 0

    def stopped(self) -> str | None:
        return stop_reason(self.shop.automation_stop, self.switch.stopped_by)

    def reprice(self, cause: str) -> None:
        listing, rule = self.listing, self.rule
        previous, guardrails, stopped = listing.price, listing.guardrails, self.stopped()
        events_before = len(listing.pending_events)
        proposal = evaluate(rule.rule, listing.pricing_facts(), self.observations, self.now)
        verdict = listing.reprice(proposal, rule.id, rule.rule_version, cause, meta(self.now, "rule"), stopped)
        new_events = listing.pending_events[events_before:]
        if verdict.outcome == CHANGED:
            self.check_automated_change(previous, guardrails, stopped)
            [event] = new_events
            assert isinstance(event, Listing.PriceChanged)
            self.check_names_cause(event, cause)
            assert (event.previous, event.price) == (previous, listing.price)
        elif verdict.outcome == REFUSED:
            [event] = new_events
            assert isinstance(event, Listing.AutomatedChangeRefused) and event.reason
            self.check_names_cause(event, cause)
            assert listing.price == previous
        else:
            assert new_events == [] and listing.price == previous

    def check_automated_change(self, previous: Money, g: Guardrails, stopped: str | None) -> None:
        price, now = self.listing.price, self.now
        assert stopped is None, "an automated change while automation is stopped"
        floor, ceiling = g.automated_floor(), g.ceiling
        inside = lambda p: (floor is None or p.amount >= floor.amount) and (ceiling is None or p.amount <= ceiling.amount)  # noqa: E731
        if inside(previous):
            assert inside(price), f"{previous} -> {price} left the band [{floor}, {ceiling}]"
        else:  # only a manual change or new limits can put it outside: it may only move back
            assert distance(price, floor, ceiling) < distance(previous, floor, ceiling)
        if g.max_step_percent is not None:
            assert abs(price.amount - previous.amount) <= previous.amount * g.max_step_percent / 100
        if g.max_daily_changes is not None:
            within_day = [at for at, _, _ in self.automated if at > now - DAY]
            assert len(within_day) + 1 <= g.max_daily_changes
        if g.cooldown_minutes and self.automated:
            assert now - self.automated[-1][0] >= timedelta(minutes=g.cooldown_minutes)
        self.automated.append((now, previous, price))

    def check_names_cause(self, event, cause: str) -> None:
        a = event.automation
        assert (a.cause, a.rule_id, a.rule_version) == (cause, self.rule.id, self.rule.rule_version)
        assert event.meta.causation_id == cause and event.meta.source == "rule"
        assert a.reasons, "an automated decision without its reasons"

    def step(self, step) -> None:
        kind, arg = step
        if kind == "tick":
            self.now += timedelta(minutes=arg)
        elif kind == "observe":
            self.causes += 1
            for i, (competitor, cents, age) in enumerate(arg):
                self.observations.append(CompetitorPrice(f"obs:{self.causes}/{i}", competitor, gbp(cents),
                                                         self.now - timedelta(minutes=age)))
            self.reprice(f"observation:{self.causes}")
        elif kind == "revise":
            if self.rule.revise(arg, meta(self.now)):
                self.reprice(f"rule:{self.rule.id}/v{self.rule.rule_version}")
        elif kind in ("stop", "resume"):
            target = self.shop if arg == "shop" else self.switch
            flip = {("stop", "shop"): Shop.stop_automation, ("resume", "shop"): Shop.resume_automation,
                    ("stop", "global"): AutomationSwitch.stop, ("resume", "global"): AutomationSwitch.resume}
            flip[kind, arg](target, meta(self.now, reason=f"{kind} {arg}"))
        elif kind == "manual":
            self.manual(gbp(arg))
        elif kind == "limits":
            try:
                self.listing.set_guardrails(replace(self.listing.guardrails, **arg), meta(self.now))
            except DomainError:
                pass  # refused as a whole: nothing changed

    def manual(self, price: Money) -> None:
        g, before = self.listing.guardrails, self.listing.price
        allowed = g.floor.amount <= price.amount <= g.ceiling.amount
        try:
            self.listing.change_price(price, meta(self.now))
            assert allowed
        except DomainError:
            assert not allowed and self.listing.price == before


def distance(price: Money, floor: Money | None, ceiling: Money | None) -> Decimal:
    if floor is not None and price.amount < floor.amount:
        return floor.amount - price.amount
    if ceiling is not None and price.amount > ceiling.amount:
        return price.amount - ceiling.amount
    return Decimal(0)


# -- the properties ------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listing=listings(), rule=rules(), script=st.lists(steps, min_size=1, max_size=40))
def test_guardrails_hold_over_any_sequence(listing, rule, script):
    price, rails = listing
    world = World(price, rails, rule)
    for step in script:
        world.step(step)
        g = world.listing.guardrails
        assert g.floor.amount <= world.listing.price.amount <= g.ceiling.amount  # fixed bounds: always
    rebuilt = None
    for event in world.listing.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert (rebuilt.price, rebuilt.guardrails, rebuilt.rule_id, rebuilt.last_automated_at) == (
        world.listing.price, world.listing.guardrails, world.listing.rule_id, world.listing.last_automated_at)
    assert tuple(rebuilt.automated_at) == tuple(world.listing.automated_at)


@settings(max_examples=200, deadline=None)
@given(listing=listings(), rule=rules(), script=st.lists(steps, min_size=1, max_size=30))
def test_a_stopped_shop_gets_no_automated_change(listing, rule, script):
    price, rails = listing
    world = World(price, rails, rule)
    world.shop.stop_automation(meta(world.now, reason="emergency"))
    script = [s for s in script if s[0] != "resume"]
    before = len(world.listing.pending_events)
    for step in script:
        world.step(step)
    automated = [e for e in world.listing.pending_events[before:]
                 if isinstance(e, Listing.PriceChanged) and e.automation is not None]
    assert automated == []
    refusals = [e for e in world.listing.pending_events[before:] if isinstance(e, Listing.AutomatedChangeRefused)]
    assert all("automation stopped" in e.reason for e in refusals)


@settings(max_examples=150, deadline=None)
@given(listing=listings(), rule=rules(),
       observations=st.lists(st.lists(observation, min_size=1, max_size=5), min_size=1, max_size=30),
       gaps=st.lists(st.integers(0, 120), min_size=30, max_size=30))
def test_cap_and_cooldown_hold_over_the_whole_history(listing, rule, observations, gaps):
    """The same checks, over the recorded events afterwards rather than step by step."""
    price, rails = listing
    world = World(price, rails, rule)
    for batch, gap in zip(observations, gaps):
        world.now += timedelta(minutes=gap)
        world.step(("observe", batch))
    g = world.listing.guardrails
    times = [e.meta.occurred_at for e in world.listing.pending_events
             if isinstance(e, Listing.PriceChanged) and e.automation is not None]
    for i, at in enumerate(times):
        if g.max_daily_changes is not None:
            assert sum(1 for t in times[: i + 1] if t > at - DAY) <= g.max_daily_changes
        if g.cooldown_minutes and i:
            assert at - times[i - 1] >= timedelta(minutes=g.cooldown_minutes)


@settings(max_examples=300, deadline=None)
@given(listing=listings(), rule=rules(),
       proposals=st.lists(st.tuples(st.integers(0, 180), st.integers(50, 9000), st.booleans()),
                          min_size=1, max_size=40))
def test_any_proposal_at_any_time_respects_every_limit(listing, rule, proposals):
    """Proposals straight at the listing (bypassing the rule) reach the cap, the cooldown and the
    step far more often than market data does: the aggregate alone must hold the line."""
    from domain.rules import Proposal

    price, rails = listing
    world = World(price, rails, rule)
    for i, (gap, cents, stopped) in enumerate(proposals):
        world.now += timedelta(minutes=gap)
        previous, guardrails = world.listing.price, world.listing.guardrails
        stop = "shop automation stopped by test: drill" if stopped else None
        cause = f"observation:{i}"
        verdict = world.listing.reprice(Proposal(gbp(cents), ("direct",), ()), world.rule.id, 1, cause,
                                        meta(world.now, "rule"), stop)
        if verdict.outcome == CHANGED:
            world.check_automated_change(previous, guardrails, stop)
            world.check_names_cause(world.listing.pending_events[-1], cause)
        else:
            assert world.listing.price == previous
