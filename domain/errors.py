"""Domain errors. Each names the field it is about so that the edge can say which input was wrong."""


class DomainError(Exception):
    """A command was refused by a business rule."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class InvalidValue(DomainError):
    """A value can never be valid (NaN money, unknown currency...)."""


class InvariantViolated(DomainError):
    """A valid value that this aggregate's current state does not allow (price below floor...)."""


# -- refusals beyond the business rules: unknown or foreign ids, moved state, reused keys --------
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
