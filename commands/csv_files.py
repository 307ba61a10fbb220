"""Reading sellers' CSV files: the Etsy exports (EtsySoldOrderItems, EtsySoldOrders,
EtsyListingsDownload) and third-party competitor price feeds. No I/O beyond the bytes given.

There is no official spec of Etsy's exports, and their headers changed over the years, so columns
are found by header name, never by position: each field lists the header names it is known by
(older exports say `Date Posted` for `Date Shipped` and `Delivery ...` for `Shipping ...`).
Headers are compared case-, space- and underscore-insensitively, so `CURRENCY_CODE` and
`Currency Code` are one column. Unknown columns are ignored; a missing required one refuses the
file naming it. Every problem names the file's line (1 is the header) and the column.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation

csv.field_size_limit(1 << 20)  # a listing's description may be long; a megabyte is not a field


@dataclass(frozen=True)
class LineProblem:
    line: int  # the file's line, 1 being the header
    column: str | None  # the header as the file spells it (or as we know it, when it is missing)
    detail: str

    @property
    def field(self) -> str:
        return f"line {self.line}" + (f", column {self.column!r}" if self.column else "")

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


class FileRefused(Exception):
    """The file as a whole cannot be read: not UTF-8, no header, a required column missing."""

    def __init__(self, problem: LineProblem):
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class Column:
    name: str  # how our code calls it
    headers: tuple[str, ...]  # what files call it, newest first
    required: bool = True


@dataclass(frozen=True)
class Format:
    name: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _normal(header: str) -> str:
    return re.sub(r"[\s_]+", " ", header.strip().lower())


ORDER_ITEMS = Format("EtsySoldOrderItems", (
    Column("sale_date", ("Sale Date",)),
    Column("item_name", ("Item Name",), required=False),
    Column("buyer", ("Buyer",), required=False),
    Column("quantity", ("Quantity",)),
    Column("price", ("Price",)),
    Column("currency", ("Currency",), required=False),
    Column("transaction_id", ("Transaction ID",)),
    Column("listing_id", ("Listing ID",)),
    Column("order_id", ("Order ID",)),
    Column("sku", ("SKU",), required=False),
))

ORDERS = Format("EtsySoldOrders", (
    Column("sale_date", ("Sale Date",)),
    Column("order_id", ("Order ID",)),
    Column("buyer", ("Buyer",), required=False),
    Column("buyer_user_id", ("Buyer User ID",), required=False),
    Column("items", ("Number of Items",), required=False),
    Column("currency", ("Currency",), required=False),
    Column("order_value", ("Order Value",)),
    Column("discount", ("Discount Amount",), required=False),
    Column("shipping_discount", ("Shipping Discount", "Delivery Discount"), required=False),
    Column("shipping", ("Shipping", "Delivery"), required=False),
    Column("sales_tax", ("Sales Tax",), required=False),
    Column("order_total", ("Order Total",), required=False),
    Column("status", ("Status",), required=False),
))

LISTINGS = Format("EtsyListingsDownload", (
    Column("title", ("TITLE",)),
    Column("price", ("PRICE",)),
    Column("currency", ("CURRENCY_CODE",), required=False),
    Column("quantity", ("QUANTITY",), required=False),
    Column("sku", ("SKU",)),
))

# A third-party feed names our listing by id, or by its marketplace id or SKU (one of the three).
COMPETITOR_PRICES = Format("competitor prices", (
    Column("listing_id", ("listing_id", "listing"), required=False),
    Column("external_id", ("external_id", "etsy_listing_id"), required=False),
    Column("sku", ("sku",), required=False),
    Column("competitor", ("competitor",)),
    Column("price", ("price",)),
    Column("currency", ("currency",)),
    Column("observed_at", ("observed_at", "seen_at")),
    Column("source", ("source",), required=False),
))
LISTING_REFERENCES = ("listing_id", "external_id", "sku")


@dataclass
class Table:
    """A file's rows as {our column name: text}, each with its line number."""

    format: Format
    headers: dict[str, str]  # our column name -> the file's header
    rows: list[tuple[int, dict[str, str]]]

    def header(self, name: str) -> str:
        return self.headers.get(name) or self.format.column(name).headers[0]


def read_table(data: bytes, fmt: Format) -> Table:
    """The file's rows; FileRefused naming the line and column when it cannot be read as fmt."""
    text = _decoded(data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise FileRefused(LineProblem(1, None, f"not a CSV header: {e}")) from None
    if not header or not any(h.strip() for h in header):
        raise FileRefused(LineProblem(1, None, f"no header line: an {fmt.name} file starts with its column names"))
    positions = _columns(header, fmt)
    rows, previous_end, width = [], reader.line_num, len(header)
    try:
        for values in reader:
            line = previous_end + 1
            previous_end = reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # a blank line
            if len(values) > width:
                raise FileRefused(LineProblem(line, None, f"{len(values)} fields, the header has {width}"
                                              " (an unquoted comma?)"))
            rows.append((line, {name: values[i] if i < len(values) else "" for name, i in positions.items()}))
    except csv.Error as e:
        raise FileRefused(LineProblem(previous_end + 1, None, f"malformed CSV: {e}")) from None
    return Table(fmt, {name: header[i].strip() for name, i in positions.items()}, rows)


def _decoded(data: bytes) -> str:
    """UTF-8 (a BOM allowed, as spreadsheets write one); anything else is refused naming the line,
    never guessed: a wrong guess would store mangled titles for good."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileRefused(LineProblem(1, None, "UTF-16 (a spreadsheet's \"Unicode text\"), not UTF-8;"
                                      " export the file again as CSV UTF-8"))
    try:
        return codecs.decode(data, "utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FileRefused(LineProblem(line, None, f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start});"
                                      " export the file again as UTF-8")) from None


def _columns(header: list[str], fmt: Format) -> dict[str, int]:
    at = {}
    for i, h in enumerate(header):
        at.setdefault(_normal(h), i)
    seen = [_normal(h) for h in header]
    duplicated = {h for h in seen if seen.count(h) > 1 and h}
    positions = {}
    for column in fmt.columns:
        found = [_normal(h) for h in column.headers if _normal(h) in at]
        if found:
            if found[0] in duplicated:
                raise FileRefused(LineProblem(1, column.headers[0], "appears more than once in the header"))
            positions[column.name] = at[found[0]]
        elif column.required:
            known = " or ".join(repr(h) for h in column.headers)
            raise FileRefused(LineProblem(1, column.headers[0], f"missing column: an {fmt.name} file has {known}"))
    return positions


# -- values ------------------------------------------------------------------------------------
class BadValue(ValueError):
    pass


_AMOUNT = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_CURRENCY_SIGNS = "$£€¥"


def amount(text: str) -> Decimal:
    """'18.99', '1,234.50', '$18.99' -> Decimal; the currency is its own column."""
    cleaned = text.strip().lstrip(_CURRENCY_SIGNS).strip()
    if cleaned.startswith("-") and cleaned[1:2] in _CURRENCY_SIGNS:
        cleaned = "-" + cleaned[2:]
    if _AMOUNT.match(cleaned):
        cleaned = cleaned.replace(",", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise BadValue(f"not a number: {text[:40]!r}") from None
    if not value.is_finite():
        raise BadValue(f"not a finite number: {text[:40]!r}")
    return value


def optional_amount(text: str) -> Decimal | None:
    return amount(text) if text.strip() else None


def whole_number(text: str) -> int:
    cleaned = text.strip()
    if not re.fullmatch(r"-?[0-9]{1,9}", cleaned):
        raise BadValue(f"not a whole number: {text[:40]!r}")
    return int(cleaned)


def optional_whole_number(text: str) -> int | None:
    return whole_number(text) if text.strip() else None


_DATE_FORMATS = ("%m/%d/%y", "%m/%d/%Y", "%Y-%m-%d")  # Etsy writes 12/31/23; older files 12/31/2023


def sale_day(text: str) -> datetime:
    """An Etsy sale date (a day, no time) as noon UTC of that day: the export gives no time, and
    noon keeps the day the same in every time zone within ±11 hours."""
    cleaned = text.strip()
    for fmt in _DATE_FORMATS:
        try:
            day: date = datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
        return datetime.combine(day, time(12), timezone.utc)
    raise BadValue(f"not a date: {text[:40]!r} (expected MM/DD/YY, MM/DD/YYYY or YYYY-MM-DD)")


def moment(text: str) -> datetime:
    """An ISO 8601 time with its offset ('2026-11-25T09:30:00Z'); a time without one is refused."""
    cleaned = text.strip()
    try:
        value = datetime.fromisoformat(cleaned.replace("Z", "+00:00") if cleaned.endswith("Z") else cleaned)
    except ValueError:
        raise BadValue(f"not an ISO 8601 time: {text[:40]!r}") from None
    if value.tzinfo is None:
        raise BadValue(f"{text[:40]!r} has no UTC offset (write e.g. 2026-11-25T09:30:00Z)")
    return value
