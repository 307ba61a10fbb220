"""Money: a Decimal amount with an ISO 4217 currency. Never a float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from domain.errors import InvalidValue

# Minor units per currency; amounts with more decimals than the currency allows are refused
# rather than rounded, because rounding someone's price silently is a pricing decision.
CURRENCY_DECIMALS = {
    "GBP": 2, "USD": 2, "EUR": 2, "CAD": 2, "AUD": 2, "NZD": 2, "CHF": 2, "SEK": 2, "NOK": 2,
    "DKK": 2, "PLN": 2, "CZK": 2, "HUF": 2, "MXN": 2, "BRL": 2, "INR": 2, "SGD": 2, "HKD": 2,
    "ILS": 2, "ZAR": 2, "TRY": 2, "PHP": 2, "MYR": 2, "THB": 2, "TWD": 2, "JPY": 0, "KRW": 0,
    "VND": 0,
}
MAX_AMOUNT = Decimal("1000000000")
_QUANTUM = {code: Decimal(1).scaleb(-decimals) for code, decimals in CURRENCY_DECIMALS.items()}


def minor_unit(currency: str) -> Decimal:
    """The currency's smallest amount (0.01 GBP, 1 JPY): what prices are rounded to."""
    return _QUANTUM[currency]


def parse_amount(value: object, field: str = "amount") -> Decimal:
    """Turn user input into a finite Decimal, refusing floats that are not exactly decimal."""
    if isinstance(value, bool):
        raise InvalidValue(field, "must be a decimal number, not a boolean")
    if isinstance(value, float):
        # repr() gives the shortest string that round-trips: 19.99 stays "19.99", while a float
        # that only approximates its decimal (0.1 + 0.2) would show its extra digits and be refused
        # by the decimals check below.
        value = repr(value)
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidValue(field, f"{value[:40]!r} is not a decimal number") from None
    else:
        raise InvalidValue(field, "must be a decimal number given as a string or number")
    if not amount.is_finite():
        raise InvalidValue(field, "must be a finite number (no NaN or infinity)")
    if abs(amount) >= MAX_AMOUNT:
        raise InvalidValue(field, f"must be below {MAX_AMOUNT}")
    return amount


def check_currency(code: object, field: str = "currency") -> str:
    if not isinstance(code, str) or code not in CURRENCY_DECIMALS:
        raise InvalidValue(field, f"{str(code)[:10]!r} is not a supported ISO 4217 currency")
    return code


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    @classmethod
    def of(cls, amount: object, currency: object, field: str = "amount") -> Money:
        """Validated construction from user input."""
        currency = check_currency(currency, field=_sibling(field, "currency"))
        value = parse_amount(amount, field)
        quantized = value.quantize(minor_unit(currency))
        if value != quantized:
            raise InvalidValue(field, f"{currency} amounts have at most {CURRENCY_DECIMALS[currency]} decimals")
        return cls(quantized, currency)

    @classmethod
    def price(cls, amount: object, currency: object, field: str = "price") -> Money:
        """A price: strictly positive."""
        money = cls.of(amount, currency, field)
        if money.amount <= 0:
            raise InvalidValue(field, "a price must be greater than zero")
        return money

    def same_currency(self, other: Money, field: str) -> None:
        if other.currency != self.currency:
            raise InvalidValue(field, f"currency {other.currency} does not match {self.currency}")

    def __lt__(self, other: Money) -> bool:
        self.same_currency(other, "currency")
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self.same_currency(other, "currency")
        return self.amount <= other.amount

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"

    def as_dict(self) -> dict[str, str]:
        return {"amount": str(self.amount), "currency": self.currency}


def _sibling(field: str, name: str) -> str:
    """`items[3].price` -> `items[3].currency`: errors name the field the user actually sent."""
    head, _, _ = field.rpartition(".")
    return f"{head}.{name}" if head else name
