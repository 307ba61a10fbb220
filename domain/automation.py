"""The emergency stop for automated repricing: per shop (on the Shop aggregate) and tenant-wide,
for the tenant's admins (the AutomationSwitch below, one aggregate per tenant with an id derived
from the tenant id). While either is stopped the Listing refuses every automated change; manual
changes are never affected.

The tenant-wide switch is what the API calls the "global" stop (POST /automation/stop). It is
deliberately not global across tenants: a tenant's admin may stop that tenant's automation, and
nobody else's."""

from __future__ import annotations

from typing import Callable
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue
from domain.meta import EventMeta


def tenant_switch_id(tenant_id: str) -> UUID:
    """The id of a tenant's switch: derived, so every process finds the same aggregate."""
    return uuid5(NAMESPACE_URL, f"https://etsypro.dev/automation/tenant/{tenant_id}")


def check_reason(meta: EventMeta) -> None:
    """Stopping and resuming say why: the next person to look needs to know."""
    if not meta.reason.strip():
        raise InvalidValue("reason", "say why automation is stopped or resumed")


def flip_switch(meta: EventMeta, already: bool, record: Callable[..., None]) -> bool:
    """Record a stop or a resume that says why; False, recording nothing, when it is already so."""
    check_reason(meta)
    if already:
        return False
    record(meta=meta)
    return True


def _stopped_text(stop: EventMeta, scope: str) -> str:
    return f"{scope} automation stopped by {stop.actor_id} at {stop.occurred_at.isoformat()}: {stop.reason}"


def stop_reason(shop_stop: EventMeta | None, tenant_stop: EventMeta | None) -> str | None:
    """Why automated changes are refused right now, or None when automation runs."""
    if tenant_stop is not None:
        return _stopped_text(tenant_stop, "tenant-wide")
    if shop_stop is not None:
        return _stopped_text(shop_stop, "shop")
    return None


def describe_stop(stop: EventMeta | None) -> dict:
    if stop is None:
        return {"stopped": False}
    return {"stopped": True, "by": stop.actor_id, "reason": stop.reason, "at": stop.occurred_at.isoformat()}


def tenant_state(tenant_id: str, switch: AutomationSwitch | None) -> dict:
    """The tenant-wide stop as the API shows it ("global": it spans all the tenant's shops)."""
    return {"global": describe_stop(switch.stopped_by if switch else None), "scope": "tenant",
            "tenant_id": tenant_id}


def shop_state(shop, switch: AutomationSwitch | None) -> dict:
    """A shop's stop, its tenant's, and whether automation runs there."""
    global_stop = switch.stopped_by if switch else None
    return {"shop_id": str(shop.id), "shop": describe_stop(shop.automation_stop),
            "global": describe_stop(global_stop),
            "running": stop_reason(shop.automation_stop, global_stop) is None}


class AutomationSwitch(Aggregate):
    """A tenant's stop for all of its shops. Created on first use."""

    @event("Installed")
    def __init__(self, tenant_id: str, meta: EventMeta):
        self.tenant_id = tenant_id
        self.stopped_by: EventMeta | None = None

    @staticmethod
    def create_id(tenant_id: str, meta: EventMeta) -> UUID:
        return tenant_switch_id(tenant_id)

    def stop(self, meta: EventMeta) -> bool:
        return flip_switch(meta, self.stopped_by is not None, self._stopped)

    @event("Stopped")
    def _stopped(self, meta: EventMeta) -> None:
        self.stopped_by = meta

    def resume(self, meta: EventMeta) -> bool:
        return flip_switch(meta, self.stopped_by is None, self._resumed)

    @event("Resumed")
    def _resumed(self, meta: EventMeta) -> None:
        self.stopped_by = None
