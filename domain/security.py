"""A tenant's security stream: failed logins that name no account of the tenant. There is no
account to record them on, and recording each would let anyone grow the log at will, so the
stream records at most UNKNOWN_LOGINS_PER_MINUTE of them per tenant and minute; the attempts past
that are counted (outside the log) and the next recorded event carries their number."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID, NAMESPACE_URL, uuid5

from eventsourcing.domain import Aggregate, event

from domain.account import USERNAME, normalize_username
from domain.meta import EventMeta
from domain.personal import Sealer

UNKNOWN_LOGINS_PER_MINUTE = 20
WINDOW = timedelta(minutes=1)


def tenant_security_id(tenant_id: str) -> UUID:
    """The id of a tenant's security stream: derived, so every process finds the same aggregate."""
    return uuid5(NAMESPACE_URL, f"https://etsypro.dev/security/tenant/{tenant_id}")


def shown_username(attempted: str) -> str | None:
    """The attempted username if it could be one; None otherwise: people type passwords into the
    username field, and what is not a possible username is not written into the immutable log."""
    username = normalize_username(attempted)
    return username if USERNAME.match(username) else None


class TenantSecurity(Aggregate):
    """Created by the first unknown-username failure a tenant sees."""

    @event("Opened")
    def __init__(self, tenant_id: str, meta: EventMeta):
        self.tenant_id = tenant_id
        self.window_start: datetime | None = None  # the minute whose recorded failures are counted
        self.recorded_in_window = 0

    @staticmethod
    def create_id(tenant_id: str, meta: EventMeta) -> UUID:
        return tenant_security_id(tenant_id)

    def may_record(self, now: datetime) -> bool:
        """Is there room in this minute's budget for one more recorded failure?"""
        return self._window_over(now) or self.recorded_in_window < UNKNOWN_LOGINS_PER_MINUTE

    def _window_over(self, now: datetime) -> bool:
        return self.window_start is None or now - self.window_start >= WINDOW

    def unknown_username(self, attempted: str, client: str, suppressed_before: int, meta: EventMeta,
                         sealer: Sealer | None = None) -> bool:
        """Record a failed login naming no account of the tenant, if the minute's budget allows
        (False: over budget, the caller counts it for the next recorded one). Given the sealer of
        the attempt's own subject, the username typed and the client's address enter the log sealed."""
        if not self.may_record(meta.occurred_at):
            return False
        username = shown_username(attempted)
        if sealer is not None:
            username, client = username and sealer.seal(username), sealer.seal(client)
        self._unknown_username_login(username=username, client=client,
                                     suppressed_before=suppressed_before, meta=meta)
        return True

    @event("UnknownUsernameLogin")
    def _unknown_username_login(self, username: str | None, client: str, suppressed_before: int,
                                meta: EventMeta) -> None:
        if self._window_over(meta.occurred_at):
            self.window_start, self.recorded_in_window = meta.occurred_at, 0
        self.recorded_in_window += 1
