"""Listings and receipts in from (the fake) Etsy over real HTTP: sales once per transaction,
cancellations as returns, the cursor, drift as a marketplace price change, a page of unexpected
shape refused whole, and kill -9 of `etsypro etsy sync` at random points losing or doubling no sale."""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from decimal import Decimal

import psycopg
import pytest

from domain.listing import Listing
from test_demand_http import project
from etsy_world import connect, etsy_shop_with_listings, etsypro, open_shop

pytest_plugins = ["etsy_world"]


def sales_of(engine, shop: str) -> set[str]:
    """The transaction ids recorded as the shop's sales (returns end in ':return')."""
    with psycopg.connect(engine.core.conninfo) as conn:
        return {key for (key,) in conn.execute(
            "SELECT key FROM reservations WHERE shop_id = %s AND kind = 'sale_transaction'", [shop])}


@pytest.fixture
def synced_shop(etsy_api, fake):
    shop = open_shop(etsy_api)
    etsy_shop, listings = etsy_shop_with_listings(fake, 3)
    connect(etsy_api, fake, shop, etsy_shop)
    return shop, etsy_shop, listings


def sync(api, shop: str) -> dict:
    answer = api.post(f"/shops/{shop}/marketplace/etsy/sync")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_receipts_become_sales_once_and_cancellations_returns(synced_shop, etsy_api, etsy_engine, fake):
    shop, etsy_shop, listings = synced_shop
    first = fake.add_receipt(etsy_shop.shop_id, [(listings[0].listing_id, 2, Decimal("20.00")),
                                                 (listings[1].listing_id, 1, Decimal("20.00"))])
    assert sync(etsy_api, shop) | {} == {"listings": 3, "registered": 3, "drifts": 0, "described": 0,
                                               "receipts": 1, "sales": 2, "unlinked": 0, "competitor_prices": 0}
    assert sync(etsy_api, shop)["sales"] == 0  # read again from the inclusive cursor: nothing doubled
    fake.cancel_receipt(etsy_shop.shop_id, first["receipt_id"])
    assert sync(etsy_api, shop)["sales"] == 2  # the two returns
    ids = {t["transaction_id"] for t in first["transactions"]}
    assert set(sales_of(etsy_engine, shop)) == {str(i) for i in ids} | {f"{i}:return" for i in ids}


def test_a_price_changed_at_etsy_is_drift_with_source_marketplace(synced_shop, etsy_api, etsy_engine, fake):
    shop, _, listings = synced_shop
    sync(etsy_api, shop)
    fake.set_price_at_etsy(listings[2].listing_id, Decimal("17.25"))
    assert sync(etsy_api, shop)["drifts"] == 1
    drift = etsy_api.get(f"/shops/{shop}/marketplace/etsy/drifts").json()
    assert [(d["etsy_price"], d["engine_price"], d["applied"]) for d in drift] == [("17.25", "20.00", True)]
    listing = etsy_api.get(f"/shops/{shop}/listings/{drift[0]['listing_id']}").json()
    assert listing["price"] == "17.25"
    change = [e for e in etsy_engine.core.events.get(uuid.UUID(drift[0]["listing_id"]))
              if isinstance(e, Listing.PriceChanged)][-1]
    assert change.meta.source == "marketplace"
    assert sync(etsy_api, shop)["drifts"] == 0  # seen once, recorded once
    assert etsy_api.get(f"/shops/{shop}/marketplace/etsy/queue").json() == []  # not pushed back to Etsy


def board_row(engine, listing: str) -> tuple:
    with psycopg.connect(engine.core.conninfo) as conn:
        return conn.execute("SELECT title, status FROM analytics.current_prices WHERE listing_id = %s", [listing]).fetchone()


def test_a_title_or_state_changed_at_etsy_is_described_once_and_shown(synced_shop, etsy_api, etsy_engine, fake,
                                                                      database_url):
    shop, _, listings = synced_shop
    sync(etsy_api, shop)
    links = {etsy: str(listing) for etsy, listing in linked_of(etsy_engine, shop).items()}
    fake.describe_at_etsy(listings[0].listing_id, title="Mug, now glazed")
    fake.describe_at_etsy(listings[1].listing_id, state="inactive")
    fake.describe_at_etsy(listings[2].listing_id, state="sold_out")
    assert sync(etsy_api, shop)["described"] == 3
    assert sync(etsy_api, shop)["described"] == 0  # seen once, recorded once
    shown = {etsy: etsy_api.get(f"/shops/{shop}/listings/{listing}").json() for etsy, listing in links.items()}
    assert [(shown[x.listing_id]["title"], shown[x.listing_id]["status"]) for x in listings] == [
        ("Mug, now glazed", "active"), ("Mug 1", "inactive"), ("Mug 2", "sold_out")]
    described = [e for e in etsy_engine.core.events.get(uuid.UUID(links[listings[1].listing_id]))
                 if isinstance(e, Listing.Described)]
    assert [(e.status, e.meta.source) for e in described] == [("inactive", "marketplace")]
    project(database_url)
    assert [board_row(etsy_engine, links[x.listing_id]) for x in listings] == [
        ("Mug, now glazed", "active"), ("Mug 1", "inactive"), ("Mug 2", "sold_out")]
    fake.describe_at_etsy(listings[1].listing_id, state="active")  # back on sale
    assert sync(etsy_api, shop)["described"] == 1


def test_a_listing_registered_before_connecting_is_adopted_with_etsys_price_and_title(etsy_api, etsy_engine, fake):
    """A listing the seller registered with Etsy's listing id as its external id is linked, not
    registered again; where its price or title differ from Etsy's, Etsy's (what buyers see) become its own."""
    shop = open_shop(etsy_api)
    etsy_shop, [same, other] = etsy_shop_with_listings(fake, 2)
    mine = [{"external_id": str(x.listing_id), "sku": f"OWN-{i}", "title": title, "price": price, "currency": "GBP",
             "floor": "10.00", "ceiling": "40.00"}
            for i, (x, title, price) in enumerate([(same, "Mug 0", "20.00"), (other, "Old name", "25.00")])]
    registered = etsy_api.post(f"/shops/{shop}/listings", json={"listings": mine})
    assert registered.status_code == 201, registered.text
    connect(etsy_api, fake, shop, etsy_shop)
    assert sync(etsy_api, shop).items() >= {"listings": 2, "registered": 0, "drifts": 1, "described": 1}.items()
    links = linked_of(etsy_engine, shop)
    assert {str(links[x.listing_id]) for x in (same, other)} == {x["listing_id"] for x in registered.json()["listings"]}
    adopted = etsy_api.get(f"/shops/{shop}/listings/{links[other.listing_id]}").json()
    assert (adopted["price"], adopted["title"]) == ("20.00", "Mug 1")
    assert [(d["etsy_price"], d["engine_price"]) for d in etsy_api.get(f"/shops/{shop}/marketplace/etsy/drifts").json()] == [
        ("20.00", "25.00")]
    assert sync(etsy_api, shop).items() >= {"registered": 0, "drifts": 0, "described": 0}.items()


def linked_of(engine, shop: str) -> dict:
    with psycopg.connect(engine.core.conninfo) as conn:
        return dict(conn.execute("SELECT etsy_listing_id, listing_id FROM marketplace.etsy_listings WHERE shop_id = %s",
                                 [shop]).fetchall())


def test_a_page_of_unexpected_shape_is_refused_whole(synced_shop, etsy_api, etsy_engine, fake):
    shop, etsy_shop, listings = synced_shop
    sync(etsy_api, shop)
    good = fake.add_receipt(etsy_shop.shop_id, [(listings[0].listing_id, 1, Decimal("20.00"))])
    bad = fake.add_receipt(etsy_shop.shop_id, [(listings[1].listing_id, 1, Decimal("20.00"))])
    with fake.lock:
        fake.shops[etsy_shop.shop_id].receipts[bad["receipt_id"]]["transactions"][0]["price"] = {"amount": "2000"}
    before = set(sales_of(etsy_engine, shop))
    answer = etsy_api.post(f"/shops/{shop}/marketplace/etsy/sync")
    assert answer.status_code == 502 and "transactions[0].price" in answer.json()["detail"], answer.text
    assert set(sales_of(etsy_engine, shop)) == before  # the good receipt of that page waits too
    status = etsy_api.get(f"/shops/{shop}/marketplace/etsy").json()
    assert "transactions[0].price" in status["sync"]["last_error"]
    with fake.lock:
        fake.shops[etsy_shop.shop_id].receipts[bad["receipt_id"]]["transactions"][0]["price"] = good["transactions"][0]["price"]
    assert sync(etsy_api, shop)["sales"] == 2


def test_kill_9_of_the_sync_at_random_points_loses_and_doubles_no_sale(etsy_api, etsy_engine, etsy_server, fake,
                                                                      database_url):
    shop = open_shop(etsy_api)
    etsy_shop, listings = etsy_shop_with_listings(fake, 4)
    connect(etsy_api, fake, shop, etsy_shop)
    rng = random.Random(7)
    expected = set()
    for n in range(900):
        lines = [(rng.choice(listings).listing_id, rng.randint(1, 3), Decimal("20.00")) for _ in range(rng.randint(1, 2))]
        receipt = fake.add_receipt(etsy_shop.shop_id, lines, at=1_790_000_000 + n // 3)  # 3 receipts per second
        expected |= {str(t["transaction_id"]) for t in receipt["transactions"]}
    fake.config.per_second = 6  # slow enough that a kill lands mid-way
    try:
        for _ in range(4):
            worker = etsypro(database_url, etsy_server[1], "etsy", "sync", "--shop", shop, stdout=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.8, 2.0))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        fake.config.per_second = 200
        final = etsypro(database_url, etsy_server[1], "etsy", "sync", "--shop", shop, stdout=subprocess.DEVNULL)
        assert final.wait(timeout=120) == 0
    finally:
        fake.config.per_second = 200
    assert set(sales_of(etsy_engine, shop)) == expected
    with psycopg.connect(etsy_engine.core.conninfo) as conn:
        sold = conn.execute("SELECT count(*) FROM pricing_events e JOIN event_index i USING (notification_id)"
                            " WHERE i.shop_id = %s AND e.topic = 'domain.facts:SalesBatch.Sold'", [shop]).fetchone()[0]
    assert sold == len(expected)  # one event per transaction: nothing doubled
