"""`etsypro bench etsy`: the price pusher against the fake Etsy at its rate limit, and the receipts sync.

- push_per_s: accepted price changes pushed (GET + PUT each) per second while the queue is full;
  push_rate_used: the calls made per second over the fake's x-limit-per-second (target >= 95 %),
  with the calls the fake answered 429 for being over budget (target 0).
- sync_receipts_per_s: receipts read from Etsy and recorded as sales (first sync of a shop).
- csv_import_lines_per_s: a seller's EtsySoldOrderItems export through the command handlers, beside
  raw COPY of the same file (bench/etsy_csv.py; --csv-lines 0 skips it).
A fresh database and an in-process fake over real HTTP; one shop.
"""

from __future__ import annotations

import time
from decimal import Decimal
from uuid import UUID

import httpx

from api.server import running
from bench.common import fresh_database, note, print_table, rate, show
from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor
from fake_etsy import FakeEtsy, FakeEtsyConfig, create_app
from streams.etsy_client import Budget, EtsyApp, EtsyClient
from streams.etsy_grant import ShopSession, token_answer
from streams.etsy_push import EtsyPusher, PushQueue
from streams.etsy_sync import EtsySync, SyncReport

RECEIPTS = 3000


def main(as_json: bool = False, seconds: float = 8.0, per_second: int = 40, csv_lines: int = 100_000) -> int:
    listings = int(per_second / 2 * seconds * 1.5) + 10  # more than can be pushed in the time: the queue stays full
    fake = FakeEtsy(FakeEtsyConfig(per_second=per_second, per_day=10**7))
    with fresh_database("etsypro_bench_etsy") as (url, where), running(create_app(fake)) as fake_url:
        engine = PricingEngine(url, pool_size=3)
        engine.identity.use_secret_key("bench-etsy-" + "k" * 32)
        app = EtsyApp(fake.config.keystring, fake.config.shared_secret, fake_url, f"{fake_url}/oauth/connect",
                      "http://127.0.0.1:1/callback")
        marketplace = engine.marketplace
        client = EtsyClient(app, Budget(per_second=per_second))
        try:
            shop, etsy_shop = _connected_shop(engine, marketplace, fake, client, listings)
            sync_figures = _sync(engine, marketplace, client, fake, shop, etsy_shop)
            push_figures = _push(engine, marketplace, client, fake, shop, seconds, per_second)
        finally:
            client.close()
            engine.close()
    figures = {"database": where, "fake_limit_per_second": per_second, **push_figures, **sync_figures}
    if csv_lines:
        from bench.etsy_csv import measure

        figures |= {key: value for key, value in measure(csv_lines).items() if key.startswith("csv_")}
    return show(figures, as_json, report)


def _connected_shop(engine, marketplace, fake, client, listings: int):
    note(f"etsy: a shop of {listings} listings, connected through PKCE")
    etsy_shop = fake.add_shop("GBP")
    for i in range(listings):
        fake.add_listing(etsy_shop.shop_id, f"Listing {i}", f"SKU-{i}", Decimal("20.00"), variations=2 if i % 4 == 0 else 0)
    ctx = CommandContext(actor=Actor("bench"), tenant_id="bench-etsy")
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Bench Etsy", currency="GBP")).body["shop_id"])
    started = marketplace.start_connect(ctx, shop, etsy_shop.shop_id, client.app.keystring, client.app.redirect_uri,
                                        client.app.authorize_url)
    consent = httpx.get(started["authorize_url"])
    code = httpx.QueryParams(httpx.URL(consent.headers["location"]).query).get("code")
    marketplace.finish_connect(started["state"], code, lambda c, v, r: token_answer(client.exchange_code(c, v, r)),
                               client.shop_owner)
    return shop, etsy_shop


def _sync(engine, marketplace, client, fake, shop, etsy_shop) -> dict:
    syncer = EtsySync(marketplace, client, engine.core.conninfo)
    session = ShopSession(marketplace, client, shop)
    report = SyncReport()
    syncer.sync_listings(shop, session, report)
    ids = list(etsy_shop.listings)
    for n in range(RECEIPTS):
        fake.add_receipt(etsy_shop.shop_id, [(ids[n % len(ids)], 1, Decimal("20.00"))], at=1_790_000_000 + n)
    note(f"etsy: syncing {RECEIPTS} receipts")
    started = time.perf_counter()
    syncer.sync_receipts(shop, session, report)
    elapsed = time.perf_counter() - started
    return {"sync_receipts": report.receipts, "sync_sales_recorded": report.sales, "sync_seconds": round(elapsed, 3),
            "sync_receipts_per_s": round(rate(report.receipts, elapsed), 1)}


def _push(engine, marketplace, client, fake, shop, seconds: float, per_second: int) -> dict:
    ctx = CommandContext(actor=Actor("bench"), tenant_id="bench-etsy")
    with engine.core.recorder.datastore.get_connection() as conn:
        linked = [r["listing_id"] for r in conn.execute("SELECT listing_id FROM marketplace.etsy_listings WHERE shop_id = %s", [shop])]
    changes = [models.PriceChangeItem(listing_id=x, price=Decimal("21.00") + i % 50) for i, x in enumerate(linked)]
    for start in range(0, len(changes), 500):
        engine.listings.bulk_set_prices(ctx, shop, models.BulkSetPrices(changes=changes[start:start + 500], currency="GBP"))
    PushQueue(engine.core.conninfo).catch_up()
    pusher = EtsyPusher(marketplace, client, engine.core.conninfo, batch=100)
    over_before, calls_before = fake.over_limit_calls(), len(fake.calls)
    note(f"etsy: pushing for {seconds:.0f} s at the fake's limit of {per_second} calls/s")
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and pusher.step():
        pass
    elapsed = time.perf_counter() - started
    calls = len(fake.calls) - calls_before
    pushed = pusher.stats.pushed
    per_window = _calls_per_full_second(fake.calls[calls_before:])
    return {"pushed": pushed, "push_seconds": round(elapsed, 3), "push_per_s": round(rate(pushed, elapsed), 2),
            "push_allowed_per_s": per_second / 2, "calls_per_s": round(rate(calls, elapsed), 2),
            "push_rate_used": round(per_window / per_second, 4), "calls_per_full_second": round(per_window, 2),
            "over_budget_calls": fake.over_limit_calls() - over_before, "throttled_429": client.budget.throttled}


def _calls_per_full_second(calls: list) -> float:
    """Mean calls answered per wall-clock second, over the seconds the run covered whole (the fake
    counts its budget per wall-clock second; the first and last are partial)."""
    seconds = [int(at) for at, *_ in calls]
    whole = [s for s in range(min(seconds) + 1, max(seconds))]
    return sum(1 for s in seconds if s in set(whole)) / len(whole) if whole else 0.0


def report(f: dict) -> None:
    print_table(f"Etsy connection against the fake at {f['fake_limit_per_second']} calls/s ({f['database']})", [
        ("push_per_s", f"{f['push_per_s']}", f"price changes pushed per second (allowed: {f['push_allowed_per_s']}, GET+PUT each)"),
        ("push_rate_used", f"{f['push_rate_used']:.1%}", "calls per whole second over the fake's limit (target >= 95 %)"),
        ("over_budget_calls", f"{f['over_budget_calls']}", "calls the fake answered 429 as over the budget"),
        ("sync_receipts_per_s", f"{f['sync_receipts_per_s']}", f"receipts synced in as sales ({f['sync_receipts']} receipts)"),
    ] + ([("csv_import_lines_per_s", f"{f['csv_import_lines_per_s']:,.0f}",
           f"order items through the handlers; raw COPY {f['csv_copy_lines_per_s']:,.0f}/s "
           f"(ratio {f['csv_import_vs_copy']:.3f}); target {f['csv_import_target_lines_per_s']:,}")]
         if "csv_import_lines_per_s" in f else []))
