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
