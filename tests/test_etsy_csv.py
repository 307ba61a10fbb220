"""Sellers' CSV imports (commands/etsy_import.py) through the command handlers, on real PostgreSQL:
what the files say is what the log holds, once, with no personal data; bad files are refused
naming the line and column, and nothing is written."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import etsy_import, models
from commands.context import CommandContext
from commands.csv_files import LISTINGS as LISTINGS_FORMAT
from commands.csv_files import FileRefused, read_table
from commands.etsy_import import KINDS, InvalidLines
from commands.marketplace_facts import MarketplaceFacts, Pseudonyms
from domain.facts import ObservationBatch, SalesBatch
from domain.listing import Listing
from domain.meta import Actor
from domain.orders import OrderBatch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
ITEMS, ORDERS = DATA / "EtsySoldOrderItems2026.csv", DATA / "EtsySoldOrders2026.csv"
LISTINGS, FEED = DATA / "EtsyListingsDownload.csv", DATA / "competitor_prices.csv"
# Names, usernames, addresses and a buyer id of the fixtures (the id quoted: hex ids may hold its digits).
PERSONAL = ("Ada", "Lovelace", "Babbage", "Hopper", "Analytical", "NW1", "adal", "cbabbage", '"55501"')


@pytest.fixture
def seller(engine):
    """A tenant's context, its GBP shop, and its two listings known by Etsy listing id."""
    ctx = CommandContext(actor=Actor("pytest-seller"), tenant_id=f"csv-{uuid.uuid4().hex[:10]}")
    shop = uuid.UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Hedgerow", currency="GBP")).body["shop_id"])
    specs = [models.ListingSpec(external_id="1234567890", sku="MUG-BLUE", title="Mug", price="24.00", currency="GBP"),
             models.ListingSpec(external_id="1234567891", sku="BOWL-STONE", title="Bowl", price="18.50", currency="GBP")]
    engine.listings.register_listings(ctx, shop, models.RegisterListings(listings=specs))
    return ctx, shop


def run(engine, seller, kind: str, data: bytes | Path, skip_invalid: bool = False):
    ctx, shop = seller
    data = data.read_bytes() if isinstance(data, Path) else data
    facts = MarketplaceFacts(engine.core, engine.listings)
    return KINDS[kind](facts, ctx, shop, data, "file.csv", skip_invalid,
                       Pseudonyms(engine.identity.secrets)).run()


def events_of(engine, shop, *types) -> list:
    """The shop's events of these types, from the log."""
    found, start = [], 1
    while page := engine.core.recorder.select_notifications(start, 5000):
        for n in page:
            if n.topic.split(":")[1].split(".")[-1] in {t.__name__ for t in types}:
                event = engine.core.mapper.to_domain_event(n)
                if event.meta.shop_id == str(shop):
                    found.append(event)
        start = page[-1].id + 1
    return found


def test_order_items_become_sales_once_and_buyers_only_pseudonyms(engine, seller):
    run(engine, seller, "etsy-listings", LISTINGS)  # TOWEL-LINEN: found by SKU, its Etsy id unknown
    summary = run(engine, seller, "etsy-order-items", ITEMS)
    assert (summary.lines, summary.recorded, summary.invalid, summary.orders_recorded) == (5, 5, 0, 4)
    sold = {e.transaction_id: e for e in events_of(engine, seller[1], SalesBatch.Sold)}
    assert sorted(sold) == ["4011223344", "4011223345", "4011223346", "4011223347", "4011223348"]
    bowl = sold["4011223345"]
    assert (bowl.quantity, bowl.unit_price.amount, bowl.order_id) == (2, Decimal("18.50"), "3011220001")
    assert bowl.meta.occurred_at.date().isoformat() == "2026-11-28" and bowl.meta.source == "import"
    orders = {e.order_id: e for e in events_of(engine, seller[1], OrderBatch.OrderRecorded)}
    assert orders["3011220001"].items == 3
    # Ada bought twice (orders 0001 and 0004, her name cased differently): one pseudonym, not hers.
    assert orders["3011220001"].buyer == orders["3011220004"].buyer != orders["3011220002"].buyer
    assert all(len(o.buyer) == 32 for o in orders.values())
    # Sealed values (random ciphertext of other tests' reasons and usernames) may hold any short word by chance.
    stored = re.sub(rb"sealed:v1:[0-9a-f]+:[A-Za-z0-9_=-]+", b"",
                    b"".join(n.state for n in engine.core.recorder.select_notifications(1, 10**6)))
    assert not [word for word in PERSONAL if word.encode() in stored]

    again = run(engine, seller, "etsy-order-items", ITEMS)  # a rerun, or an overlapping export
    assert (again.recorded, again.already_recorded, again.orders_recorded) == (0, 5, 0)
    assert len(events_of(engine, seller[1], SalesBatch.Sold)) == 5


def test_orders_keep_totals_and_an_older_export_names_its_columns_differently(engine, seller):
    summary = run(engine, seller, "etsy-orders", ORDERS)
    assert (summary.recorded, summary.invalid) == (3, 0)
    orders = {e.order_id: e for e in events_of(engine, seller[1], OrderBatch.OrderRecorded)}
    babbage = orders["3011220002"]
    assert babbage.totals["shipping"].amount == Decimal("3.95")  # from "Delivery"
    assert babbage.totals["discount"].amount == Decimal("2.40") and babbage.status == "Completed"
    assert orders["3011220001"].buyer == orders["3011220004"].buyer
    items = run(engine, seller, "etsy-order-items", ITEMS, skip_invalid=True)  # TOWEL-LINEN is unknown here
    assert items.orders_recorded == 0 and items.invalid == 1  # the orders were known: their totals stay


def test_listings_download_registers_new_skus_and_leaves_known_ones(engine, seller):
    summary = run(engine, seller, "etsy-listings", LISTINGS)
    assert (summary.recorded, summary.already_recorded) == (2, 1)  # MUG-BLUE was there
    registered = {e.sku: e for e in events_of(engine, seller[1], Listing.Registered)}
    assert registered["BOARD-OAK"].status == "sold_out" and registered["TOWEL-LINEN"].price.amount == Decimal("9.00")
    assert registered["TOWEL-LINEN"].external_id == "etsy-sku:TOWEL-LINEN"
    assert summary.prices_differ == []
    repriced = LISTINGS.read_bytes().replace(b'of joy.",24.00,', b'of joy.",26.00,')
    assert repriced != LISTINGS.read_bytes()
    again = run(engine, seller, "etsy-listings", repriced)
    assert (again.recorded, again.already_recorded, again.prices_differ) == (0, 3, ["MUG-BLUE"])


def test_competitor_feed_records_each_observation_once(engine, seller):
    summary = run(engine, seller, "competitor-prices", FEED)
    assert (summary.recorded, summary.duplicates, summary.out_of_order) == (4, 1, 1)
    assert run(engine, seller, "competitor-prices", FEED).already_recorded == 4
    assert len(events_of(engine, seller[1], ObservationBatch.CompetitorPriceObserved)) == 4


ITEM_HEADER = "Sale Date,Item Name,Buyer,Quantity,Price,Currency,Transaction ID,Listing ID,Order ID,SKU\n"
GOOD = "11/28/26,Mug,adal,1,24.00,GBP,{t},1234567890,3011229999,MUG-BLUE\n"


def items_file(*lines: str, header: str = ITEM_HEADER) -> bytes:
    return (header + GOOD.format(t="1") + "".join(lines)).encode()


@pytest.mark.parametrize("data, line, column, detail", [
    (items_file(header=ITEM_HEADER.replace("Transaction ID,", "")), 1, "Transaction ID", "missing column"),
    (items_file("11/31/26,Mug,adal,1,24.00,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Sale Date", "not a date"),
    (items_file("11/28/26,Mug,adal,one,24.00,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Quantity", "whole number"),
    (items_file("11/28/26,Mug,adal,1,24.0O,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Price", "not a number"),
    (items_file("11/28/26,Mug,adal,1,24.001,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Price", "at most 2 decimals"),
    (items_file("11/28/26,Mug,adal,1,-3,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Price", "negative"),
    (items_file("11/28/26,Mug,adal,0,24.00,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Quantity", "zero"),
    (items_file("11/28/26,Mug,adal,1,24.00,USD,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Currency", "shop's currency"),
    (items_file("11/28/26,Mug,adal,1,24.00,GBP,2,777,3011229999,NOPE\n"), 3, "Listing ID", "no listing"),
    (items_file("11/28/26,Mug,adal,2,24.00,GBP,1,1234567890,3011229999,MUG-BLUE\n"), 3, "Transaction ID", "also at line 2"),
    (items_file("12/31/27,Mug,adal,1,24.00,GBP,2,1234567890,3011229998,MUG-BLUE\n"), 3, "Sale Date", "ahead of the server"),
    (items_file("12/31/99,Mug,adal,1,24.00,GBP,2,1234567890,3011229998,MUG-BLUE\n"), 3, "Sale Date", "2000-01-01"),
    (items_file("11/28/26,Mug,adal,1,24.00,GBP,2,1234567890,3011229999,MUG-BLUE,extra\n"), 3, None, "fields"),
    (items_file("11/27/26,Mug,adal,1,24.00,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Sale Date", "at line 2"),
    (items_file("11/28/26,Mug,grace,1,24.00,GBP,2,1234567890,3011229999,MUG-BLUE\n"), 3, "Buyer", "at line 2"),
    (items_file('11/28/26,"Mug,adal,1,24.00,GBP,2,1234567890,3011229999,MUG-BLUE\n'), 3, None, "malformed CSV"),
    (items_file().replace(b"Mug", b"Mug \xe9"), 2, None, "not UTF-8"),  # Latin-1
    (items_file().decode().encode("utf-16"), 1, None, "UTF-16"),
    (b"", 1, None, "no header"),
])
def test_malformed_files_are_refused_naming_line_and_column_and_write_nothing(engine, seller, count_events,
                                                                              data, line, column, detail):
    before = count_events()
    with pytest.raises((InvalidLines, FileRefused)) as refused:
        run(engine, seller, "etsy-order-items", data)
    problem = refused.value.problem if isinstance(refused.value, FileRefused) else refused.value.summary.problems[0]
    assert (problem.line, problem.column) == (line, column), problem
    assert detail in problem.detail, problem
    assert count_events() == before


def test_skip_invalid_imports_the_good_lines_and_reports_the_rest(engine, seller):
    data = items_file("11/28/26,Mug,adal,one,24.00,GBP,2,1234567890,3011229999,MUG-BLUE\n",
                      "11/28/26,Mug,adal,1,24.00,GBP,3,1234567890,3011229999,MUG-BLUE\n",
                      GOOD.format(t="1"))
    summary = run(engine, seller, "etsy-order-items", data, skip_invalid=True)
    assert (summary.recorded, summary.invalid, summary.duplicates) == (2, 1, 1)
    assert [str(p) for p in summary.problems] == ["line 3, column 'Quantity': not a whole number: 'one'"]


def test_many_lines_the_domain_refuses_are_all_named_in_one_pass(engine, seller):
    bad = ["11/28/26,Mug,adal,0,24.00,GBP,z{},1234567890,o,\n", "11/28/26,Mug,adal,1,-1,GBP,z{},1234567890,o,\n"]
    data = items_file(*(bad[i % 2].format(i) for i in range(4000)))
    summary = run(engine, seller, "etsy-order-items", data, skip_invalid=True)
    assert (summary.recorded, summary.invalid) == (1, 4000)
    assert {(p.column, p.detail) for p in summary.problems[:2]} == {("Quantity", "must not be zero"),
                                                                     ("Price", "must not be negative")}


def test_a_bom_a_crlf_file_and_header_spelling_variants_read_alike(engine, seller):
    text = ITEM_HEADER.upper().replace("_", " ") + GOOD.format(t="9")
    data = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()
    assert run(engine, seller, "etsy-order-items", data).recorded == 1


def test_the_command_line_imports_a_file_and_names_invalid_lines(engine, seller, database_url, monkeypatch, capsys,
                                                                 tmp_path):
    from api.cli import main as cli

    monkeypatch.setenv("ETSYPRO_DATABASE_URL", database_url)
    monkeypatch.setenv("ETSYPRO_SECRET_KEY", "a test server key of at least 32 characters")
    shop = str(seller[1])
    bad = tmp_path / "bad.csv"
    bad.write_bytes(items_file("11/28/26,Mug,adal,1,24.00,EUR,2,1234567890,3011229999,MUG-BLUE\n"))
    assert cli(["import", "etsy-order-items", str(bad), "--shop", shop, "--rejects", str(tmp_path / "r.csv")]) == 1
    assert "line 3, column 'Currency': 'EUR' is not the shop's currency GBP" in capsys.readouterr().err
    assert (tmp_path / "r.csv").read_text().splitlines()[1] == "3,Currency,'EUR' is not the shop's currency GBP"
    assert cli(["import", "etsy-order-items", str(ITEMS), "--shop", shop, "--skip-invalid", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["recorded"], summary["invalid"]) == (4, 1)  # TOWEL-LINEN has no listing in this shop
    assert cli(["import", "etsy-orders", str(tmp_path / "missing.csv"), "--shop", shop]) == 1
    assert cli(["import", "etsy-orders", str(ORDERS), "--shop", str(uuid.uuid4())]) == 1


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_chunks_written_side_by_side_report_progress_in_order_and_record_each_fact_once(engine, seller, monkeypatch,
                                                                                         chunk):
    monkeypatch.setattr(etsy_import, "CHUNK", chunk)
    lines = [GOOD.replace("3011229999", f"p{n // 2}").format(t=f"p{n}") for n in range(7)]
    ctx, shop = seller
    importer = KINDS["etsy-order-items"](MarketplaceFacts(engine.core, engine.listings), ctx, shop,
                                         (ITEM_HEADER + "".join(lines)).encode(), "file.csv",
                                         pseudonyms=Pseudonyms(engine.identity.secrets))
    seen = []
    importer.progress = lambda done, total: seen.append((done, total))
    summary = importer.run()
    assert seen == [(min(n + chunk, 7), 7) for n in range(0, 7, chunk)]
    assert (summary.recorded, summary.orders_recorded, summary.chunks_recorded) == (7, 4, -(-7 // chunk) + -(-4 // chunk))
    assert sorted(e.transaction_id for e in events_of(engine, shop, SalesBatch.Sold)) == [f"p{n}" for n in range(7)]
    assert sorted(e.order_id for e in events_of(engine, shop, OrderBatch.OrderRecorded)) == [f"p{n}" for n in range(4)]


def test_overlapping_exports_record_their_union_once(engine, seller):
    lines = [GOOD.replace(",1,24.00", f",{q},24.00").replace("3011229999", f"o{n}").format(t=f"u{n}")
             for n, q in enumerate((1, 2, 1, 3, 1))]
    older, newer = (ITEM_HEADER + "".join(lines[:3])).encode(), (ITEM_HEADER + "".join(lines[1:])).encode()
    assert run(engine, seller, "etsy-order-items", older).recorded == 3
    summary = run(engine, seller, "etsy-order-items", newer)
    assert (summary.recorded, summary.already_recorded) == (2, 2)
    sold = events_of(engine, seller[1], SalesBatch.Sold)
    assert sorted((e.transaction_id, e.quantity) for e in sold) == [(f"u{n}", q) for n, q in enumerate((1, 2, 1, 3, 1))]


text_fields = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(text_fields, text_fields), min_size=1, max_size=20))
def test_any_text_a_csv_writer_writes_reads_back_with_the_line_each_record_starts_on(rows):
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sku", "TITLE", "price"])
    starts, line = [], 2
    for title, sku in rows:
        writer.writerow([sku, title, "1.00"])
        starts.append(line)
        line = out.getvalue().count("\n") + 1
    table = read_table(out.getvalue().encode(), LISTINGS_FORMAT)
    assert [(n, r["sku"], r["title"]) for n, r in table.rows] == [(n, sku, title) for n, (title, sku) in zip(starts, rows)]


def test_an_import_killed_mid_file_resumes_with_nothing_lost_or_doubled(engine, seller, database_url, tmp_path):
    """`etsypro import` killed with SIGKILL once its first chunk is in: a chunk is all or nothing, and
    the rerun records exactly the rest."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ITEM_HEADER.strip().split(","))
    for t in range(14_000):
        writer.writerow(["11/21/26", "Mug", f"b{t // 2 % 40}", 1, "24.00", "GBP", f"K{t}", "1234567890", f"KO{t // 2}", ""])
    path = tmp_path / "big.csv"
    path.write_text(out.getvalue())
    shop = str(seller[1])
    env = {**os.environ, "ETSYPRO_DATABASE_URL": database_url, "ETSYPRO_SECRET_KEY": "k" * 40}
    command = [sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())",
               "import", "etsy-order-items", str(path), "--shop", shop]

    def sold() -> int:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT count(*) FROM reservations WHERE shop_id = %s AND kind = 'sale_transaction'",
                                [shop]).fetchone()[0]

    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while sold() < 10_000 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert sold() in (10_000, 14_000), "a chunk was half-written"  # 14,000: it finished before the kill
    assert subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    transactions = [e.transaction_id for e in events_of(engine, seller[1], SalesBatch.Sold)]
    assert len(transactions) == len(set(transactions)) and len([t for t in transactions if t.startswith("K")]) == 14_000
    orders = [e.order_id for e in events_of(engine, seller[1], OrderBatch.OrderRecorded) if e.order_id.startswith("KO")]
    assert len(orders) == len(set(orders)) == 7_000
