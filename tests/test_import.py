"""`etsypro import online-retail`: the real shop history imported through the command handlers.

What the engine stored is read back from the event log (decoded Sold / Returned events) and
compared with a direct polars computation over the same rows of the file: line by line, and as
units and revenue per StockCode per day. Lines the import set aside must be exactly the ones an
independent polars formulation of the rules picks out, each with its reason.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
import pytest

import codec
from api.cli import main as cli
from commands.engine import PricingEngine
from conftest import SUITE_SECRET_KEY
from commands.importer import catalogue, local_time
from domain.facts import SalesBatch
from domain.listing import Listing
from projections.projector import Projector

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "online_retail.parquet"
LONDON = ZoneInfo("Europe/London")

pytestmark = pytest.mark.skipif(
    not DATA.is_file(), reason=f"the Online Retail data set is absent (expected at {DATA}; see ../shared/data/README.md)")


# -- what the file says (polars) --------------------------------------------------------------
def file_lines(path: Path, limit: int | None = None) -> pl.DataFrame:
    """Rows in file order with their row number, transaction id and price in pence."""
    frame = pl.read_parquet(path).with_row_index("row").with_columns(
        transaction_id=pl.format("{}-{}", "InvoiceNo", pl.int_range(1, pl.len() + 1).over("InvoiceNo")),
        pence=(pl.col("UnitPrice") * 100).round(0).cast(pl.Int64),
        day=pl.col("InvoiceDate").str.slice(0, 10),
    )
    return frame.head(limit) if limit else frame


def rejected_by_rule(whole: pl.DataFrame, rows: pl.DataFrame) -> dict[int, str]:
    """row -> why it cannot be imported, by the data's own facts (not by calling the importer):
    its StockCode never sold above zero, or its most frequent positive price (the listing's price)
    has fractions of a penny, or the line's own price is negative or has fractions of a penny."""
    whole_pennies = ((pl.col("UnitPrice") * 100).round(0) - pl.col("UnitPrice") * 100).abs() < 1e-6
    listing_price = (whole.filter(pl.col("UnitPrice") > 0).group_by("StockCode")
                     .agg(pl.col("UnitPrice").mode().min().alias("price")))
    judged = rows.join(listing_price, on="StockCode", how="left").with_columns(
        listing_ok=((pl.col("price") * 100).round(0) - pl.col("price") * 100).abs() < 1e-6)
    reasons = {}
    for row, price, listing_price_, listing_ok, pennies in judged.select(
            "row", "UnitPrice", "price", "listing_ok", whole_pennies.alias("pennies")).iter_rows():
        if listing_price_ is None:
            reasons[row] = "never sold at a positive unit price"
        elif not listing_ok:
            reasons[row] = "at most 2 decimals"  # the listing's price
        elif price < 0:
            reasons[row] = "must not be negative"
        elif not pennies:
            reasons[row] = "at most 2 decimals"
    return reasons


def totals_by_code_and_day(rows: Iterable) -> dict[tuple[str, str], tuple[int, int]]:
    """(StockCode, day) -> (units, revenue in pence) from (code, day, quantity, pence) tuples."""
    out: dict = defaultdict(lambda: [0, 0])
    for code, day, quantity, pence in rows:
        out[code, day][0] += quantity
        out[code, day][1] += quantity * pence
    return {k: tuple(v) for k, v in out.items()}


def polars_totals(rows: pl.DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    grouped = rows.group_by("StockCode", "day").agg(
        units=pl.col("Quantity").sum(), pence=(pl.col("Quantity") * pl.col("pence")).sum())
    return {(c, d): (u, p) for c, d, u, p in grouped.iter_rows()}


# -- what the engine stored (decoded events) --------------------------------------------------
@dataclass
class Stored:
    listings: dict  # listing id -> Registered event
    lines: list  # (transaction_id, code, signed quantity, pence, local time text, event)

    def by_transaction(self) -> dict:
        return {t: (code, q, p, when) for t, code, q, p, when, _ in self.lines}


def stored_events(url: str) -> Stored:
    engine = PricingEngine(url, pool_size=1)
    try:
        listings, sales, start = {}, [], 1
        while page := engine.core.recorder.select_notifications(start, 5000):
            for notification in page:
                event = codec.to_domain_event(notification)
                if isinstance(event, Listing.Registered):
                    listings[event.originator_id] = event
                elif isinstance(event, (SalesBatch.Sold, SalesBatch.Returned)):
                    sales.append(event)
            start = page[-1].id + 1
    finally:
        engine.close()
    lines = []
    for e in sales:
        sign = -1 if isinstance(e, SalesBatch.Returned) else 1
        pence = e.unit_price.amount * 100
        assert pence == pence.to_integral_value() and e.unit_price.currency == "GBP"
        local = e.meta.occurred_at.astimezone(LONDON).strftime("%Y-%m-%d %H:%M:%S")
        lines.append((e.transaction_id, listings[e.listing_id].external_id, sign * e.quantity, int(pence), local, e))
    return Stored(listings, lines)


def assert_imported_exactly(url: str, rows: pl.DataFrame, rejected: set[int]) -> Stored:
    """Every row not set aside is one stored line with the file's values; nothing else is stored."""
    stored = stored_events(url)
    tids = [t for t, *_ in stored.lines]
    assert len(tids) == len(set(tids)), "a sale line was recorded twice"
    kept = rows.filter(~pl.col("row").is_in(list(rejected)))
    expected = {t: (c, q, p, d) for t, c, q, p, d in
                kept.select("transaction_id", "StockCode", "Quantity", "pence", "InvoiceDate").iter_rows()}
    assert stored.by_transaction() == expected
    # The same, as the analysts will see it: units and revenue per StockCode per (UK) day.
    mine = totals_by_code_and_day((code, when[:10], q, p) for _, code, q, p, when, _ in stored.lines)
    assert mine == polars_totals(kept)
    return stored


def rejects_in(path: Path) -> dict[int, str]:
    with path.open() as f:
        return {int(r["row"]): r["reason"] for r in csv.DictReader(f)}


def assert_rejects_match(rejects: dict[int, str], expected: dict[int, str]) -> None:
    assert rejects.keys() == expected.keys()
    for row, reason in rejects.items():
        assert expected[row] in reason, (row, reason, expected[row])


def summary_number(output: str, label: str) -> int:
    return int(re.search(rf"^{label}\s+([\d,]+)", output, re.M).group(1).replace(",", ""))


# -- tests ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_first_20000_lines_match_polars_line_by_line_and_per_code_and_day(new_database, tmp_path, monkeypatch,
                                                                         capsys):
    url = new_database()
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", url)
    rejects_file = tmp_path / "rejects.csv"
    assert cli(["import", "online-retail", str(DATA), "--limit", "20000", "--rejects", str(rejects_file)]) == 0
    output = capsys.readouterr().out

    whole = file_lines(DATA)
    rows = whole.head(20_000)
    expected_rejects = rejected_by_rule(whole, rows)
    assert expected_rejects, "the first 20,000 rows hold zero-price lines of never-priced StockCodes"
    assert_rejects_match(rejects_in(rejects_file), expected_rejects)
    stored = assert_imported_exactly(url, rows, set(expected_rejects))

    kept = rows.filter(~pl.col("row").is_in(list(expected_rejects)))
    assert summary_number(output, "sale lines") == kept.filter(pl.col("Quantity") > 0).height
    assert summary_number(output, "returns") == kept.filter(pl.col("Quantity") < 0).height
    assert summary_number(output, "zero-price lines") == kept.filter(pl.col("UnitPrice") == 0).height
    assert summary_number(output, "rejected") == len(expected_rejects)
    # Cancellations are stored as Returned events, with the positive quantity returned.
    returned = [e for *_, e in stored.lines if isinstance(e, SalesBatch.Returned)]
    assert returned and all(e.quantity > 0 for e in returned)
    assert {e.meta.actor_id for *_, e in stored.lines} == {"importer:online-retail"}

    # The read side's rollups (projections/sales.py) say the same per listing per UK day.
    engine = PricingEngine(url, pool_size=1)
    projector = Projector(url, codec.to_domain_event)
    try:
        projector.catch_up()
    finally:
        projector.close()
        engine.close()
    code_of = {str(k): v.external_id for k, v in stored.listings.items()}
    with psycopg.connect(url) as conn:
        by_listing = conn.execute(
            "SELECT listing_id::text, to_char(bucket AT TIME ZONE 'Europe/London', 'YYYY-MM-DD'),"
            " sum(units), sum(revenue) FROM analytics.sales_by_listing_hour GROUP BY 1, 2").fetchall()
        by_shop = conn.execute(
            "SELECT to_char(bucket AT TIME ZONE 'Europe/London', 'YYYY-MM-DD'), sum(units), sum(revenue)"
            " FROM analytics.sales_by_shop_hour GROUP BY 1").fetchall()
    assert {(code_of[lid], day): (units, int(revenue * 100)) for lid, day, units, revenue in by_listing} \
        == polars_totals(kept)
    per_day = kept.group_by("day").agg(pl.col("Quantity").sum(), (pl.col("Quantity") * pl.col("pence")).sum().alias("p"))
    assert {day: (units, int(revenue * 100)) for day, units, revenue in by_shop} \
        == {d: (u, p) for d, u, p in per_day.iter_rows()}


@pytest.mark.slow
def test_killed_mid_way_then_rerun_records_every_line_exactly_once(new_database, tmp_path):
    url, limit = new_database(), 50_000
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_DATA_DIR": str(tmp_path),
           "ETSYPRO_SECRET_KEY": SUITE_SECRET_KEY}  # as a server has it: stderr is the progress alone
    command = [sys.executable, "-m", "api.cli", "import", "online-retail", "--limit", str(limit),
               "--tenant", "kill-test"]  # default path: ../shared/data from the project root

    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = []
    for line in first.stderr:  # not a terminal: one progress line per chunk of 10,000 rows
        progress.append(line)
        if line.startswith("20,000/50,000 rows"):
            time.sleep(0.5)  # into the third chunk's command
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, ("the import finished before it could be killed", progress)
    assert "rows/s" in progress[0] and "ETA" in progress[0]
    partial = len(stored_events(url).lines)
    assert 20_000 - 200 <= partial < limit - 9_000, partial  # two chunks in (less their rejects), not more than three

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    replayed = int(re.search(r"(\d+) replayed", second.stdout).group(1))
    assert replayed >= 4, second.stdout  # the shop, the listings and the first two chunks were found again

    whole = file_lines(DATA)
    rows = whole.head(limit)
    expected_rejects = rejected_by_rule(whole, rows)
    assert_rejects_match(rejects_in(tmp_path / "online_retail.rejects.csv"), expected_rejects)
    assert_imported_exactly(url, rows, set(expected_rejects))
    with psycopg.connect(url) as conn:
        shops = conn.execute("SELECT count(*) FROM reservations WHERE kind = 'tenant' AND key = 'kill-test'").fetchone()
    assert shops == (1,)  # the rerun found its shop instead of opening another


def mess_invoices(whole: pl.DataFrame) -> pl.DataFrame:
    """Whole real invoices (so line numbers are the file's) that hold every kind of mess."""
    def invoices(predicate, n: int) -> list[str]:
        return whole.filter(predicate).get_column("InvoiceNo").unique(maintain_order=True).head(n).to_list()

    zero = pl.col("UnitPrice") == 0
    priced = pl.col("StockCode").is_in(whole.filter(pl.col("UnitPrice") > 0).get_column("StockCode").unique().implode())
    chosen = set(
        invoices(pl.col("StockCode") == "B", 5)                                    # bad debt, 2 negative prices
        + invoices(pl.col("StockCode") == "PADS", 5)                               # listing price 0.001
        + invoices((pl.col("StockCode") == "BANK CHARGES") & (pl.col("UnitPrice") < 0.01), 1)  # 0.001 line
        + invoices((pl.col("StockCode") == "BANK CHARGES") & (pl.col("UnitPrice") == 15), 2)   # its listing
        + invoices(pl.col("InvoiceNo").str.starts_with("C") & (pl.col("StockCode") == "D"), 2)  # discounts
        + invoices(pl.col("InvoiceNo").str.starts_with("C"), 3)                    # cancellations
        + [i for code in ("POST", "AMAZONFEE", "M") for i in invoices(pl.col("StockCode") == code, 1)]  # not goods
        + invoices(pl.col("Description").is_null(), 3)                             # never-priced codes
        + invoices(zero & (pl.col("Quantity") < 0) & priced, 2)                    # stock adjustments
        + invoices(zero & (pl.col("Quantity") > 0) & priced, 2)                    # zero-price sales
    )
    # ... and, for the codes of zero-price lines, an invoice where they sold at a price (their listing).
    codes = whole.filter(pl.col("InvoiceNo").is_in(list(chosen)) & zero & priced).get_column("StockCode").unique()
    chosen |= set(whole.filter(pl.col("StockCode").is_in(codes.implode()) & (pl.col("UnitPrice") > 0))
                  .group_by("StockCode").agg(pl.col("InvoiceNo").first()).get_column("InvoiceNo"))
    return whole.filter(pl.col("InvoiceNo").is_in(list(chosen)))


def test_mess_is_recorded_or_reported_with_reasons_never_dropped(new_database, tmp_path, monkeypatch, capsys):
    whole = file_lines(DATA)
    mess = mess_invoices(whole)
    subset = tmp_path / "mess.parquet"
    mess.drop("row", "transaction_id", "pence", "day").write_parquet(subset)
    url = new_database()
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", url)
    rejects_file = tmp_path / "rejects.csv"
    assert cli(["import", "online-retail", str(subset), "--rejects", str(rejects_file)]) == 0
    output = capsys.readouterr().out

    rows = file_lines(subset)  # rows renumbered within the subset; transaction ids are the file's
    assert set(rows["transaction_id"]) <= set(whole["transaction_id"])
    expected_rejects = rejected_by_rule(rows, rows)
    reasons = Counter(expected_rejects.values())
    assert reasons["must not be negative"] == 2 and reasons["at most 2 decimals"] >= 2
    assert reasons["never sold at a positive unit price"] > 0
    assert_rejects_match(rejects_in(rejects_file), expected_rejects)
    assert "sales.unit_price: must not be negative" in output and "StockCode has no listing" in output
    stored = assert_imported_exactly(url, rows, set(expected_rejects))

    status = {e.external_id: e.status for e in stored.listings.values()}
    assert {status[c] for c in ("POST", "AMAZONFEE", "M", "D", "B", "BANK CHARGES")} == {"inactive"}
    assert "PADS" not in status  # its only positive price, 0.001, is no GBP price: reported, not rounded
    assert set(status.values()) == {"active", "inactive"}
    kinds = Counter(type(e).__name__ for *_, e in stored.lines)
    kept = rows.filter(~pl.col("row").is_in(list(expected_rejects)))
    assert kinds["Returned"] == kept.filter(pl.col("Quantity") < 0).height > 0
    zero = [e for *_, e in stored.lines if e.unit_price.amount == 0]
    assert {type(e).__name__ for e in zero} == {"Sold", "Returned"}  # zero-price sales and adjustments kept
    assert summary_number(output, "zero-price lines") == len(zero)

    # Run again: every command (refused lines set aside the same way) is found and replayed.
    assert cli(["import", "online-retail", str(subset), "--rejects", str(rejects_file)]) == 0
    again = capsys.readouterr().out
    assert re.search(r"commands\s+0 recorded, 3 replayed", again), again  # shop, listings, one chunk of sales
    assert again.split("commands")[0] == output.split("commands")[0]  # the same summary
    assert len(stored_events(url).lines) == len(stored.lines)


def test_title_falls_back_to_the_stock_code_and_price_to_the_most_frequent():
    rows = file_lines(DATA).filter(pl.col("StockCode") == "85123A")
    expected_price = rows.filter(pl.col("UnitPrice") > 0).get_column("UnitPrice").mode().min()
    listing = catalogue(rows.with_columns(Description=pl.lit(None, pl.String))).row(0, named=True)
    assert listing["title"] == "Stock item 85123A"
    assert listing["price"] == expected_price and listing["status"] == "active"


def test_a_missing_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", "host=127.0.0.1 port=1 dbname=unused connect_timeout=1")
    code = cli(["import", "online-retail", str(tmp_path / "nope.parquet")])
    assert code == 1
    assert "data file not found" in capsys.readouterr().err


def test_uk_local_times_become_aware_and_clock_change_gaps_are_reported_not_guessed():
    summer, winter = local_time("2011-07-01 12:00:00"), local_time("2010-12-01 08:26:00")
    assert summer.utcoffset().total_seconds() == 3600 and winter.utcoffset().total_seconds() == 0
    assert "does not exist" in local_time("2011-03-27 01:30:00")  # clocks went forward at 01:00
    assert "ambiguous" in local_time("2011-10-30 01:30:00")  # 01:00-02:00 happened twice
