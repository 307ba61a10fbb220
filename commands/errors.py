"""Why a command was refused, beyond the domain's own rules. The API maps each to a status."""

from __future__ import annotations


class CommandRefused(Exception):
    def __init__(self, detail: str, field: str | None = None, **extra):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra


class NotFound(CommandRefused):
    """Unknown id, or one that belongs to another tenant: the answer is the same (no existence leak)."""


class Conflict(CommandRefused):
    """The state moved on: optimistic concurrency, uniqueness, or a rollback that would overwrite."""


class IdempotencyKeyReused(CommandRefused):
    """The Idempotency-Key was already used with a different command."""
