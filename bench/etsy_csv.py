"""csv_import_lines_per_s: an EtsySoldOrderItems file imported through the command handlers
(commands/etsy_import.py: read, every line checked by the models and the domain, sales and orders
recorded in 10,000-line commands), against a raw baseline in the same run: PostgreSQL's own
`COPY ... FROM STDIN (FORMAT csv)` of the very same file into a table of its columns keyed by
Transaction ID, one transaction. Also the rerun of the file (every line found already recorded).

    python -m bench.etsy_csv [--lines N] [--json]

For `etsypro bench etsy`: `bench.etsy_csv.measure(lines)` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import sys
import time
import uuid
from datetime import date, timedelta

import psycopg

from bench.common import fresh_database, note, print_json, print_table, rate, server_version
from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands.csv_files import read_table
from commands.etsy_import import CHUNK, OrderItemsImport
from commands.marketplace_facts import MarketplaceFacts, Pseudonyms
from domain.meta import Actor, ActorKind

TARGET = 20_000  # lines/s (issue 14)
HEADER = ["Sale Date", "Item Name", "Buyer", "Quantity", "Price", "Coupon Code", "Coupon Details", "Discount Amount",
          "Shipping Discount", "Order Shipping", "Order Sales Tax", "Item Total", "Currency", "Transaction ID",
          "Listing ID", "Date Paid", "Date Shipped", "Ship Name", "Ship Address1", "Ship Address2", "Ship City",
          "Ship State", "Ship Zipcode", "Ship Country", "Order ID", "Variations", "Order Type", "Listings Type",
          "Payment Type", "InPerson Discount", "InPerson Location", "VAT Paid by Buyer", "SKU"]


def order_items_file(lines: int, listings: int, seed: int = 14) -> bytes:
    """A plausible export: newest first, orders of 1-3 lines, a few thousand returning buyers."""
    rng, out = random.Random(seed), io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    day, order, written = date(2026, 11, 30), 3_000_000_000, 0
    while written < lines:
        order += 1
        day -= timedelta(days=rng.random() < 0.02)
        buyer = f"buyer{rng.randrange(5000)}"
        for _ in range(min(rng.choice((1, 1, 1, 2, 3)), lines - written)):
            n = rng.randrange(listings)
            quantity, price = rng.choice((1, 1, 1, 2)), f"{10 + n % 40}.{n % 100:02d}"
            sold = day.strftime("%m/%d/%y")
            writer.writerow([sold, f"Item {n}", buyer, quantity, price, "", "", "0", "0", "3.95", "0", price, "GBP",
                             str(4_000_000_000 + written), str(1_000_000_000 + n), sold, sold, "A. Buyer", "1 High St",
                             "", "Leeds", "", "LS1 1AA", "United Kingdom", str(order), "", "online", "listing",
                             "online_cc", "", "", "0", f"SKU-{n}"])
            written += 1
    return out.getvalue().encode()


def _shop(engine: PricingEngine, listings: int) -> tuple[CommandContext, uuid.UUID]:
    ctx = CommandContext(actor=Actor("bench:etsy-csv", ActorKind.SERVICE), tenant_id="bench-etsy-csv")
    shop = uuid.UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Bench", currency="GBP")).body["shop_id"])
    specs = [models.ListingSpec(external_id=str(1_000_000_000 + n), sku=f"SKU-{n}", title=f"Item {n}",
                                price="20.00", currency="GBP") for n in range(listings)]
    engine.listings.register_listings(ctx, shop, models.RegisterListings(listings=specs))
    return ctx, shop


def _import(engine: PricingEngine, ctx: CommandContext, shop: uuid.UUID, data: bytes):
    """(summary, seconds, this process's CPU seconds: every thread's, the writers' included)."""
    facts = MarketplaceFacts(engine.core, engine.listings)
    started, cpu = time.perf_counter(), time.process_time()
    summary = OrderItemsImport(facts, ctx, shop, data, "bench.csv", pseudonyms=Pseudonyms(engine.identity.secrets)).run()
    return summary, time.perf_counter() - started, time.process_time() - cpu


def _engine_alone(engine: PricingEngine, ctx: CommandContext, shop: uuid.UUID, data: bytes) -> float:
    """The engine's record_sales on the same lines already parsed and validated (new transaction
    ids): the ceiling of any import through the handlers, for sales alone."""
    facts = MarketplaceFacts(engine.core, engine.listings)
    importer = OrderItemsImport(facts, ctx, shop, data, "ceiling.csv")
    _, importer.currency = engine.core.shop_facts(ctx, shop)
    table = read_table(data, importer.format)
    parsed = importer.parse(table)
    for sale in parsed.items:
        sale["transaction_id"] = f"ceiling-{sale['transaction_id']}"
    sales = importer.validated(parsed, table).items
    commands = [importer.batch(sales[i:i + CHUNK]) for i in range(0, len(sales), CHUNK)]
    started = time.perf_counter()
    for command in commands:
        engine.listings.record_sales(ctx, shop, command)
    return time.perf_counter() - started


def _copy(url: str, data: bytes) -> float:
    """PostgreSQL parsing and storing the same file itself: the physical reference."""
    columns = ", ".join(f'"{h}" text' for h in HEADER)
    with psycopg.connect(url) as conn:
        conn.execute(f'CREATE TABLE bench_etsy_csv ({columns}, PRIMARY KEY ("Transaction ID"))')
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bench_etsy_csv FROM STDIN (FORMAT csv, HEADER true)") as copy:
            for start in range(0, len(data), 1 << 20):
                copy.write(data[start:start + (1 << 20)])
        conn.commit()
        return time.perf_counter() - started


def measure(lines: int = 100_000, listings: int = 500) -> dict:
    """The figures of one run on a fresh database (csv_import_lines_per_s first)."""
    load_before = os.getloadavg()[0]
    data = order_items_file(lines, listings)
    with fresh_database("etsypro_bench_etsy_csv") as (url, where):
        engine = PricingEngine(url, pool_size=2)
        try:
            ctx, shop = _shop(engine, listings)
            note(f"importing {lines:,} order item lines ...")
            first, seconds, cpu_seconds = _import(engine, ctx, shop, data)
            note("importing the same file again ...")
            again, rerun_seconds, _ = _import(engine, ctx, shop, data)
            note("the engine's record_sales alone on the same lines ...")
            engine_seconds = _engine_alone(engine, ctx, shop, data)
        finally:
            engine.close()
        note("raw COPY of the same file ...")
        copy_seconds = _copy(url, data)
        version = server_version(url)
    per_s, copy_per_s = rate(lines, seconds), rate(lines, copy_seconds)
    return {"csv_import_lines_per_s": per_s, "csv_import_target_lines_per_s": TARGET,
            "csv_import_cpu_us_per_line": cpu_seconds / lines * 1e6,
            "csv_copy_lines_per_s": copy_per_s, "csv_import_vs_copy": per_s / copy_per_s,
            "csv_rerun_lines_per_s": rate(lines, rerun_seconds),
            "csv_engine_record_sales_lines_per_s": rate(lines, engine_seconds), "csv_lines": lines, "csv_bytes": len(data),
            "csv_sales_recorded": first.recorded, "csv_orders_recorded": first.orders_recorded,
            "csv_rerun_already_recorded": again.already_recorded, "csv_listings": listings,
            "database": where, "database_version": version, "cpus": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}


def report(f: dict) -> None:
    print_table("Etsy CSV import (EtsySoldOrderItems)", [
        ("import", f"{f['csv_import_lines_per_s']:,.0f} lines/s",
         f"{f['csv_lines']:,} lines ({f['csv_bytes'] / 1e6:.1f} MB): {f['csv_sales_recorded']:,} sales and "
         f"{f['csv_orders_recorded']:,} orders recorded; target {f['csv_import_target_lines_per_s']:,}"),
        ("import CPU", f"{f['csv_import_cpu_us_per_line']:.0f} us/line", "the importing process, all its threads"),
        ("raw COPY", f"{f['csv_copy_lines_per_s']:,.0f} lines/s", "PostgreSQL's COPY of the same file, keyed by Transaction ID"),
        ("import / COPY", f"{f['csv_import_vs_copy']:.2f}", ""),
        ("engine alone", f"{f['csv_engine_record_sales_lines_per_s']:,.0f} lines/s",
         "record_sales on the same lines already parsed (new ids): the handlers' ceiling, sales only"),
        ("rerun", f"{f['csv_rerun_lines_per_s']:,.0f} lines/s",
         f"the same file again: {f['csv_rerun_already_recorded']:,} lines found already recorded, nothing written"),
    ])
    print(f"PostgreSQL {f['database_version']} ({f['database']}), {f['cpus']} CPUs, load average "
          f"{f['load_average_before']:.1f} before and {f['load_average_after']:.1f} after the run")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.etsy_csv", description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=100_000, help="order item lines in the file (default 100000)")
    p.add_argument("--listings", type=int, default=500, help="listings of the shop (default 500)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    figures = measure(args.lines, args.listings)
    print_json(figures) if args.json else report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
