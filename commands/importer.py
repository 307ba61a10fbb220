"""Import the UCI "Online Retail" history (Daqing Chen, UCI Machine Learning Repository, CC BY 4.0)
as one GBP shop, through the same command handlers that serve REST clients.

The file is read and shaped with polars; every listing and sale line then goes through
`PricingEngine.open_shop`, `register_listings` and `record_sales`, so the domain decides what is
acceptable and the engine's idempotency makes the import resumable:

- Every command carries a deterministic Idempotency-Key derived from the file's sha256 and the
  chunk number. A rerun after an interruption replays the stored answers of the chunks that were
  accepted (nothing is written twice) and records the rest. The shop is found again the same way.
- Before a chunk is sent, the domain itself (the aggregates, which do no I/O) is asked about it:
  each line it refuses is set aside with the domain's reason, so the command that is sent is a
  function of the file alone and a rerun sends exactly the same command under the same key.
  (Asking the engine instead would not do: on a rerun it refuses the chunk's already-recorded
  transaction ids before it gets to the line the domain refuses.)
- Nothing is dropped silently: every line set aside is counted by reason in the summary and
  written, with its reason, to the rejects file.

How the data's mess maps onto the domain:
- Cancellation invoices ("C…", negative quantity) and zero-price stock adjustments with negative
  quantity become `Returned` events (the SalesBatch records negative quantities that way).
- Lines with UnitPrice 0 are recorded as zero-price sale lines.
- Negative prices (two "Adjust bad debt" lines) are refused by the domain and reported.
- A listing's price is the most frequent positive unit price of its StockCode over the whole file,
  with floor and ceiling left open (quantity-break pricing spans a wide range). A StockCode with no
  positive price, or whose price the domain refuses (0.001 has more decimals than GBP allows), gets
  no listing; its lines are reported, not given an invented price.
- Non-product codes (postage, fees, discounts, manual adjustments...) become listings with status
  "inactive": their lines are real money movements on the shop's invoices, so the imported revenue
  reconciles with the file, while "inactive" keeps them off price boards and repricing.
- InvoiceDate is UK local time; it becomes an aware datetime in Europe/London. A time that does not
  exist or is ambiguous around a clock change would be reported rather than guessed (none occurs).

The listing catalogue always comes from the whole file and chunk boundaries are fixed multiples of
10,000 file rows, so `--limit N` with N a multiple of 10,000 imports a prefix that a later, larger
import continues. Any other N leaves a partial last chunk under that chunk's key: a larger import
afterwards stops with a clear error (same key, different command) instead of recording twice.
"""

from __future__ import annotations

import csv
import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable
from uuid import UUID
from zoneinfo import ZoneInfo

import polars as pl
from pydantic import ValidationError

from commands import models
from commands.context import CommandContext
from commands.listings import Listings, sale_lines
from domain.errors import CommandRefused
from domain.errors import DomainError
from domain.facts import SalesBatch
from domain.listing import Guardrails, Listing
from domain.meta import Actor, ActorKind
from domain.money import Money

CURRENCY = "GBP"
CHUNK_ROWS = models.MAX_BATCH
LONDON = ZoneInfo("Europe/London")
FILE_NAME = "online_retail.parquet"
IMPORT_REASON = "Online Retail (UCI) shop history import"
# The project root's sibling `shared/data/`, wherever the command is started from.
DEFAULT_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / FILE_NAME

# StockCodes that are not goods: each line is a money movement on an invoice.
NON_PRODUCT_CODES = {
    "POST": "postage", "DOT": "dotcom postage", "C2": "carriage",
    "M": "manual adjustment", "m": "manual adjustment", "D": "discount", "S": "samples",
    "BANK CHARGES": "bank charges", "AMAZONFEE": "Amazon fee", "CRUK": "CRUK commission",
    "B": "bad debt adjustment", "PADS": "cushion pads placeholder",
}

_INDEXED_FIELD = re.compile(r"^(?P<list>\w+)\[(?P<index>\d+)\]\.?(?P<rest>.*)$")


class ImportFailed(Exception):
    """The import cannot go on (a refusal that names no line, a file that does not match...)."""


@dataclass(frozen=True)
class Reject:
    row: int  # 0-based row in the file
    invoice: str
    stock_code: str
    quantity: int
    unit_price: float
    invoice_date: str
    reason: str


@dataclass
class ImportSummary:
    file: Path
    sha256: str
    shop_id: UUID | None = None
    rows: int = 0
    listings: int = 0
    inactive_listings: int = 0
    refused_listings: Counter = field(default_factory=Counter)  # reason -> StockCodes
    sale_lines: int = 0  # positive quantity (Sold)
    returns: int = 0  # negative quantity (Returned)
    zero_price_lines: int = 0  # recorded lines with unit price 0 (either kind)
    rejected: Counter = field(default_factory=Counter)  # reason -> lines
    chunks_recorded: int = 0
    chunks_replayed: int = 0
    rejects_file: Path | None = None
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        out = [
            f"shop {self.shop_id} (GBP) from {self.file.name} sha256 {self.sha256[:12]}…",
            f"rows read           {self.rows:>9,}",
            f"listings            {self.listings:>9,}  ({self.inactive_listings} inactive non-product codes)",
        ]
        for reason, n in self.refused_listings.most_common():
            out.append(f"  no listing        {n:>9,}  StockCodes: {reason}")
        out += [
            f"sale lines          {self.sale_lines:>9,}",
            f"returns             {self.returns:>9,}  (negative quantity: cancellations, adjustments)",
            f"zero-price lines    {self.zero_price_lines:>9,}  (included above)",
            f"rejected            {sum(self.rejected.values()):>9,}" +
            (f"  -> {self.rejects_file}" if self.rejects_file else ""),
        ]
        for reason, n in self.rejected.most_common():
            out.append(f"  {n:>9,}  {reason}")
        out.append(f"commands            {self.chunks_recorded} recorded, {self.chunks_replayed} replayed"
                   " (already accepted by an earlier run)")
        out.append(f"seconds             {self.seconds:>9.1f}  ({self.rows_per_s:,.0f} rows/s)")
        return out


# -- the file ---------------------------------------------------------------------------------
def find_file(path: str | Path | None = None) -> Path:
    """The given path, else the shared data set next to the project, else one seen from the cwd."""
    candidates = [Path(path)] if path else [DEFAULT_FILE, Path.cwd().parent / "shared" / "data" / FILE_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ImportFailed(f"data file not found; looked at: {', '.join(str(c) for c in candidates)}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sale_lines(path: Path) -> pl.DataFrame:
    """Every row of the file in file order, with its row number and its line number in its invoice."""
    frame = pl.read_parquet(path).with_row_index("row")
    return frame.with_columns(
        line=pl.int_range(1, pl.len() + 1).over("InvoiceNo"),  # rows of an invoice are in file order
    ).with_columns(
        transaction_id=pl.format("{}-{}", "InvoiceNo", "line"),
    )


def catalogue(lines: pl.DataFrame) -> pl.DataFrame:
    """One row per StockCode: title, price (most frequent positive unit price), status.

    Ties are broken deterministically (the lower price, the alphabetically first description) so
    that reruns build the same command. price is null when the code never sold above zero."""
    priced = lines.filter(pl.col("UnitPrice") > 0)
    prices = (priced.group_by("StockCode", "UnitPrice").len()
              .sort(["StockCode", "len", "UnitPrice"], descending=[False, True, False])
              .group_by("StockCode", maintain_order=True).first()
              .select("StockCode", price="UnitPrice"))
    titles = (priced.filter(pl.col("Description").str.strip_chars() != "")
              .group_by("StockCode", "Description").len()
              .sort(["StockCode", "len", "Description"], descending=[False, True, False])
              .group_by("StockCode", maintain_order=True).first()
              .select("StockCode", title=pl.col("Description").str.strip_chars()))
    codes = lines.group_by("StockCode").agg(pl.len().alias("lines"), pl.col("row").min().alias("first_row"))
    return (codes.join(prices, on="StockCode", how="left").join(titles, on="StockCode", how="left")
            .with_columns(
                title=pl.coalesce("title", pl.format("Stock item {}", "StockCode")),
                status=pl.when(pl.col("StockCode").is_in(list(NON_PRODUCT_CODES)))
                         .then(pl.lit("inactive")).otherwise(pl.lit("active")),
            ).sort("first_row"))


def local_time(text: str) -> datetime | str:
    """UK local wall-clock time -> aware datetime, or the reason it cannot be one without guessing."""
    naive = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    early, late = naive.replace(tzinfo=LONDON, fold=0), naive.replace(tzinfo=LONDON, fold=1)
    if early.utcoffset() != late.utcoffset():
        return "InvoiceDate: local time is ambiguous or does not exist (clock change in Europe/London)"
    return early


# -- the import -------------------------------------------------------------------------------
class OnlineRetailImport:
    """One run of the import. `run()` is safe to repeat: accepted commands are replayed, not redone."""

    def __init__(self, listings: Listings, path: Path, tenant: str, shop_name: str = "Online Retail (UCI)",
                 limit: int | None = None, rejects_file: Path | None = None,
                 progress: Callable[[int, int, float], None] | None = None):
        self.listings = listings
        self.path = path
        self.tenant = tenant
        self.shop_name = shop_name
        self.limit = limit
        self.rejects_file = rejects_file
        self.progress = progress
        self.summary = ImportSummary(file=path, sha256=file_sha256(path))
        self.rejects: list[Reject] = []
        self._times: dict[str, datetime | str] = {}

    # -- identity of every command ----------------------------------------------------------
    def _key(self, *parts: object) -> str:
        return ":".join(["online-retail", self.summary.sha256, *map(str, parts)])

    def _ctx(self, key: str) -> CommandContext:
        return CommandContext(
            actor=Actor("importer:online-retail", ActorKind.SERVICE), tenant_id=self.tenant,
            command_id=hashlib.sha256(key.encode()).hexdigest()[:32],
            correlation_id=self._key("import"), idempotency_key=key)

    def _count(self, result) -> None:
        if result.replayed:
            self.summary.chunks_replayed += 1
        else:
            self.summary.chunks_recorded += 1

    # -- steps ------------------------------------------------------------------------------
    def run(self) -> ImportSummary:
        started = time.monotonic()
        lines = read_sale_lines(self.path)
        self.summary.shop_id = self.open_shop()
        listings = self.register_listings(catalogue(lines))
        todo = lines.head(self.limit) if self.limit is not None else lines
        self.summary.rows = todo.height
        self.record_sales(todo, listings, started)
        self.write_rejects()
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def open_shop(self) -> UUID:
        ctx = self._ctx(self._key("shop"))
        result = self.listings.open_shop(ctx, models.OpenShop(name=self.shop_name, currency=CURRENCY, marketplace="other"))
        self._count(result)
        return UUID(result.body["shop_id"])

    def register_listings(self, codes: pl.DataFrame) -> dict[str, UUID | str]:
        """StockCode -> listing id, or -> the reason it has no listing."""
        outcome: dict[str, UUID | str] = {}
        specs: list[models.ListingSpec] = []
        meta = self._ctx("dry-run").meta(self.summary.shop_id)
        for code, title, price, status in codes.select("StockCode", "title", "price", "status").iter_rows():
            try:
                spec = models.ListingSpec(external_id=code, sku=code, title=title, price=price if price else "0",
                                          currency=CURRENCY, status=status)
                Listing.register(self.summary.shop_id, code, code, title, status,  # the domain's verdict
                                 Money.price(spec.price, CURRENCY, "price"), Guardrails(), meta)
                specs.append(spec)
            except DomainError as e:
                outcome[code] = self._listing_refusal(e.field, e.detail, price)
            except ValidationError as e:
                outcome[code] = _validation_reason(e)
        for number, start in enumerate(range(0, len(specs), CHUNK_ROWS)):
            batch = specs[start:start + CHUNK_ROWS]
            result = self._send(f"listings:{number}", lambda ctx: self.listings.register_listings(
                ctx, self.summary.shop_id, models.RegisterListings(listings=batch, source="import", reason=IMPORT_REASON)))
            for spec, answer in zip(batch, result.body["listings"], strict=True):
                outcome[spec.external_id] = UUID(answer["listing_id"])
                self.summary.listings += 1
                self.summary.inactive_listings += spec.status == "inactive"
        for reason in outcome.values():
            if isinstance(reason, str):
                self.summary.refused_listings[reason] += 1
        return outcome

    @staticmethod
    def _listing_refusal(field: str, detail: str, price: float | None) -> str:
        if price is None:
            return "never sold at a positive unit price (a listing price must be greater than zero)"
        return f"{field}: {detail} (most frequent positive unit price {price!r})"

    def record_sales(self, rows: pl.DataFrame, listings: dict[str, UUID | str], started: float) -> None:
        columns = ("row", "InvoiceNo", "StockCode", "Quantity", "UnitPrice", "InvoiceDate", "transaction_id")
        for number, offset in enumerate(range(0, rows.height, CHUNK_ROWS)):
            chunk = rows.slice(offset, CHUNK_ROWS).select(columns)
            sales, sources = [], []
            for source in chunk.iter_rows():
                sale = self._sale_in(source, listings)
                if sale is not None:
                    sales.append(sale)
                    sources.append(source)
            sales = self._domain_accepts(sales, sources)
            if sales:
                self._send(f"sales:{number}", lambda ctx: self.listings.record_sales(
                    ctx, self.summary.shop_id, models.RecordSales(sales=sales, source="import", reason=IMPORT_REASON)))
            for sale in sales:
                self.summary.sale_lines += sale.quantity > 0
                self.summary.returns += sale.quantity < 0
                self.summary.zero_price_lines += sale.unit_price == 0
            if self.progress:
                self.progress(offset + chunk.height, rows.height, time.monotonic() - started)

    def _sale_in(self, source: tuple, listings: dict[str, UUID | str]) -> models.SaleIn | None:
        _, invoice, code, quantity, price, when, transaction_id = source
        listing = listings.get(code)
        if not isinstance(listing, UUID):
            self._reject(source, f"StockCode has no listing: {listing}")
            return None
        sold_at = self._times.get(when) or self._times.setdefault(when, local_time(when))
        if isinstance(sold_at, str):
            self._reject(source, sold_at)
            return None
        try:
            return models.SaleIn(listing_id=listing, quantity=quantity, unit_price=price, currency=CURRENCY,
                                 order_id=invoice, transaction_id=transaction_id, sold_at=sold_at)
        except ValidationError as e:
            self._reject(source, _validation_reason(e))
            return None

    def _domain_accepts(self, sales: list[models.SaleIn], sources: list[tuple]) -> list[models.SaleIn]:
        """The lines the domain accepts, as the engine's handler would build them; each refused line
        is set aside with the domain's reason (it names the line: `sales[12].unit_price`)."""
        meta = self._ctx("dry-run").meta(self.summary.shop_id)
        sales, sources = list(sales), list(sources)
        while sales:
            try:
                SalesBatch.record(self.summary.shop_id, CURRENCY, sale_lines(sales), meta)
                return sales
            except DomainError as e:
                index, reason = _refused_item(e.field, e.detail, "sales")
                if index is None or index >= len(sales):
                    raise ImportFailed(f"the domain refused a whole chunk of sales: {e}") from None
                sales.pop(index)
                self._reject(sources.pop(index), reason)
        return sales

    def _send(self, name: str, command: Callable):
        """One command under its deterministic key: recorded now, or replayed from an earlier run."""
        try:
            result = command(self._ctx(self._key(name)))
        except (DomainError, CommandRefused) as e:
            raise ImportFailed(f"{name}: {type(e).__name__}: {e.detail} ({e.field or 'no field'}). If an earlier "
                               "run used another --limit or --shop-name, rerun with the same options.") from None
        self._count(result)
        return result

    def _reject(self, source: tuple, reason: str) -> None:
        row, invoice, code, quantity, price, when, _ = source
        self.rejects.append(Reject(row, invoice, code, quantity, price, when, reason))
        self.summary.rejected[reason] += 1

    def write_rejects(self) -> None:
        if self.rejects_file is None:
            return
        self.rejects_file.parent.mkdir(parents=True, exist_ok=True)
        with self.rejects_file.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "InvoiceNo", "StockCode", "Quantity", "UnitPrice", "InvoiceDate", "reason"])
            for r in sorted(self.rejects, key=lambda r: r.row):
                writer.writerow([r.row, r.invoice, r.stock_code, r.quantity, repr(r.unit_price), r.invoice_date, r.reason])
        self.summary.rejects_file = self.rejects_file


def _refused_item(field: str, detail: str, list_name: str) -> tuple[int | None, str]:
    """`sales[12].unit_price` -> (12, "sales.unit_price: <detail>")."""
    match = _INDEXED_FIELD.match(field or "")
    if not match or match["list"] != list_name:
        return None, detail
    rest = f".{match['rest']}" if match["rest"] else ""
    return int(match["index"]), f"{list_name}{rest}: {detail}"


def _validation_reason(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"


def run_import(listings: Listings, path: str | Path | None, tenant: str, shop_name: str, limit: int | None = None,
               rejects_file: Path | None = None,
               progress: Callable[[int, int, float], None] | None = None) -> ImportSummary:
    return OnlineRetailImport(listings, find_file(path), tenant, shop_name, limit, rejects_file, progress).run()
