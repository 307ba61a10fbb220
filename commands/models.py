"""Command models: what a client may ask for, validated at the edge (pydantic) and documented in
OpenAPI with examples. Money amounts are decimal strings (JSON numbers are accepted when they are
exactly decimal); currencies are ISO 4217 codes checked against the shop's currency."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt,
                      StringConstraints, WithJsonSchema)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from domain.errors import InvalidValue
from domain.meta import Source
from domain.money import parse_amount

MAX_BATCH = 10_000


def _amount(value: object) -> Decimal:
    try:
        return parse_amount(value)
    except InvalidValue as e:
        raise ValueError(e.detail) from None


# Documented as a decimal string, what clients should send and what answers carry.
MONEY_SCHEMA = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "examples": ["19.95"],
                "description": "A decimal amount as a string (exact JSON numbers are also accepted)"}
Amount = Annotated[Decimal, BeforeValidator(_amount), WithJsonSchema(MONEY_SCHEMA)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["GBP"])]


# -- integers: JSON integers only (not true, 1.0 or "1"), whatever the field ----------------------
def integer(ge: int | None = None, le: int | None = None, **field) -> type:
    return Annotated[StrictInt, Field(ge=ge, le=le, **field)]


Version = integer(ge=1, le=2**63 - 1)
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}")


def _integer_text(value: object) -> object:
    """A query string is text: it may hold an integer the way JSON writes one, nothing else
    (int() would also take "\u0661\u0662", " 12 ", "1_000" and "+5")."""
    if isinstance(value, str) and not _INTEGER_TEXT.fullmatch(value):
        raise ValueError("must be an integer in ASCII digits")
    return value


QueryInt = Annotated[int, BeforeValidator(_integer_text)]

# Tokens (tenants, actor ids, idempotency keys, correlation ids): what fits in a header, a log line and a URL.
TOKEN_PATTERN = r"^[A-Za-z0-9._:@/-]{1,200}$"
Token = Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]


# -- free text: one policy for every string a client writes ----------------------------------------
# Refused in all of them: C0 controls (NUL breaks PostgreSQL text, ESC drives terminals), DEL, C1
# controls, lone surrogates, and the bidi overrides and isolates that make an auditor read other
# than what is stored. Multi-line text (reasons) may also hold tab, line feed and carriage return.
_UNSAFE = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_IN = {False: re.compile(f"[{_UNSAFE}\t\n\r\u2028\u2029]"), True: re.compile(f"[{_UNSAFE}]")}


def _printable(multiline: bool):
    unsafe = _UNSAFE_IN[multiline]

    def check(value: str) -> str:
        if found := unsafe.search(value):
            raise ValueError(f"must not contain control, line-break or bidirectional-override characters "
                             f"(U+{ord(found.group()):04X} at {found.start()})" if not multiline else
                             f"must not contain control or bidirectional-override characters "
                             f"(U+{ord(found.group()):04X} at {found.start()}); tab and line breaks are allowed")
        return value

    return check


_CHECKS = {multiline: AfterValidator(_printable(multiline)) for multiline in (False, True)}


def text(max_length: int, min_length: int = 1, multiline: bool = False, **field) -> type:
    """A free-text field under the one policy above; lengths are in characters."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length), _CHECKS[multiline],
                     Field(**field)]


Text = text(200)
Reason = text(500, min_length=0, multiline=True)
Label = text(200, min_length=0)  # a rule's or an actor's name
Username = text(64, min_length=3)  # a new account's; unique within its tenant


# -- business time: when something happened, as the client says -------------------------------------
# Accepted only within a window around the server's clock: a fact from before the business could
# exist or from far in the future is a client's bug, and every view and bucket downstream would
# carry it (a year-9999 time at -14:00 is not even a moment Python can represent in UTC).
EARLIEST_BUSINESS_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
BUSINESS_TIME_SKEW = timedelta(days=1)  # how far ahead of the server's clock a client's clock may run


class _Horizon:
    """The latest business time accepted: the server's clock plus the skew, read at most once a
    second (a 10,000-line batch asks 10,000 times; the bound errs late by under a second)."""

    def __init__(self):
        self._second, self._bound = -1, EARLIEST_BUSINESS_TIME

    def __call__(self) -> datetime:
        second = int(time.time())
        if second != self._second:
            self._bound = datetime.fromtimestamp(second + 1, timezone.utc) + BUSINESS_TIME_SKEW
            self._second = second
        return self._bound


_horizon = _Horizon()


def _not_ahead_of_the_clock(value: datetime) -> datetime:
    if value > _horizon():
        raise ValueError(f"must not be more than {BUSINESS_TIME_SKEW} ahead of the server's clock")
    return value.astimezone(timezone.utc)  # Python allows offsets up to ±23:59, PostgreSQL only ±15:59


def _query_time(value: datetime) -> datetime:
    """In UTC, clamped to what Python and the views can hold: a filter at the ends of time means
    "from the beginning" or "until the end", never an overflow."""
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        return datetime.min.replace(tzinfo=timezone.utc) if value.year == 1 else datetime.max.replace(tzinfo=timezone.utc)


# Offsets and the lower bound are checked natively by pydantic (across offsets, without overflow).
BusinessTime = Annotated[AwareDatetime, Field(ge=EARLIEST_BUSINESS_TIME), AfterValidator(_not_ahead_of_the_clock)]
QueryTime = Annotated[AwareDatetime, AfterValidator(_query_time)]


ImportOrManual = Literal["manual", "import"]
# What a price set through the price routes may say it is. Not "rule": an automated change comes
# only from the repricing policy (Listing.reprice), which names its rule version and cause and
# answers to the automation guardrails and the stops; a client claiming "rule" would bypass all that.
ManualPriceSource = Annotated[Literal["manual", "experiment", "import"], Field(
    description="manual | experiment | import; automated (rule) changes come only from the repricing policy")]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenShop(Command):
    name: Text
    currency: Currency
    marketplace: Literal["etsy", "shopify", "amazon", "other"] = "etsy"

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Hedgerow Ceramics", "currency": "GBP"}]})


class ListingSpec(Command):
    external_id: Text = Field(description="The marketplace's listing id")
    sku: Text
    title: text(500)
    price: Amount
    currency: Currency
    floor: Amount | None = None
    ceiling: Amount | None = None
    cost: Amount | None = None
    status: Literal["active", "inactive", "draft", "sold_out"] = "active"


class RegisterListings(Command):
    listings: Annotated[list[ListingSpec], Field(min_length=1, max_length=MAX_BATCH)]
    source: ImportOrManual = "manual"
    reason: Reason = ""

    model_config = ConfigDict(json_schema_extra={"examples": [{"listings": [{
        "external_id": "1234567890", "sku": "MUG-BLUE", "title": "Blue speckled mug",
        "price": "24.00", "currency": "GBP", "floor": "18.00", "ceiling": "32.00", "cost": "9.50"}]}]})


class SetPrice(Command):
    price: Amount
    currency: Currency
    reason: Reason = ""
    source: ManualPriceSource = "manual"
    rule: Label | None = None
    expected_version: Version | None = Field(
        None, description="Refuse with 409 unless the listing is still at this version")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"price": "22.50", "currency": "GBP", "reason": "winter sale", "expected_version": 3}]})


class SetGuardrails(Command):
    floor: Amount | None = None
    ceiling: Amount | None = None
    cost: Amount | None = None
    currency: Currency
    reason: Reason = ""
    expected_version: Version | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"floor": "18.00", "ceiling": "32.00", "cost": "9.50", "currency": "GBP"}]})


# A batch's lines are pydantic dataclasses, not models: validated alike at half the cost, paid 10,000 times a batch.
line = pydantic_dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))


@line
class ObservationIn:
    listing_id: UUID
    competitor: Text = Field(description="The competitor's listing or shop reference")
    price: Amount
    currency: Currency
    observed_at: BusinessTime
    source: text(50) = "manual"


class RecordObservations(Command):
    observations: Annotated[list[ObservationIn], Field(min_length=1, max_length=MAX_BATCH)]
    source: ImportOrManual = "manual"
    reason: Reason = ""

    model_config = ConfigDict(json_schema_extra={"examples": [{"observations": [{
        "listing_id": "0b9d6b9a-4c2b-4c55-9b7e-2f1f4b7e9a10", "competitor": "etsy:shop/ClayAndCo/98765",
        "price": "21.95", "currency": "GBP", "observed_at": "2026-11-25T09:30:00Z", "source": "etsy-api"}]}]})


@line
class SaleIn:
    listing_id: UUID
    quantity: integer(ge=-100_000, le=100_000, description="Negative for a return or cancellation")
    unit_price: Amount
    currency: Currency
    order_id: Text
    transaction_id: Text = Field(description="Unique per shop: a line recorded twice is refused")
    sold_at: BusinessTime


class RecordSales(Command):
    sales: Annotated[list[SaleIn], Field(min_length=1, max_length=MAX_BATCH)]
    source: ImportOrManual = "manual"
    reason: Reason = ""

    model_config = ConfigDict(json_schema_extra={"examples": [{"sales": [{
        "listing_id": "0b9d6b9a-4c2b-4c55-9b7e-2f1f4b7e9a10", "quantity": 2, "unit_price": "24.00",
        "currency": "GBP", "order_id": "3011223344", "transaction_id": "4011223344-1",
        "sold_at": "2026-11-25T10:02:00Z"}]}]})


class PriceChangeItem(Command):
    listing_id: UUID
    price: Amount
    expected_version: Version | None = None


class BulkSetPrices(Command):
    """All or nothing: if any listing refuses its price, nothing changes."""

    changes: Annotated[list[PriceChangeItem], Field(min_length=1, max_length=MAX_BATCH)]
    currency: Currency
    reason: Reason = ""
    source: ManualPriceSource = "manual"
    rule: Label | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "changes": [{"listing_id": "55d95577-b375-455a-8c80-879603d12831", "price": "21.00"}, {"listing_id": "e960f6a9-4e04-4866-8157-94b5c6a1bad8", "price": "18.50"}],
        "currency": "GBP", "reason": "autumn prices"}]})


class RollbackListing(Command):
    """Exactly one of to_version, to_time, undo_version."""

    to_version: Version | None = Field(None, description="Restore the price the listing had at this version")
    to_time: BusinessTime | None = Field(None, description="Restore the price the listing had at this moment")
    undo_version: Version | None = Field(
        None, description="Undo the price change recorded at this version (refused if the price changed since)")
    reason: Reason = ""
    expected_version: Version | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"to_version": 2, "reason": "bad import"}]})


class BulkRollback(Command):
    """Compensate every price change in the shop that matches all given filters."""

    source: Literal["manual", "rule", "experiment", "import", "rollback"] | None = None
    rule: Label | None = Field(None, description="A rule's id (automated changes) or the label a manual change gave")
    rule_version: integer(ge=1, le=2**31) | None = Field(
        None, description="Only automated changes made by this version of `rule` (needs `rule`)")
    actor: Label | None = None
    since: BusinessTime | None = None
    until: BusinessTime | None = None
    reason: Reason = ""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"source": "rule", "rule": "5b0f1c4e-2d7a-4f43-9b1e-6c2d8f0a7e11", "rule_version": 2,
         "since": "2026-11-25T00:00:00Z", "reason": "rule misfired"}]})


SOURCES = tuple(s.value for s in Source)
