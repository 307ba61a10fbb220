"""Sellers' CSV files imported through the command handlers: Etsy's order items (sales), orders
and listings downloads, and third-party competitor price feeds.

The approach is the Online Retail importer's (commands/importer.py), whose helpers it shares:
- The whole file is read and every line checked first: by the command models (pydantic, as the
  REST routes check them) and by the domain itself (the aggregates, which do no I/O), so a line
  the engine would refuse is known, with its line and column, before anything is sent. By default
  any such line refuses the whole file and nothing is written; with `skip_invalid` the other lines
  are imported and the refused ones reported.
- A chunk of up to 10,000 lines is one command: all or nothing.
- Idempotent by the facts' own identities, not only by file: a transaction id, an order id, a
  listing's SKU or a competitor observation already in the shop (from an earlier file, an
  overlapping export, the sync) is counted as already recorded and not sent again; the engine
  reserves each identity with its batch, so a race or a rerun can never record one twice. Each
  command also carries a deterministic Idempotency-Key (file hash, chunk, its lines), so a retry
  of a command whose answer was lost replays it.
- Resumable: a rerun after an interruption finds the chunks already recorded and sends the rest.
- Personal data minimised: buyer names, addresses and e-mails are never read into a command; the
  buyer is kept only as a keyed pseudonym (commands/marketplace_facts.py Pseudonyms).
"""

from __future__ import annotations

import gc
import hashlib
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import zip_longest
from typing import Callable, Iterator
from uuid import UUID

from pydantic import ValidationError

from commands import models
from commands.context import CommandContext, Result
from commands.csv_files import (COMPETITOR_PRICES, LISTING_REFERENCES, LISTINGS, ORDER_ITEMS, ORDERS, BadValue,
                                FileRefused, Format, LineProblem, Table, amount, moment, optional_amount,
                                optional_whole_number, read_table, sale_day, whole_number)
from commands.importer import _refused_item
from commands.listings import sale_lines
from commands.marketplace_facts import (OBSERVATION, ORDER, MarketplaceFacts, Pseudonyms, RecordOrders,
                                        observation_key, order_facts)
from domain.errors import CommandRefused, Conflict, DomainError
from domain.facts import Observation, ObservationBatch, SalesBatch
from domain.listing import Guardrails, Listing
from domain.money import Money
from domain.orders import TOTALS, OrderBatch

CHUNK = models.MAX_BATCH
WRITERS = 2  # order items: commands in flight at once
MAX_PROBLEMS = 1000  # reported per run; the count is always exact
SALE, LISTING_SKU = "sale_transaction", "sku"  # the engine's own reservation kinds
_UNSEEN = object()


class _PausedCollector:
    """Python's cyclic garbage collector paused while imports run. An import builds some thirty
    objects a line that all live until it ends (rows, items, events): the collector's passes over
    them took a fifth of its CPU and found no cycle to free. Reference counting frees everything
    as usual meanwhile; the collector resumes when the last concurrent import ends."""

    def __init__(self):
        self._lock, self._runs, self._was_enabled = threading.Lock(), 0, False

    @contextmanager
    def paused(self):
        with self._lock:
            if not self._runs:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._runs += 1
        try:
            yield
        finally:
            with self._lock:
                self._runs -= 1
                if not self._runs and self._was_enabled:
                    gc.enable()


COLLECTOR = _PausedCollector()


class _Skip(Exception):
    """This line was set aside (its problem is recorded)."""


@dataclass
class CsvSummary:
    kind: str
    file: str
    sha256: str
    shop_id: UUID
    lines: int = 0
    recorded: int = 0  # facts (or listings) this run wrote
    already_recorded: int = 0  # in the shop before this run: an earlier file, an overlapping export, the sync
    duplicates: int = 0  # the same record again later in this file
    out_of_order: int = 0  # older than an earlier line of the same listing and competitor (recorded all the same)
    orders_recorded: int = 0  # orders (buyer pseudonyms) the order-items file added
    prices_differ: list[str] = field(default_factory=list)  # listings download: known SKUs priced otherwise
    invalid: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    chunks_recorded: int = 0
    chunks_replayed: int = 0
    seconds: float = 0.0

    def problem(self, line: int, column: str | None, detail: str) -> None:
        self.invalid += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(LineProblem(line, column, detail))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "file": self.file, "sha256": self.sha256, "shop_id": str(self.shop_id),
                "lines": self.lines, "recorded": self.recorded, "already_recorded": self.already_recorded,
                "duplicates": self.duplicates, "out_of_order": self.out_of_order,
                "orders_recorded": self.orders_recorded, "prices_differ": self.prices_differ[:MAX_PROBLEMS],
                "invalid": self.invalid,
                "problems": [{"line": p.line, "column": p.column, "detail": p.detail} for p in self.problems],
                "commands": {"recorded": self.chunks_recorded, "replayed": self.chunks_replayed},
                "seconds": round(self.seconds, 3)}

    def text(self) -> list[str]:
        out = [f"{self.kind} {self.file} (sha256 {self.sha256[:12]}…) into shop {self.shop_id}",
               f"lines               {self.lines:>9,}",
               f"recorded            {self.recorded:>9,}",
               f"already recorded    {self.already_recorded:>9,}  (an earlier import or sync)",
               f"duplicate lines     {self.duplicates:>9,}  (the same record again in this file)"]
        if self.kind == "competitor-prices":
            out.append(f"out of order        {self.out_of_order:>9,}  (older than an earlier line; recorded)")
        if self.kind == "etsy-order-items":
            out.append(f"orders recorded     {self.orders_recorded:>9,}  (buyer pseudonyms)")
        if self.prices_differ:
            out.append(f"prices differ       {len(self.prices_differ):>9,}  (known SKUs, left as they are: "
                       f"{', '.join(self.prices_differ[:10])}{', …' if len(self.prices_differ) > 10 else ''})")
        out.append(f"invalid lines       {self.invalid:>9,}" + ("  (set aside)" if self.invalid else ""))
        out += [f"  {p}" for p in self.problems]
        out.append(f"commands            {self.chunks_recorded} recorded, {self.chunks_replayed} replayed")
        rate = self.lines / self.seconds if self.seconds else 0.0
        out.append(f"seconds             {self.seconds:>9.2f}  ({rate:,.0f} lines/s)")
        return out


class InvalidLines(Exception):
    """Lines the engine would refuse: nothing was written."""

    def __init__(self, summary: CsvSummary):
        first = summary.problems[0]
        super().__init__(f"{summary.invalid} invalid line(s), nothing written; first: {first}")
        self.summary = summary


@dataclass
class Pending:
    """Lines checked and ready: the command items and each one's file line."""

    items: list = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # each item's identity in the shop

    def add(self, item, line: int, key: str) -> None:
        self.items.append(item)
        self.lines.append(line)
        self.keys.append(key)

    def drop(self, index: int) -> int:
        self.items.pop(index)
        self.keys.pop(index)
        return self.lines.pop(index)

    def chunks(self) -> Iterator[tuple[int, Pending]]:
        """(number, chunk) of CHUNK items each (the last fewer), in order: one command each."""
        for number, start in enumerate(range(0, len(self.items), CHUNK)):
            yield number, Pending(self.items[start:start + CHUNK], self.lines[start:start + CHUNK],
                                  self.keys[start:start + CHUNK])


class CsvImport:
    """One run over one file. Subclasses parse their format's lines and send their command."""

    kind: str
    format: Format
    reservation: str  # the kind of identity the engine reserves for each item
    list_name: str  # how the command names its items (`sales[3]`)

    def __init__(self, facts: MarketplaceFacts, caller: CommandContext, shop_id: UUID, data: bytes, file_name: str,
                 skip_invalid: bool = False, pseudonyms: Pseudonyms | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.facts, self.listings, self.core = facts, facts.listings, facts.core
        self.caller, self.shop_id, self.data = caller, shop_id, data
        self.skip_invalid, self.pseudonyms, self.progress = skip_invalid, pseudonyms, progress
        self.summary = CsvSummary(self.kind, file_name, hashlib.sha256(data).hexdigest(), shop_id)
        self.buyer_ids: dict[str, str | None] = {}  # a buyer as the file writes it -> its pseudonym
        self.currency = ""
        self._parsed: dict[str, dict[str, object]] = defaultdict(dict)  # column -> text -> value or BadValue
        self._counting = threading.Lock()

    def find_buyers(self, buyers) -> None:
        """The pseudonyms of a chunk's buyers, in one batch (commands/marketplace_facts.py Pseudonyms)."""
        if self.pseudonyms:
            self.buyer_ids = self.pseudonyms.of_many(self.core, self.caller.tenant_id, self.shop_id, buyers)

    # -- the run --------------------------------------------------------------------------
    def run(self, table: Table | None = None) -> CsvSummary:
        """Imports the file (or rows already read, as a feed's records)."""
        with COLLECTOR.paused():
            return self._run(table)

    def _run(self, table: Table | None) -> CsvSummary:
        started = time.monotonic()
        _, self.currency = self.core.shop_facts(self.caller, self.shop_id)  # others' shops: NotFound
        table = table or read_table(self.data, self.format)
        self.summary.lines = len(table.rows)
        pending = self.accepted(self.validated(self.parse(table), table), table)
        self.domain_check(pending, table)
        self.summary.problems.sort(key=lambda p: p.line)
        if self.summary.invalid and not self.skip_invalid:
            raise InvalidLines(self.summary)
        self.write(pending)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def write(self, pending: Pending) -> None:
        done = 0
        for number, chunk in pending.chunks():
            self._sent_chunk(*self.send_new(number, chunk))
            done += len(chunk.items)
            if self.progress:
                self.progress(done, len(pending.items))

    def _sent_chunk(self, recorded: int, held: int) -> None:
        self.summary.recorded += recorded
        self.summary.already_recorded += held

    def send_new(self, number: int, chunk: Pending, reservation: str | None = None, list_name: str | None = None,
                 send: Callable[[CommandContext, list], Result] | None = None) -> tuple[int, int]:
        """Sends the chunk's items the shop does not hold yet: (how many it recorded, how many it held).
        All are sent first without a look (which would cost a lookup of every key): the engine
        refuses an identity the shop holds, and a rerun of this file replays its commands."""
        reservation, list_name = reservation or self.reservation, list_name or self.list_name
        send = send or (lambda ctx, items: self.command(ctx, self.batch(items)))
        held: set[str] = set()
        for attempt in range(4):  # a concurrent import may take an identity between a look and the send
            if attempt:
                held = self.facts.recorded(self.shop_id, reservation, chunk.keys)
            new = [i for i, key in enumerate(chunk.keys) if key not in held]
            if not new:
                return 0, len(chunk.keys)
            items, keys = [chunk.items[i] for i in new], [chunk.keys[i] for i in new]
            digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
            key = f"{self.kind}:{self.summary.sha256[:32]}:{list_name}:{number}:{digest}"
            try:
                result = send(self._ctx(key), items)
            except CommandRefused as e:
                index, _ = _refused_item(e.field or "", e.detail, list_name)
                if index is None or not isinstance(e, Conflict):
                    raise
                continue  # taken meanwhile: look again
            self._count(result)
            if result.replayed:  # recorded by an earlier run of this file, not by this one
                return 0, len(chunk.keys)
            if reservation == self.reservation:
                self.sent(items)
            return len(items), len(chunk.keys) - len(items)
        raise CommandRefused(f"{list_name} of chunk {number}: kept being recorded concurrently; run the import again")

    def _ctx(self, key: str) -> CommandContext:
        return replace(self.caller, command_id=hashlib.sha256(key.encode()).hexdigest()[:32], idempotency_key=key,
                       correlation_id=f"{self.kind}:{self.summary.sha256[:32]}")

    def _count(self, result: Result) -> None:
        with self._counting:  # order-items files send sales and orders from two threads
            self._tally(result)

    def _tally(self, result: Result) -> None:
        if result.replayed:
            self.summary.chunks_replayed += 1
        else:
            self.summary.chunks_recorded += 1

    # -- checking lines -------------------------------------------------------------------
    def domain_check(self, pending: Pending, table: Table) -> None:
        """Asks the domain about each chunk as the handler will build it; when it refuses one, about
        each of its lines alone (a file of many bad lines costs one pass, not one per line), and
        sets each refused line aside naming the column its field came from."""
        meta = self.caller.meta(self.shop_id, "import")
        refused: set[int] = set()
        for start in range(0, len(pending.items), CHUNK):
            chunk = range(start, min(start + CHUNK, len(pending.items)))
            try:
                self.decide(pending.items[chunk.start:chunk.stop], meta)
                continue
            except DomainError:
                pass
            for i in chunk:
                try:
                    self.decide([pending.items[i]], meta)
                except DomainError as e:
                    refused.add(i)
                    self._refused(e, pending.lines[i], table)
            rest = [pending.items[i] for i in chunk if i not in refused]
            if rest:
                self.decide(rest, meta)  # the rest, together: what the command will be
        if refused:
            kept = [i for i in range(len(pending.items)) if i not in refused]
            pending.items[:] = [pending.items[i] for i in kept]
            pending.lines[:] = [pending.lines[i] for i in kept]
            pending.keys[:] = [pending.keys[i] for i in kept]

    def _refused(self, error: DomainError, line: int, table: Table) -> None:
        """`sales[0].unit_price: must not be negative` -> the line's problem in column Price."""
        index, _ = _refused_item(error.field, error.detail, self.list_name)
        if index is None:
            raise error  # not about an item: the command as a whole (cannot come from one line)
        name = error.field.split("]", 1)[1].lstrip(".").split(".")[0]
        self.summary.problem(line, table.header(self.FIELD_COLUMNS.get(name, name)) if name else None, error.detail)

    FIELD_COLUMNS: dict[str, str] = {}  # a command field -> the column it is read from

    def value(self, table: Table, line: int, row: dict[str, str], name: str, parse: Callable):
        """The column's text parsed, each distinct text once: a file repeats its prices, quantities and days."""
        text, parsed = row.get(name, ""), self._parsed[name]
        known = parsed.get(text, _UNSEEN)
        if known is _UNSEEN:
            try:
                known = parse(text)
            except BadValue as e:
                known = e
            parsed[text] = known
        if isinstance(known, BadValue):
            self.summary.problem(line, table.header(name), str(known))
            raise _Skip
        return known

    def validated(self, pending: Pending, table: Table) -> Pending:
        """The lines as the command model makes them (pydantic, as the REST route validates them), one
        call per chunk; each line it refuses is set aside naming its column."""
        valid = Pending()
        for _, chunk in pending.chunks():
            while chunk.items:
                try:
                    command = self.batch(chunk.items)
                    break
                except ValidationError as e:
                    self._set_aside(e, chunk, table)
            if chunk.items:
                for item, line, key in zip(getattr(command, self.list_name), chunk.lines, chunk.keys):
                    valid.add(item, line, key)
        return valid

    def _set_aside(self, error: ValidationError, chunk: Pending, table: Table) -> None:
        refused: dict[int, dict] = {}
        for e in error.errors():
            loc = e["loc"]
            if len(loc) < 2 or loc[0] != self.list_name or not isinstance(loc[1], int):
                raise error  # not about a line: the command as a whole (cannot happen with lines of the file)
            refused.setdefault(loc[1], e)
        for index in sorted(refused, reverse=True):
            loc = refused[index]["loc"]
            name = str(loc[2]) if len(loc) > 2 else ""
            self.summary.problem(chunk.lines[index], table.header(self.FIELD_COLUMNS.get(name, name)) if name else None,
                                 refused[index]["msg"])
            chunk.drop(index)

    def accepted(self, pending: Pending, table: Table) -> Pending:
        """Validated lines, before the domain is asked: a kind's own de-duplication goes here."""
        return pending

    def sent(self, items: list) -> None:
        """Told the items just recorded (not those the shop held already), in file order."""

    def each_once(self, table: Table, make: Callable, key: str) -> Pending:
        """Each line made into an item (a dict) by `make`, once per its `key`."""
        pending, seen = Pending(), {}
        for line, row in table.rows:
            try:
                item = make(table, line, row)
                if self.once(seen, table, line, item[key], key, tuple(item.values())):
                    pending.add(item, line, item[key])
            except _Skip:
                continue
        return pending

    def same_currency(self, table: Table, line: int, row: dict[str, str]) -> str:
        given = row.get("currency", "").strip() or self.currency
        if given != self.currency:
            self.summary.problem(line, table.header("currency"), f"{given[:10]!r} is not the shop's currency {self.currency}")
            raise _Skip
        return given

    def once(self, seen: dict[str, tuple[int, tuple]], table: Table, line: int, key: str, column: str,
             signature: tuple) -> bool:
        """True the first time a record is seen; a repeat with the same values is a duplicate
        (counted, not sent), one with other values a problem."""
        if key not in seen:
            seen[key] = (line, signature)
            return True
        first_line, first = seen[key]
        if first == signature:
            self.summary.duplicates += 1
            return False
        self.summary.problem(line, table.header(column), f"{key!r} also at line {first_line} with other values")
        raise _Skip

    # -- what subclasses provide ----------------------------------------------------------
    def parse(self, table: Table) -> Pending:
        raise NotImplementedError

    def decide(self, items: list, meta) -> None:
        raise NotImplementedError

    def batch(self, items: list) -> models.Command:
        """The command that records these items (dicts of the file's values, or validated items)."""
        raise NotImplementedError

    def command(self, ctx: CommandContext, batch: models.Command) -> Result:
        raise NotImplementedError

    def resolve(self, kind: str, keys: set[str]) -> dict[str, UUID]:
        found = self.core.recorder.reserved(self.shop_id, kind, sorted(keys)) if keys else {}
        return {k: v if isinstance(v, UUID) else UUID(str(v)) for k, v in found.items()}


IMPORT_REASON = "Etsy CSV import"


class OrderItemsImport(CsvImport):
    """EtsySoldOrderItems: each line a sale (idempotent by Transaction ID), matched to a listing by
    its Etsy Listing ID, else by SKU; each order's buyer recorded as a pseudonym."""

    kind, format, reservation, list_name = "etsy-order-items", ORDER_ITEMS, SALE, "sales"
    FIELD_COLUMNS = {"quantity": "quantity", "unit_price": "price", "currency": "currency", "order_id": "order_id",
                     "transaction_id": "transaction_id", "sold_at": "sale_date", "listing_id": "listing_id"}

    def parse(self, table: Table) -> Pending:
        by_listing = self.resolve("external_id", {r.get("listing_id", "").strip() for _, r in table.rows} - {""})
        by_sku = self.resolve(LISTING_SKU, {r.get("sku", "").strip() for _, r in table.rows} - {""})
        pending, seen, orders = Pending(), {}, {}
        self.buyers: dict[int, str | None] = {}  # line -> the buyer's pseudonym
        self.find_buyers(r.get("buyer", "") for _, r in table.rows)
        for line, row in table.rows:
            try:
                sale = self._sale(table, line, row, by_listing, by_sku)
                self._same_order(orders, table, line, row, sale)
                if self.once(seen, table, line, sale["transaction_id"], "transaction_id", tuple(sale.values())):
                    pending.add(sale, line, sale["transaction_id"])
                    self.buyers[line] = self.buyer_ids.get(row.get("buyer", ""))
            except _Skip:
                continue
        return pending

    def _same_order(self, orders: dict, table: Table, line: int, row: dict[str, str], sale: dict) -> None:
        """The lines of one order agree on its day and buyer; one that does not was cut from
        another order or edited, and is refused naming the order's first line."""
        facts = (sale["sold_at"], row.get("buyer", "").strip().casefold())
        first = orders.setdefault(sale["order_id"], (line, facts))
        for name, mine, theirs in (("sale_date", facts[0], first[1][0]), ("buyer", facts[1], first[1][1])):
            if mine != theirs:
                self.summary.problem(line, table.header(name), f"order {sale['order_id']!r} says otherwise at line "
                                     f"{first[0]} (the lines of one order share its day and buyer)")
                raise _Skip

    def _sale(self, table, line, row, by_listing, by_sku) -> dict:
        listing_ref, sku = row["listing_id"].strip(), row.get("sku", "").strip()
        listing = by_listing.get(listing_ref) or by_sku.get(sku)
        if listing is None:
            self.summary.problem(line, table.header("listing_id"), f"no listing of this shop has Etsy listing id "
                                 f"{listing_ref!r}" + (f" or SKU {sku!r}" if sku else "") +
                                 " (import the listings download first)")
            raise _Skip
        quantity = self.value(table, line, row, "quantity", whole_number)
        price = self.value(table, line, row, "price", amount)
        sold_at = self.value(table, line, row, "sale_date", sale_day)
        currency = self.same_currency(table, line, row)
        return {"listing_id": listing, "quantity": quantity, "unit_price": price, "currency": currency,
                "order_id": row["order_id"].strip(), "transaction_id": row["transaction_id"].strip(),
                "sold_at": sold_at}

    def orders(self, pending: Pending) -> Pending:
        """Each order of the accepted lines, once: its buyer's pseudonym, units and first sale day."""
        orders: dict[str, list] = {}
        for sale, line in zip(pending.items, pending.lines):
            known = orders.get(sale.order_id)
            if known is None:
                orders[sale.order_id] = [line, self.buyers.get(line), sale.quantity, sale.sold_at]
            else:
                known[2] += sale.quantity
                known[3] = min(known[3], sale.sold_at)
        found = Pending()
        for order_id, (line, buyer, units, placed_at) in orders.items():
            found.add({"order_id": order_id, "buyer": buyer, "items": max(units, 1), "placed_at": placed_at,
                       "currency": self.currency}, line, order_id)
        return found

    def decide(self, items: list, meta) -> None:
        SalesBatch.check(self.currency, sale_lines(items))  # what record() refuses, without its events

    def batch(self, items: list) -> models.Command:
        return models.RecordSales(sales=items, source="import", reason=IMPORT_REASON)

    def command(self, ctx: CommandContext, batch: models.Command) -> Result:
        return self.listings.record_sales(ctx, self.shop_id, batch)

    def write(self, pending: Pending) -> None:
        """Sales and orders (independent facts, each idempotent) in commands of a chunk each, WRITERS
        of them in flight: one is built while another's waits on the database. The first that fails
        stops those not started; those committed stay (a rerun sends only the rest)."""
        sales = [(c, partial(self.send_new, n, c)) for n, c in pending.chunks()]
        orders = [(None, partial(self.send_new, n, c, ORDER, "orders", self._record_orders))
                  for n, c in self.orders(pending).chunks()]
        jobs = [job for pair in zip_longest(sales, orders) for job in pair if job]  # mixed: neither waits for the other
        done = 0
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="csv-writer") as pool:
            futures = [(sales_chunk, pool.submit(send)) for sales_chunk, send in jobs]
            try:
                for sales_chunk, future in futures:  # in order, so that progress only moves forward
                    recorded, held = future.result()
                    if sales_chunk is None:  # an order the shop knew before is no news: not counted as already recorded
                        self.summary.orders_recorded += recorded
                        continue
                    self._sent_chunk(recorded, held)
                    done += len(sales_chunk.items)
                    if self.progress:
                        self.progress(done, len(pending.items))
            except BaseException:
                for _, future in futures:
                    future.cancel()
                raise

    def _record_orders(self, ctx: CommandContext, items: list) -> Result:
        return self.facts.record_orders(ctx, self.shop_id, RecordOrders(orders=items, reason=IMPORT_REASON))


class OrdersImport(CsvImport):
    """EtsySoldOrders: one order per line with its totals, idempotent by Order ID; the buyer only
    as a pseudonym (Full Name, addresses and the like are never read)."""

    kind, format, reservation, list_name = "etsy-orders", ORDERS, ORDER, "orders"
    FIELD_COLUMNS = {"order_id": "order_id", "placed_at": "sale_date", "items": "items", "currency": "currency",
                     "status": "status", "order_value": "order_value", "discount": "discount",
                     "shipping": "shipping", "shipping_discount": "shipping_discount", "sales_tax": "sales_tax",
                     "order_total": "order_total"}

    def parse(self, table: Table) -> Pending:
        self.find_buyers(_buyer_of(r) for _, r in table.rows)
        return self.each_once(table, self._order, "order_id")

    def _order(self, table: Table, line: int, row: dict[str, str]) -> dict:
        placed_at = self.value(table, line, row, "sale_date", sale_day)
        totals = {name: self.value(table, line, row, name, optional_amount) for name in TOTALS}
        items = self.value(table, line, row, "items", optional_whole_number)
        currency = self.same_currency(table, line, row)
        buyer = self.buyer_ids.get(_buyer_of(row))
        status = row.get("status", "").strip() or None
        return {"order_id": row["order_id"].strip(), "buyer": buyer, "items": items, "placed_at": placed_at,
                "status": status, "currency": currency, **totals}

    def decide(self, items: list, meta) -> None:
        OrderBatch.record(self.shop_id, self.currency, order_facts(items), meta)

    def batch(self, items: list) -> models.Command:
        return RecordOrders(orders=items, reason=IMPORT_REASON)

    def command(self, ctx: CommandContext, batch: models.Command) -> Result:
        return self.facts.record_orders(ctx, self.shop_id, batch)


class ListingsImport(CsvImport):
    """EtsyListingsDownload: no listing id, so each line is matched on its SKU; a SKU the shop does
    not have yet becomes a listing (external id `etsy-sku:<SKU>` until a sync names its Etsy id),
    one it has is counted as already recorded and left as it is (its price moves only by the
    price routes, under its guardrails)."""

    kind, format, reservation, list_name = "etsy-listings", LISTINGS, LISTING_SKU, "listings"
    FIELD_COLUMNS = {"title": "title", "price": "price", "currency": "currency", "sku": "sku", "external_id": "sku"}

    def parse(self, table: Table) -> Pending:
        return self.each_once(table, self._spec, "sku")

    def _spec(self, table: Table, line: int, row: dict[str, str]) -> dict:
        price = self.value(table, line, row, "price", amount)
        quantity = self.value(table, line, row, "quantity", optional_whole_number)
        currency = self.same_currency(table, line, row)
        sku = row["sku"].strip()
        if not sku:
            self.summary.problem(line, table.header("sku"), "empty: a listing of the download is matched on its SKU")
            raise _Skip
        return {"external_id": f"etsy-sku:{sku}", "sku": sku, "title": row["title"].strip(), "price": price,
                "currency": currency, "status": "sold_out" if quantity == 0 else "active"}

    def decide(self, items: list, meta) -> None:
        for i, spec in enumerate(items):
            try:
                Listing.register(self.shop_id, spec.external_id, spec.sku, spec.title, spec.status,
                                 Money.price(spec.price, self.currency, "price"), Guardrails(), meta)
            except DomainError as e:
                raise type(e)(f"listings[{i}].{e.field}", e.detail) from None

    def batch(self, items: list) -> models.Command:
        return models.RegisterListings(listings=items, source="import", reason="Etsy listings download import")

    def write(self, pending: Pending) -> None:
        super().write(pending)
        self.summary.prices_differ = self._prices_differ(pending)

    def _prices_differ(self, pending: Pending) -> list[str]:
        """The known SKUs whose price in the download is not the engine's (left as they are: a price
        moves by the price routes, under its guardrails; the Etsy sync records such a drift)."""
        listings = self.resolve(LISTING_SKU, set(pending.keys))
        differ = []
        for spec in pending.items:
            listing = self.core.repository.get(listings[spec.sku]) if spec.sku in listings else None
            if listing is not None and listing.price.amount != spec.price:
                differ.append(spec.sku)
        return differ

    def command(self, ctx: CommandContext, batch: models.Command) -> Result:
        return self.listings.register_listings(ctx, self.shop_id, batch)


class CompetitorPricesImport(CsvImport):
    """A third-party competitor price feed: one observation per line, its listing named by our id,
    its marketplace id or its SKU; the same validation as the REST route, each observation
    recorded once (commands/marketplace_facts.py)."""

    kind, format, reservation, list_name = "competitor-prices", COMPETITOR_PRICES, OBSERVATION, "observations"
    latest: dict | None = None  # (listing, competitor) -> latest time seen; a feed keeps it across batches
    FIELD_COLUMNS = {"listing_id": "listing_id", "competitor": "competitor", "price": "price", "currency": "currency",
                     "observed_at": "observed_at", "source": "source"}

    def parse(self, table: Table) -> Pending:
        if not any(name in table.headers for name in LISTING_REFERENCES):
            raise FileRefused(LineProblem(1, "listing_id", "missing column: name the listing by listing_id,"
                                          " external_id or sku"))
        found = self._listings(table)
        pending = Pending()
        for line, row in table.rows:
            try:
                pending.add(self._observation(table, line, row, found), line, "")
            except _Skip:
                continue
        return pending

    def accepted(self, pending: Pending, table: Table) -> Pending:
        """Each observation once: its identity is known only once validated (times in UTC)."""
        kept, seen = Pending(), {}
        for observation, line in zip(pending.items, pending.lines):
            key = observation_key(observation)
            try:
                if self.once(seen, table, line, key, "observed_at", ()):
                    kept.add(observation, line, key)
            except _Skip:
                continue
        return kept

    def sent(self, items: list) -> None:
        """Counts the new observations older than one recorded before of the same listing and
        competitor (by this run, or this feed's earlier batches): recorded all the same, as facts."""
        if self.latest is None:
            self.latest = {}
        latest = self.latest
        for o in items:
            pair = (o.listing_id, o.competitor)
            if pair in latest and o.observed_at < latest[pair]:
                self.summary.out_of_order += 1
            latest[pair] = max(latest.get(pair, o.observed_at), o.observed_at)

    def _listings(self, table: Table) -> dict[tuple[str, str], UUID]:
        found = {}
        for name, kind in (("listing_id", "listing"), ("external_id", "external_id"), ("sku", LISTING_SKU)):
            if name in table.headers:
                keys = {r.get(name, "").strip() for _, r in table.rows} - {""}
                found.update({(name, k): v for k, v in self.resolve(kind, keys).items()})
        return found

    def _observation(self, table: Table, line: int, row: dict[str, str], found) -> dict:
        listing = next((found[name, row[name].strip()] for name in LISTING_REFERENCES
                        if row.get(name, "").strip() and (name, row[name].strip()) in found), None)
        if listing is None:
            named = next(((n, row[n].strip()) for n in LISTING_REFERENCES if row.get(n, "").strip()), None)
            self.summary.problem(line, table.header(named[0] if named else "listing_id"),
                                 f"no listing of this shop is {named[1]!r}" if named else "names no listing")
            raise _Skip
        price = self.value(table, line, row, "price", amount)
        observed_at = self.value(table, line, row, "observed_at", moment)
        source = row.get("source", "").strip() or "feed"
        return {"listing_id": listing, "competitor": row["competitor"].strip(), "price": price,
                "currency": row["currency"].strip(), "observed_at": observed_at, "source": source}

    def decide(self, items: list, meta) -> None:
        prices = []
        for i, o in enumerate(items):
            try:
                prices.append(Money.price(o.price, o.currency, "price"))
            except DomainError as e:
                raise type(e)(f"observations[{i}].{e.field}", e.detail) from None
        ObservationBatch.record(self.shop_id, self.currency,
                                [Observation(o.listing_id, o.competitor, p, o.observed_at, o.source)
                                 for o, p in zip(items, prices)], meta)

    def batch(self, items: list) -> models.Command:
        return models.RecordObservations(observations=items, source="import", reason="competitor price feed (CSV)")

    def command(self, ctx: CommandContext, batch: models.Command) -> Result:
        return self.facts.record_feed_observations(ctx, self.shop_id, batch)


KINDS: dict[str, type[CsvImport]] = {c.kind: c for c in (OrderItemsImport, OrdersImport, ListingsImport,
                                                         CompetitorPricesImport)}


def _buyer_of(row: dict[str, str]) -> str:
    return row.get("buyer", "").strip() or row.get("buyer_user_id", "").strip()
