"""The rollback guard's follower: on a schedule (sales arrive by day; a period is a day), each
watched shop's listings whose latest price changes are automated are compared with the forecast
they were made against (streams/rollback_evidence.py); a breach of the shop's settings trips the guard
(commands/rollback_guard.py: the evidence recorded, automation stopped for the listing, the changes
compensated).

Exactly-once effect without a position of its own: a tripped listing's latest change is the
rollback, so the next check finds nothing to judge; and should a crash come between a trip's
commands, the next check derives the same evidence, hence the same idempotency keys, and the
commands already done replay their answers instead of acting again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Callable

import psycopg

from codec.time_loaders import reading_adapters
from commands.rollback_guard import RollbackGuards
from streams import rollback_evidence as reads

log = logging.getLogger(__name__)

APPLICATION_NAME = "etsypro-rollback-guard"
CHECK_EVERY_SECONDS = 3600.0


class RollbackGuardFollower:
    def __init__(self, guards: RollbackGuards, conninfo: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), *, business_clock: bool = False,
                 every_seconds: float = CHECK_EVERY_SECONDS):
        self.guards, self.conninfo, self.clock = guards, conninfo, clock
        self.business_clock = business_clock  # record the trips at the clock's time (a simulated clock)
        self.every_seconds = every_seconds

    def check(self, shop_id=None) -> list[dict]:
        """Judge every watched shop (or one) now; returns the trips made."""
        today = self.clock().date()
        with psycopg.connect(self.conninfo, application_name=APPLICATION_NAME, context=reading_adapters()) as conn:
            found = []
            for shop, settings in reads.watched(conn):
                if shop_id is not None and shop != shop_id:
                    continue
                for changes in reads.automated_changes(conn, shop):
                    evidence = reads.evidence(conn, shop, settings, changes, today)
                    if evidence is not None:
                        found.append(evidence)
        trips = []
        for evidence in found:
            try:
                trips.append(self.guards.trip(evidence, self.clock if self.business_clock else None))
            except Exception as error:  # noqa: BLE001 - one listing's failure must not hold up the others
                log.error("rollback guard: listing %s: %r", evidence.listing_id, error)
                trips.append({"evidence": evidence.as_dict(), "failed": repr(error)})
        return trips

    def run(self, stop: threading.Event, every_seconds: float | None = None) -> None:
        """Check on a schedule (every_seconds, default the follower's) until `stop` is set."""
        while not stop.is_set():
            try:
                self.check()
            except psycopg.Error as error:
                log.warning("rollback guard: check failed (%s); trying again at the next", error)
            stop.wait(every_seconds or self.every_seconds)

    def close(self) -> None:
        """Nothing to release: each check opens and closes its own connection."""
