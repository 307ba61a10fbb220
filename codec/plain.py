"""Domain events as JSON-friendly data: the one conversion every answer showing events uses."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

# The event's own header, already given at the top level of a described event.
_HEADER_FIELDS = {"originator_id", "originator_version", "timestamp", "meta"}


def describe_event(domain_event, notification_id: int | None = None) -> dict:
    """A stored event as JSON-friendly data: the one conversion used by history, log and export.

    Who and why (`meta`) sits at the top next to the position; the event's own fields are under
    `data`, so that no field name can ever collide with the envelope.
    """
    fields = vars(domain_event)
    return {
        "position": notification_id,
        "aggregate_id": str(domain_event.originator_id),
        "version": domain_event.originator_version,
        "type": type(domain_event).__qualname__,
        "topic": get_topic(type(domain_event)),
        "recorded_at": domain_event.timestamp.isoformat(),
        "meta": plain(fields.get("meta")),
        "data": {name: plain(value) for name, value in fields.items() if name not in _HEADER_FIELDS},
    }


def plain(value: Any) -> Any:
    # Money, EventMeta and Guardrails are dataclasses of plain values: one rule covers them all,
    # giving Money as {"amount": "12.50", "currency": "GBP"} (amounts stay exact decimal strings).
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):  # an aggregate's state may hold sets (an account's grants)
        return sorted((plain(v) for v in value), key=str)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value
