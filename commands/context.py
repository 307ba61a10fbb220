"""Everything a command knows about who sent it and why, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from uuid import UUID, uuid4

from domain.meta import Actor, EventMeta, Source


@dataclass(frozen=True)
class CommandContext:
    actor: Actor
    tenant_id: str
    command_id: str = field(default_factory=lambda: uuid4().hex)
    correlation_id: str | None = None
    causation_id: str | None = None  # the event or command that caused this one; else the command itself
    idempotency_key: str | None = None
    shops: frozenset[str] | None = None  # the shops the caller may see; None: all of the tenant's
    checked_shop: UUID | None = None  # the shop the API already found in the caller's tenant and reach

    def may_see(self, shop_id) -> bool:
        return self.shops is None or str(shop_id) in self.shops

    def meta(self, shop_id, source: Source | str = Source.MANUAL, reason: str = "",
             occurred_at: datetime | None = None) -> EventMeta:
        return EventMeta(
            shop_id=str(shop_id) if shop_id else None,
            actor_id=self.actor.id,
            actor_kind=self.actor.kind.value,
            source=Source(source).value,
            reason=reason,
            command_id=self.command_id,
            correlation_id=self.correlation_id or self.command_id,
            causation_id=self.causation_id or self.command_id,
            occurred_at=occurred_at or datetime.now(timezone.utc),
        )

    @property
    def idempotency_scope(self) -> str:
        return f"{self.tenant_id}/{self.actor.id}"


@dataclass
class Decision:
    """What a handler decided: aggregates with pending events, the answer, and what it reserves."""

    aggregates: list
    response: dict
    created: bool = False  # the command made a new aggregate (the API says so with its status)
    reservations: list = field(default_factory=list)
    strict: bool = False  # the client gave expected_version: a lost race is a Conflict, not a retry
    statements: list = field(default_factory=list)  # (sql, params) rows committed with the events


@dataclass(frozen=True)
class Result:
    body: dict
    created: bool = False
    replayed: bool = False  # answered from the idempotency record; nothing was written


