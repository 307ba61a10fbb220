"""The automatic rollback guard (issue 17 item 3): when a listing's observed metric falls below the
forecast's lower interval for N consecutive periods after an automated change (rule, optimiser,
experiment), the guard rolls those changes back and stops automation for the listing.

This module decides, without I/O: the shop's settings, whether a run of periods is a breach, and
the evidence. One RollbackGuard aggregate per shop (id derived from the shop) records the settings
and every trip with its evidence; the rollback itself is a compensating price change
(commands/rollback.py) and the stop an unassignment of the listing's rule (commands/rules.py).
Values are stored as plain str/int/bool/lists so the codec needs no new transcoding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from typing import Sequence
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue
from domain.meta import EventMeta

METRICS = ("units", "revenue")
LEVELS = (80, 95)
MAX_PERIODS = 30
AUTOMATED_SOURCES = ("rule", "experiment")


def guard_id(shop_id: UUID) -> UUID:
    """The id of a shop's guard: derived, so every process finds the same aggregate."""
    return uuid5(NAMESPACE_URL, f"https://etsypro.dev/rollback-guard/shop/{shop_id}")


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """A shop's thresholds: the metric compared per day, the forecast's interval, how many
    consecutive days below its lower end trip the guard."""

    metric: str = "revenue"
    level: int = 80
    periods: int = 3
    enabled: bool = True

    def check(self) -> GuardSettings:
        if self.metric not in METRICS:
            raise InvalidValue("metric", f"must be one of {', '.join(METRICS)}")
        if self.level not in LEVELS:
            raise InvalidValue("level", f"must be one of {', '.join(map(str, LEVELS))} (the forecast's interval)")
        if not 1 <= self.periods <= MAX_PERIODS:
            raise InvalidValue("periods", f"must be from 1 to {MAX_PERIODS} consecutive days")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Period:
    """One day after the change: what the forecast said and what was observed."""

    day: date
    observed: Decimal
    lower: Decimal      # the forecast's lower end at the settings' level
    forecast: Decimal   # its mean

    @property
    def below(self) -> bool:
        return self.observed < self.lower

    def as_dict(self) -> dict:
        return {"day": self.day.isoformat(), "observed": str(self.observed), "lower": str(self.lower),
                "forecast": str(self.forecast)}


def breach(periods: Sequence[Period], needed: int) -> list[Period] | None:
    """The first run of `needed` consecutive periods below the lower end, or None."""
    run: list[Period] = []
    for period in periods:
        run = [*run, period] if period.below else []
        if len(run) == needed:
            return run
    return None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why the guard trips for one listing: the automated changes, the forecast run they were judged
    against, and the periods below its lower end."""

    shop_id: UUID
    listing_id: UUID
    changes: tuple[int, ...]   # versions of the automated changes since the last other price change
    restore_version: int       # the version whose price is restored (just before the first change)
    forecast_run: str
    settings: GuardSettings
    periods: tuple[Period, ...]

    @property
    def key(self) -> str:
        """Derived from the evidence's fixed points: a restart finds the same key and acts no more."""
        return f"{self.listing_id}/v{self.changes[0]}/{self.forecast_run}/{self.periods[0].day.isoformat()}"

    def summary(self) -> str:
        s = self.settings
        days = "; ".join(f"{p.day.isoformat()} {p.observed} < {p.lower} (forecast {p.forecast})" for p in self.periods)
        text = (f"rollback guard: {s.metric} below the forecast's {s.level}% lower bound for {len(self.periods)} "
                f"consecutive days after automated change(s) v{', v'.join(map(str, self.changes))} "
                f"(forecast run {self.forecast_run}): {days}")
        return text if len(text) <= 500 else text[:497] + "..."

    def as_dict(self) -> dict:
        return {"listing_id": str(self.listing_id), "changes": list(self.changes),
                "restore_version": self.restore_version, "forecast_run": self.forecast_run,
                "metric": self.settings.metric, "level": self.settings.level, "periods_needed": self.settings.periods,
                "periods": [p.as_dict() for p in self.periods], "key": self.key}


class RollbackGuard(Aggregate):
    """A shop's guard: its settings and its trips (each with the evidence)."""

    @event("Configured")
    def __init__(self, shop_id: UUID, settings: dict, meta: EventMeta):
        self.shop_id = shop_id
        self.settings = settings
        self.trips = 0

    @staticmethod
    def create_id(shop_id: UUID, settings: dict, meta: EventMeta) -> UUID:
        return guard_id(shop_id)

    @classmethod
    def configure_new(cls, shop_id: UUID, settings: GuardSettings, meta: EventMeta) -> RollbackGuard:
        return cls(shop_id=shop_id, settings=settings.check().as_dict(), meta=meta)

    @property
    def current(self) -> GuardSettings:
        return GuardSettings(**self.settings)

    def configure(self, settings: GuardSettings, meta: EventMeta) -> bool:
        settings.check()
        if settings.as_dict() == self.settings:
            return False
        self._reconfigured(settings=settings.as_dict(), meta=meta)
        return True

    @event("Reconfigured")
    def _reconfigured(self, settings: dict, meta: EventMeta) -> None:
        self.settings = settings

    def trip(self, evidence: Evidence, meta: EventMeta) -> None:
        if evidence.listing_id is None or not evidence.periods:
            raise InvalidValue("evidence", "a trip names its listing and the periods below the forecast")
        self._tripped(listing_id=evidence.listing_id, evidence=evidence.as_dict(), meta=meta)

    @event("Tripped")
    def _tripped(self, listing_id: UUID, evidence: dict, meta: EventMeta) -> None:
        self.trips += 1


def describe_guard(shop_id: UUID, guard: RollbackGuard | None) -> dict:
    settings = GuardSettings(enabled=False) if guard is None else guard.current
    return {"shop_id": str(shop_id), **settings.as_dict(), "configured": guard is not None,
            "version": 0 if guard is None else guard.version, "trips": 0 if guard is None else guard.trips}
