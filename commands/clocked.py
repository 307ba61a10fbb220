"""A command context on an injected clock: every event its commands record happens (business time)
at the clock's time unless the command says otherwise. The market simulator (bench/market.py) and
the rollback guard's follower on a simulated clock use it; the API never does."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Callable

from commands.context import CommandContext
from domain.meta import EventMeta, Source


@dataclass(frozen=True)
class ClockedContext(CommandContext):
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    def meta(self, shop_id, source: Source | str = Source.MANUAL, reason: str = "",
             occurred_at: datetime | None = None) -> EventMeta:
        return super().meta(shop_id, source, reason, occurred_at or self.clock())

    @classmethod
    def of(cls, ctx: CommandContext, clock: Callable[[], datetime]) -> ClockedContext:
        """`ctx` on `clock`."""
        return cls(**{f.name: getattr(ctx, f.name) for f in fields(CommandContext)}, clock=clock)


__all__ = ["ClockedContext"]
