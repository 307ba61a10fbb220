"""Any aggregate as it was at one of its versions or at a moment of recorded time: the auditor's
time travel for every kind (listings, rules, shops, accounts, experiments...), replayed from the
log by read/aggregates.py under the history's tenancy rule (read/audit.py)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from uuid import UUID

from codec.plain import plain
from domain.errors import DomainError, NotFound
from domain.history import version_at
from read.aggregates import AggregateReader
from read.audit import AuditHistory, AuditReader

_NOT_STATE = {"_pending_events"}  # the library's unsaved events: never part of a replayed state


class TimeTravel:
    def __init__(self, audit: AuditHistory, aggregates: AggregateReader):
        self.audit, self.aggregates = audit, aggregates

    def state(self, reader: AuditReader, aggregate_id: UUID, version: int | None = None,
              at: datetime | None = None) -> dict:
        """The aggregate at `version`, or at moment `at`, or now; NotFound naming the field when it
        had no such version or did not exist yet."""
        self.audit.check_aggregate_owner(reader, aggregate_id)  # the history's tenancy, before any reading
        events = self.aggregates.events(aggregate_id)
        latest = events[-1].originator_version
        if at is not None:
            if at.tzinfo is None:
                raise DomainError("at", "must include a timezone offset")
            version = version_at(events, at)
            if version == 0:
                raise NotFound("the aggregate did not exist at that time", field="at")
        if version is not None and version > latest:
            raise NotFound(f"the aggregate has no version {version} (latest is {latest})", field="version")
        upto = events[:version] if version is not None else events
        aggregate = functools.reduce(lambda state, event: event.mutate(state), upto, None)
        return {"aggregate_id": str(aggregate_id), "type": type(aggregate).__qualname__,
                "version": upto[-1].originator_version, "latest_version": latest,
                "recorded_at": upto[-1].timestamp.isoformat(),
                "state": self.audit.personal.reveal(plain_state(aggregate))}  # an account's username, opened or erased


def plain_state(aggregate) -> dict[str, Any]:
    """The aggregate's attributes as JSON-friendly data (the events' conversion)."""
    return {name.lstrip("_"): plain(value) for name, value in vars(aggregate).items() if name not in _NOT_STATE}

