"""The emergency stop for automated repricing: per shop (on the Shop aggregate) and global, for
admins (the AutomationSwitch below, one aggregate with a fixed id). While either is stopped the
Listing refuses every automated change; manual changes are never affected."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue
from domain.meta import EventMeta

GLOBAL_SWITCH_ID = uuid5(NAMESPACE_URL, "https://etsypro.dev/automation/global")


def check_reason(meta: EventMeta) -> None:
    """Stopping and resuming say why: the next person to look needs to know."""
    if not meta.reason.strip():
        raise InvalidValue("reason", "say why automation is stopped or resumed")


def describe_stop(stop: EventMeta, scope: str) -> str:
    return f"{scope} automation stopped by {stop.actor_id} at {stop.occurred_at.isoformat()}: {stop.reason}"


def stop_reason(shop_stop: EventMeta | None, global_stop: EventMeta | None) -> str | None:
    """Why automated changes are refused right now, or None when automation runs."""
    if global_stop is not None:
        return describe_stop(global_stop, "global")
    if shop_stop is not None:
        return describe_stop(shop_stop, "shop")
    return None


class AutomationSwitch(Aggregate):
    """The global stop. Created on first use; its id is fixed so everyone finds the same one."""

    @event("Installed")
    def __init__(self, meta: EventMeta):
        self.stopped_by: EventMeta | None = None

    @staticmethod
    def create_id(meta: EventMeta) -> UUID:
        return GLOBAL_SWITCH_ID

    def stop(self, meta: EventMeta) -> bool:
        check_reason(meta)
        if self.stopped_by is not None:
            return False
        self._stopped(meta=meta)
        return True

    @event("Stopped")
    def _stopped(self, meta: EventMeta) -> None:
        self.stopped_by = meta

    def resume(self, meta: EventMeta) -> bool:
        check_reason(meta)
        if self.stopped_by is None:
            return False
        self._resumed(meta=meta)
        return True

    @event("Resumed")
    def _resumed(self, meta: EventMeta) -> None:
        self.stopped_by = None
