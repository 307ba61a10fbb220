"""A listing on a marketplace and its price: the aggregate that decides every price change."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, InvariantViolated
from domain.meta import EventMeta, Source
from domain.money import Money, minor_unit
from domain.rules import ListingFacts, Proposal, RecommendationRun

STATUSES = ("active", "inactive", "draft", "sold_out")
MAX_TITLE = 500
DAY = timedelta(hours=24)
MAX_COOLDOWN_MINUTES = 7 * 24 * 60
MAX_STOCK = 10_000_000


@dataclass(frozen=True, slots=True)
class StockCount:
    """The stock on hand counted at `counted_at` (business time) and the next restock, if known.
    Sales after the count reduce it on the read side (projections/velocity.py): the count is a fact
    recorded once, the sales are their own facts, and stock on hand is count minus net units sold since."""

    quantity: int
    restock_on: date | None
    counted_at: datetime
    version: int  # the listing's version of the StockCounted event


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Bounds that every price of the listing must respect. None means unbounded."""

    floor: Money | None = None
    ceiling: Money | None = None
    cost: Money | None = None
    # Limits on automated (rule-made) changes only; manual changes answer to floor and ceiling alone.
    min_margin: Decimal | None = None        # percent of the price: derives a floor from cost
    max_step_percent: Decimal | None = None  # largest move of one automated change
    max_daily_changes: int | None = None     # automated changes in any 24 hours
    cooldown_minutes: int | None = None      # least time between two automated changes

    def check(self, currency: str) -> None:
        for name in ("floor", "ceiling", "cost"):
            value = getattr(self, name)
            if value is not None and value.currency != currency:
                raise InvalidValue(name, f"currency {value.currency} does not match the listing's {currency}")
        if self.floor and self.ceiling and self.floor.amount > self.ceiling.amount:
            raise InvariantViolated("floor", f"floor {self.floor} is above ceiling {self.ceiling}")
        if self.cost is not None and self.cost.amount < 0:  # zero is a real cost (digital goods); below is not
            raise InvalidValue("cost", "must not be negative")
        self._check_automation_limits()

    def _check_automation_limits(self) -> None:
        if self.min_margin is not None:
            if not 0 <= self.min_margin < 100:
                raise InvalidValue("min_margin", "must be at least 0 and below 100 (percent of the price)")
            if self.cost is None:
                raise InvalidValue("min_margin", "a minimum margin needs the listing's cost")
            derived = self.margin_floor()
            if self.ceiling and derived.amount > self.ceiling.amount:
                raise InvariantViolated("min_margin", f"cost {self.cost} at a {self.min_margin}% margin needs "
                                        f"at least {derived}, above the ceiling {self.ceiling}")
        if self.max_step_percent is not None and not 0 < self.max_step_percent <= 100:
            raise InvalidValue("max_step_percent", "must be above 0 and at most 100")
        if self.max_daily_changes is not None and not 1 <= self.max_daily_changes <= 10_000:
            raise InvalidValue("max_daily_changes", "must be from 1 to 10000 (stop automation to allow none)")
        if self.cooldown_minutes is not None and not 0 <= self.cooldown_minutes <= MAX_COOLDOWN_MINUTES:
            raise InvalidValue("cooldown_minutes", f"must be from 0 to {MAX_COOLDOWN_MINUTES}")

    def margin_floor(self) -> Money | None:
        """The lowest price that keeps `min_margin` on `cost` (margin as a share of the price)."""
        if self.cost is None or self.min_margin is None:
            return None
        amount = self.cost.amount / (1 - self.min_margin / 100)
        return Money(amount.quantize(minor_unit(self.cost.currency), ROUND_CEILING), self.cost.currency)

    def automated_floor(self) -> Money | None:
        """The floor an automated change respects: the higher of the fixed and the margin floor."""
        derived = self.margin_floor()
        if derived is None or (self.floor is not None and self.floor.amount >= derived.amount):
            return self.floor
        return derived

    def admit(self, price: Money, field: str = "price") -> None:
        if self.floor and price.amount < self.floor.amount:
            raise InvariantViolated(field, f"{price} is below the floor {self.floor}")
        if self.ceiling and price.amount > self.ceiling.amount:
            raise InvariantViolated(field, f"{price} is above the ceiling {self.ceiling}")


@dataclass(frozen=True, slots=True)
class Automation:
    """What an automated change (or its refusal) records beyond price and meta: which rule version,
    which cause, what the rule proposed, which guardrails clamped it, the rule's own steps, and what
    it read (observations, or a model run)."""

    rule_id: UUID
    rule_version: int
    cause: str                        # the event that caused it: an observation, a rule revision...
    proposed: Money | None            # the rule's proposal before guardrails
    clamps: tuple[str, ...] = ()      # each guardrail that moved the proposal, in words
    reasons: tuple[str, ...] = ()     # the rule's steps (Proposal.reasons)
    observations: tuple[str, ...] = ()  # refs of the observations the proposal used
    model_run: RecommendationRun | None = None  # the model run the proposal followed (optimise_profit)
    experiment: str | None = None     # "<experiment id>/<period>": a switchback experiment's period price (no rule)
    inputs: dict | None = None        # what a velocity rule read: forecast run, stock, days without sale (as text)


CHANGED, UNCHANGED, HELD, REFUSED = "changed", "unchanged", "held", "refused"
INACTIVE = "inactive"  # the listing is not for sale (draft, inactive, sold out): automation leaves it alone


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the listing makes of a rule's proposal. `price` is the listing's price afterwards."""

    outcome: str  # changed | unchanged (guardrails leave it where it is) | held (no proposal) | refused
    price: Money
    proposed: Money | None = None
    clamps: tuple[str, ...] = ()
    refusal: str | None = None


class Listing(Aggregate):
    # Defaults for state added after the first events were stored: snapshots taken before then
    # lack these attributes, and instances fall back to these (immutable) class values.
    rule_id = None            # the pricing rule assigned to this listing, if any
    stock = None              # the latest StockCount, if stock was ever counted
    automated_at = ()         # times (business time) of automated changes in the last 24 hours
    last_automated_at = None

    def __deepcopy__(self, memo) -> Listing:
        """The library hands out a deep copy of each aggregate it caches, once per command. Every
        attribute of a listing holds an immutable value (ids, text, Money, frozen Guardrails,
        tuples; a test keeps it so), and only the pending-events list is shared state: copying
        the attributes is a deep copy, at a fraction of copy.deepcopy's walk."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy._pending_events = list(self._pending_events)
        return copy

    @event("Registered")
    def __init__(
        self,
        shop_id: UUID,
        external_id: str,
        sku: str,
        title: str,
        status: str,
        price: Money,
        guardrails: Guardrails,
        meta: EventMeta,
    ):
        self.shop_id = shop_id
        self.external_id = external_id
        self.sku = sku
        self.title = title
        self.status = status
        self.price = price
        self.guardrails = guardrails
        self.last_price_change = 0  # version of the event that last set the price

    @classmethod
    def register(
        cls, shop_id: UUID, external_id: str, sku: str, title: str, status: str,
        price: Money, guardrails: Guardrails, meta: EventMeta,
    ) -> Listing:
        if status not in STATUSES:
            raise InvalidValue("status", f"must be one of {', '.join(STATUSES)}")
        guardrails.check(price.currency)
        guardrails.admit(price)
        return cls(shop_id=shop_id, external_id=external_id, sku=sku, title=title, status=status,
                   price=price, guardrails=guardrails, meta=meta)

    @property
    def currency(self) -> str:
        return self.price.currency

    # -- price -----------------------------------------------------------------------------
    def change_price(self, price: Money, meta: EventMeta, rule: str | None = None) -> bool:
        """Set a new price within the guardrails. Returns False when the price is unchanged."""
        if meta.source in (Source.RULE.value, Source.ROLLBACK.value):
            # Rules answer to the automation guardrails and stops (reprice), compensations name
            # what they compensate (restore_price): neither may come in through here.
            raise InvalidValue("source", f"a {meta.source} change cannot be made as a plain price change")
        self.price.same_currency(price, "price")
        self.guardrails.admit(price)
        if price == self.price:
            return False
        self._price_changed(price=price, previous=self.price, meta=meta, rule=rule, compensates=[])
        return True

    def restore_price(self, price: Money, compensates: list[int], meta: EventMeta) -> bool:
        """Compensate earlier price changes (named by version) by restoring an earlier price."""
        if meta.source != Source.ROLLBACK.value:
            raise InvalidValue("source", "a compensation must have source 'rollback'")
        self.guardrails.admit(price)
        if price == self.price:
            return False
        self._price_changed(price=price, previous=self.price, meta=meta, rule=None,
                            compensates=sorted(compensates))
        return True

    class PriceChanged(Aggregate.Event):
        """v2 adds `automation` (None for manual changes, imports and rollbacks)."""

        price: Money
        previous: Money
        meta: EventMeta
        rule: str | None
        compensates: list[int]
        automation: Automation | None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["automation"] = None

    @event(PriceChanged)
    def _price_changed(self, price: Money, previous: Money, meta: EventMeta, rule: str | None,
                       compensates: list[int], automation: Automation | None = None) -> None:
        self.price = price
        # The library applies the event before it bumps the version: this event's version is +1.
        self.last_price_change = self.version + 1
        if automation is not None:
            at = meta.occurred_at
            self.automated_at = tuple(t for t in self.automated_at if t > at - DAY) + (at,)
            self.last_automated_at = at

    # -- automated changes -----------------------------------------------------------------
    def pricing_facts(self) -> ListingFacts:
        """What a rule may know: price, cost, and the bounds automated changes respect."""
        g = self.guardrails
        return ListingFacts(price=self.price, floor=g.automated_floor(), ceiling=g.ceiling, cost=g.cost,
                            last_automated_at=self.last_automated_at)

    def reprice(self, proposal: Proposal, rule_id: UUID, rule_version: int, cause: str, meta: EventMeta,
                stopped: str | None = None) -> Verdict:
        """Apply a rule's proposal within every guardrail, recording the outcome.

        A change is clamped into the floor/ceiling and the maximum step, naming each clamp; when
        the automation is stopped (`stopped` says by whom and why), the daily cap is reached or
        the cooldown runs, the change is refused and the refusal is recorded. Holds and proposals
        that leave the price where it is record nothing. The event's causation id is `cause`.
        """
        if meta.source != Source.RULE.value:
            raise InvalidValue("source", "an automated change must have source 'rule'")
        if self.rule_id != rule_id:
            raise InvariantViolated("rule_id", f"rule {rule_id} is not the rule assigned to this listing")
        verdict = self.judge(proposal, meta.occurred_at, stopped)
        if verdict.outcome not in (CHANGED, REFUSED):
            return verdict
        meta = replace(meta, causation_id=cause)
        automation = Automation(rule_id, rule_version, cause, verdict.proposed, verdict.clamps,
                                tuple(proposal.reasons), tuple(proposal.used), proposal.model_run,
                                inputs=proposal.inputs)
        if verdict.outcome == CHANGED:
            self._price_changed(price=verdict.price, previous=self.price, meta=meta, rule=str(rule_id),
                                compensates=[], automation=automation)
        else:
            self._automated_change_refused(automation=automation, reason=verdict.refusal, meta=meta)
        return verdict

    def apply_experiment_price(self, proposal: Proposal, experiment_id: UUID, period: int, cause: str,
                               meta: EventMeta, stopped: str | None = None) -> Verdict:
        """A switchback experiment's price for one period, judged like a rule's proposal (guardrails,
        daily cap, cooldown, stops) and recorded with the experiment and period instead of a rule."""
        if meta.source != Source.EXPERIMENT.value:
            raise InvalidValue("source", "an experiment's change must have source 'experiment'")
        verdict = self.judge(proposal, meta.occurred_at, stopped)
        if verdict.outcome not in (CHANGED, REFUSED):
            return verdict
        meta = replace(meta, causation_id=cause)
        automation = Automation(None, 0, cause, verdict.proposed, verdict.clamps, tuple(proposal.reasons),
                                experiment=f"{experiment_id}/{period}")
        if verdict.outcome == CHANGED:
            self._price_changed(price=verdict.price, previous=self.price, meta=meta, rule=None, compensates=[],
                                automation=automation)
        else:
            self._automated_change_refused(automation=automation, reason=verdict.refusal, meta=meta)
        return verdict

    def judge(self, proposal: Proposal, now: datetime, stopped: str | None = None) -> Verdict:
        """What `reprice` would do at `now`, without doing it (also what a dry run shows)."""
        if proposal.price is None:
            return Verdict(HELD, self.price)
        self.price.same_currency(proposal.price, "price")
        target, clamps = self._within_bounds(proposal.price)
        if target == self.price:
            return Verdict(UNCHANGED, self.price, proposal.price, clamps)
        refusal = stopped or self._rate_limited(now)
        if refusal is None:
            target, step_clamp = self._within_step(target)
            clamps += step_clamp
            if target == self.price:
                refusal = f"the maximum step of {self.guardrails.max_step_percent}% cannot move {self.price} at all"
        if refusal is not None:
            return Verdict(REFUSED, self.price, proposal.price, clamps, refusal)
        return Verdict(CHANGED, target, proposal.price, clamps)

    def _within_bounds(self, price: Money) -> tuple[Money, tuple[str, ...]]:
        floor, ceiling = self.guardrails.automated_floor(), self.guardrails.ceiling
        if floor is not None and price.amount < floor.amount:
            why = "the margin floor" if floor != self.guardrails.floor else "the floor"
            return floor, (f"proposed {price} is below {why} {floor}: clamped to it",)
        if ceiling is not None and price.amount > ceiling.amount:
            return ceiling, (f"proposed {price} is above the ceiling {ceiling}: clamped to it",)
        return price, ()

    def _within_step(self, price: Money) -> tuple[Money, tuple[str, ...]]:
        step = self.guardrails.max_step_percent
        if step is None:
            return price, ()
        current, minor = self.price.amount, minor_unit(self.currency)
        # Bounds rounded towards the current price, so that no change exceeds the step.
        low = max((current * (1 - step / 100)).quantize(minor, ROUND_CEILING), minor)
        high = (current * (1 + step / 100)).quantize(minor, ROUND_FLOOR)
        bounded = min(max(price.amount, low), high)
        if bounded == price.amount:
            return price, ()
        return (Money(bounded, self.currency),
                (f"a move from {self.price} to {price} exceeds the maximum step of {step}%: clamped to {bounded}",))

    def _rate_limited(self, now: datetime) -> str | None:
        g = self.guardrails
        if g.max_daily_changes is not None:
            recent = [t for t in self.automated_at if t > now - DAY]
            if len(recent) >= g.max_daily_changes:
                return (f"{len(recent)} automated changes in the last 24 hours reach the daily cap of "
                        f"{g.max_daily_changes}; the next is possible after {(min(recent) + DAY).isoformat()}")
        if g.cooldown_minutes and self.last_automated_at is not None:
            ready = self.last_automated_at + timedelta(minutes=g.cooldown_minutes)
            if now < ready:
                return (f"cooling down for {g.cooldown_minutes} min after the automated change at "
                        f"{self.last_automated_at.isoformat()}; the next is possible from {ready.isoformat()}")
        return None

    @event("AutomatedChangeRefused")
    def _automated_change_refused(self, automation: Automation, reason: str, meta: EventMeta) -> None:
        pass  # the record is the point: "why didn't my price follow?" has an answer

    # -- rule assignment -------------------------------------------------------------------
    def assign_rule(self, rule_id: UUID, meta: EventMeta) -> bool:
        if rule_id == self.rule_id:
            return False
        self._rule_assigned(rule_id=rule_id, previous=self.rule_id, meta=meta)
        return True

    @event("RuleAssigned")
    def _rule_assigned(self, rule_id: UUID, previous: UUID | None, meta: EventMeta) -> None:
        self.rule_id = rule_id

    def unassign_rule(self, meta: EventMeta) -> bool:
        if self.rule_id is None:
            return False
        self._rule_unassigned(rule_id=self.rule_id, meta=meta)
        return True

    @event("RuleUnassigned")
    def _rule_unassigned(self, rule_id: UUID, meta: EventMeta) -> None:
        self.rule_id = None

    # -- stock ------------------------------------------------------------------------------
    def count_stock(self, quantity: int, restock_on: date | None, meta: EventMeta) -> None:
        """Record the stock on hand now and the next restock. Always an event, even with the same
        figures: a recount restarts the sales that count against it."""
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_STOCK:
            raise InvalidValue("quantity", f"must be a whole number of units from 0 to {MAX_STOCK}")
        if restock_on is not None:
            if not isinstance(restock_on, date) or isinstance(restock_on, datetime):
                raise InvalidValue("restock_on", "must be a calendar day (YYYY-MM-DD)")
            if restock_on < meta.occurred_at.date():
                raise InvalidValue("restock_on", f"{restock_on} is before the count ({meta.occurred_at.date()})")
        self._stock_counted(quantity=quantity, restock_on=None if restock_on is None else restock_on.isoformat(),
                            meta=meta)

    @event("StockCounted")
    def _stock_counted(self, quantity: int, restock_on: str | None, meta: EventMeta) -> None:
        restock = None if restock_on is None else date.fromisoformat(restock_on)
        self.stock = StockCount(quantity, restock, meta.occurred_at, self.version + 1)

    # -- what the marketplace shows -----------------------------------------------------------
    def describe(self, title: str, status: str, meta: EventMeta) -> bool:
        """The title and status the marketplace now shows. Returns False when both are unchanged."""
        if status not in STATUSES:
            raise InvalidValue("status", f"must be one of {', '.join(STATUSES)}")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            raise InvalidValue("title", f"must be 1 to {MAX_TITLE} characters")
        if (title, status) == (self.title, self.status):
            return False
        self._described(title=title, status=status, meta=meta)
        return True

    @event("Described")
    def _described(self, title: str, status: str, meta: EventMeta) -> None:
        self.title, self.status = title, status

    # -- guardrails ------------------------------------------------------------------------
    def set_guardrails(self, guardrails: Guardrails, meta: EventMeta) -> bool:
        guardrails.check(self.currency)
        if guardrails.floor and self.price.amount < guardrails.floor.amount:
            raise InvariantViolated("floor", f"floor {guardrails.floor} is above the current price {self.price}")
        if guardrails.ceiling and self.price.amount > guardrails.ceiling.amount:
            raise InvariantViolated("ceiling", f"ceiling {guardrails.ceiling} is below the current price {self.price}")
        if guardrails == self.guardrails:
            return False
        self._guardrails_set(guardrails=guardrails, meta=meta)
        return True

    @event("GuardrailsSet")
    def _guardrails_set(self, guardrails: Guardrails, meta: EventMeta) -> None:
        self.guardrails = guardrails


def _amount(money: Money | None) -> str | None:
    return None if money is None else str(money.amount)


def _text(value) -> str | None:
    return None if value is None else str(value)


def describe_listing(listing: Listing) -> dict:
    g = listing.guardrails
    return {
        "listing_id": str(listing.id), "shop_id": str(listing.shop_id), "version": listing.version,
        "external_id": listing.external_id, "sku": listing.sku, "title": listing.title, "status": listing.status,
        "price": str(listing.price.amount), "currency": listing.currency,
        "floor": _amount(g.floor), "ceiling": _amount(g.ceiling), "cost": _amount(g.cost),
        "last_price_change_version": listing.last_price_change,
        "modified_at": listing.modified_on.isoformat(),
    }


def describe_automation(listing: Listing) -> dict:
    """A listing's automation settings and the bounds its automated changes respect."""
    g = listing.guardrails
    last = listing.last_automated_at
    return {
        "listing_id": str(listing.id), "version": listing.version, "price": str(listing.price.amount),
        "currency": listing.currency, "rule_id": _text(listing.rule_id),
        "floor": _amount(g.floor), "ceiling": _amount(g.ceiling), "cost": _amount(g.cost),
        "min_margin": _text(g.min_margin), "max_step_percent": _text(g.max_step_percent),
        "max_daily_changes": g.max_daily_changes, "cooldown_minutes": g.cooldown_minutes,
        "automated_floor": _amount(g.automated_floor()),
        "last_automated_change_at": None if last is None else last.isoformat(),
    }


def describe_stock(listing: Listing) -> dict:
    """A listing's last stock count (None figures: never counted)."""
    s = listing.stock
    return {"listing_id": str(listing.id), "version": listing.version,
            "quantity": None if s is None else s.quantity,
            "restock_on": None if s is None or s.restock_on is None else s.restock_on.isoformat(),
            "counted_at": None if s is None else s.counted_at.isoformat()}

