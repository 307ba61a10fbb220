"""A listing's history read from its events: the versions, prices and price changes that time
travel (read/) and rollback (commands/) both need. Pure functions over the event sequence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from domain.listing import Automation, Listing
from domain.meta import EventMeta
from domain.money import Money


@dataclass(frozen=True)
class PriceChange:
    version: int
    price: Money
    previous: Money
    meta: EventMeta
    rule: str | None
    compensates: tuple[int, ...]
    recorded_at: datetime
    automation: Automation | None = None  # of an automated change: rule version, cause...


def version_at(events: Iterable, at: datetime) -> int:
    """The aggregate's version at a moment of recorded time (0 if it did not exist yet)."""
    version = 0
    for e in events:
        if e.timestamp > at:
            break
        version = e.originator_version
    return version


def price_changes(events: Iterable) -> list[PriceChange]:
    return [PriceChange(e.originator_version, e.price, e.previous, e.meta, e.rule, tuple(e.compensates), e.timestamp,
                        e.automation)
            for e in events if type(e) is Listing.PriceChanged]


def price_at(events: Iterable, version: int) -> Money:
    """The price the listing had at `version`: set by its registration or its last price change."""
    return [e.price for e in events
            if e.originator_version <= version and type(e) in (Listing.Registered, Listing.PriceChanged)][-1]
