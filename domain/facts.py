"""High-volume facts: competitor observations and sales.

Each accepted batch is its own small aggregate, with one event per fact. Keeping facts out of
the Listing stream means loading a listing for a command never replays them, however many
accumulate (see bench `load_ms_100k`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue
from domain.meta import EventMeta
from domain.money import Money


@dataclass(frozen=True, slots=True)
class Observation:
    listing_id: UUID
    competitor: str  # the competitor's listing or shop reference
    price: Money
    observed_at: datetime
    source: str  # where it was seen: "etsy-api", "scraper", "manual", ...


@dataclass(frozen=True, slots=True)
class SaleLine:
    listing_id: UUID
    quantity: int  # negative for a return or cancellation of an earlier sale
    unit_price: Money
    order_id: str
    transaction_id: str
    sold_at: datetime

    @property
    def revenue(self) -> Money:
        return Money(self.unit_price.amount * self.quantity, self.unit_price.currency)


def observation_ref(batch_id: UUID, version: int) -> str:
    """How a rule's proposal and an automated price change name one observation: the
    CompetitorPriceObserved event's batch (aggregate id) and version."""
    return f"{batch_id}/{version}"


def parse_observation_ref(ref: str) -> tuple[UUID, int] | None:
    """(batch id, version) of an observation_ref; None for anything else."""
    batch, _, version = ref.rpartition("/")
    try:
        return UUID(batch), int(version)
    except ValueError:
        return None


class FactBatch(Aggregate):
    """One accepted batch of facts: its shop and size here, one event per fact in the subclass.
    Each subclass gets its own `Received` event class (the library makes one per aggregate class),
    so stored topics stay ObservationBatch.Received and SalesBatch.Received."""

    @event("Received")
    def __init__(self, shop_id: UUID, size: int, meta: EventMeta):
        self.shop_id = shop_id
        self.size = size

    def record_facts(self, event: Callable[[UUID, int, datetime, object], Aggregate.Event], facts: list) -> None:
        """One event per fact, made by event(batch id, version, the batch's time, fact): what
        trigger_event does for each, less its per-event copying and checks, a third of a 10,000-fact
        batch's cost (a fact changes no state of its batch: its apply is a no-op). All are recorded
        at the batch's time (its first event's timestamp)."""
        first, at, batch_id = self.version + 1, self.created_on, self.id
        self._pending_events.extend(event(batch_id, version, at, fact) for version, fact in enumerate(facts, first))
        self.version, self.modified_on = first + len(facts) - 1, at

    def collect_events(self) -> list:
        """In one pass: the library pops its pending list one event at a time, quadratic in a batch."""
        events, self._pending_events = self._pending_events, []
        return events

    @staticmethod
    def meta_at(meta: EventMeta) -> Callable[[datetime], EventMeta]:
        """meta.at(moment), one object per moment: a batch's facts share a few days (sales, orders),
        and an EventMeta is immutable, so its events may share it. Keyed by the moment's zone too:
        the same instant in another zone is an equal datetime, but the fact said it otherwise."""
        known: dict[tuple, EventMeta] = {}

        def at(moment: datetime) -> EventMeta:
            found = known.get((moment, moment.tzinfo))
            if found is None:
                found = known[moment, moment.tzinfo] = meta.at(moment)
            return found
        return at

    @staticmethod
    def check_facts(facts: list, field: str, currency: str, money_of: Callable[[object], Money]) -> None:
        """A batch holds at least one fact, each in the shop's currency."""
        if not facts:
            raise InvalidValue(field, "must not be empty")
        for i, fact in enumerate(facts):
            if money_of(fact).currency != currency:
                raise InvalidValue(f"{field}[{i}].currency",
                                   f"{money_of(fact).currency} does not match the shop's {currency}")


class ObservationBatch(FactBatch):
    @classmethod
    def record(cls, shop_id: UUID, currency: str, observations: list[Observation], meta: EventMeta) -> ObservationBatch:
        cls.check_facts(observations, "observations", currency, lambda o: o.price)
        for i, o in enumerate(observations):
            if o.price.amount <= 0:
                raise InvalidValue(f"observations[{i}].price", "must be greater than zero")
        batch = cls(shop_id=shop_id, size=len(observations), meta=meta)
        # Triggered directly, not through an @event method, whose argument mapping would cost most
        # of 10,000 events; all are recorded at the batch's time (its first event's timestamp).
        observed, recorded_at = batch.trigger_event, batch.created_on
        for o in observations:
            observed(cls.CompetitorPriceObserved, timestamp=recorded_at, listing_id=o.listing_id,
                     competitor=o.competitor, price=o.price, source=o.source, meta=meta.at(o.observed_at))
        return batch

    class CompetitorPriceObserved(Aggregate.Event):
        listing_id: UUID
        competitor: str
        price: Money
        source: str
        meta: EventMeta

        def apply(self, aggregate: ObservationBatch) -> None:
            pass  # a fact: the batch keeps no state per observation


class SalesBatch(FactBatch):
    @classmethod
    def check(cls, currency: str, lines: list[SaleLine]) -> None:
        """What record() refuses, without building the batch: an import asks this of every chunk first."""
        cls.check_facts(lines, "sales", currency, lambda line: line.unit_price)
        for i, line in enumerate(lines):
            if line.quantity == 0:
                raise InvalidValue(f"sales[{i}].quantity", "must not be zero")
            if line.unit_price.amount < 0:
                raise InvalidValue(f"sales[{i}].unit_price", "must not be negative")

    @classmethod
    def record(cls, shop_id: UUID, currency: str, lines: list[SaleLine], meta: EventMeta) -> SalesBatch:
        cls.check(currency, lines)
        batch, meta_at = cls(shop_id=shop_id, size=len(lines), meta=meta), cls.meta_at(meta)

        def event(batch_id: UUID, version: int, at: datetime, line: SaleLine) -> SalesBatch.SaleFact:
            sold = line.quantity > 0  # positional: the order of SaleFact's fields, after the library's three
            return (cls.Sold if sold else cls.Returned)(
                batch_id, version, at, line.listing_id, line.quantity if sold else -line.quantity, line.unit_price,
                line.order_id, line.transaction_id, meta_at(line.sold_at))
        batch.record_facts(event, lines)
        return batch

    class SaleFact(Aggregate.Event):
        """What a sale and a return both say; `quantity` counts units, positive in both."""

        listing_id: UUID
        quantity: int
        unit_price: Money
        order_id: str
        transaction_id: str
        meta: EventMeta

        def apply(self, aggregate: SalesBatch) -> None:
            pass  # a fact: the batch keeps no state per sale

    class Sold(SaleFact):
        pass

    class Returned(SaleFact):
        """A cancellation or return, kept as its own fact."""
