"""Competitor watches over real HTTP against (the fake) Etsy: named listings and a keyword search
become observations (source etsy-watch) at each sync, within the app's call budget; the shop's own
listings, inactive ones and other currencies are left out; bad watches are refused naming the field,
and only the shop's own tenant may watch or read them."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest

from domain.facts import ObservationBatch
from etsy_world import connect, etsy_shop_with_listings, open_shop
from test_commands_http import assert_problem
from test_etsy_sync import linked_of, sync

pytest_plugins = ["etsy_world"]


@pytest.fixture
def watched(etsy_api, etsy_engine, fake):
    """A connected shop with two synced Etsy listings ("Mug 0", "Mug 1"), and rivals in two other shops."""
    shop = open_shop(etsy_api)
    etsy_shop, mine = etsy_shop_with_listings(fake, 2)
    connect(etsy_api, fake, shop, etsy_shop)
    sync(etsy_api, shop)
    rivals, elsewhere = fake.add_shop("GBP"), fake.add_shop("USD")
    tag = uuid.uuid4().hex[:8]  # the fake is shared by the module's tests: a search word of this test's own
    found = [fake.add_listing(rivals.shop_id, f"Speckled mug {tag}", "R1", Decimal("18.50")),
             fake.add_listing(rivals.shop_id, f"Speckled mug {tag} large", "R2", Decimal("22.00")),
             fake.add_listing(rivals.shop_id, f"Speckled mug {tag} old", "R3", Decimal("9.00"), state="inactive"),
             fake.add_listing(elsewhere.shop_id, f"Speckled mug {tag}", "U1", Decimal("25.00")),
             fake.add_listing(rivals.shop_id, f"Tea towel {tag}", "T1", Decimal("7.00"))]
    fake.describe_at_etsy(mine[0].listing_id, title=f"Speckled mug {tag} (ours)")
    listing = str(linked_of(etsy_engine, shop)[mine[1].listing_id])
    return shop, listing, tag, found, mine


def observed(engine, listing: str) -> list[tuple[str, str, str]]:
    with engine.core.recorder.datastore.get_connection() as conn:
        ids = [r["originator_id"] for r in conn.execute(
            "SELECT DISTINCT originator_id FROM pricing_events WHERE topic = %s",
            ["domain.facts:ObservationBatch.CompetitorPriceObserved"]).fetchall()]
    events = [e for batch in ids for e in engine.core.events.get(batch)
              if isinstance(e, ObservationBatch.CompetitorPriceObserved) and str(e.listing_id) == listing]
    return sorted((e.competitor, str(e.price.amount), e.source) for e in events)


def test_a_keyword_watch_records_active_rivals_in_the_shops_currency_at_each_sync(etsy_api, etsy_engine, fake, watched):
    shop, listing, tag, (r1, r2, _, _, _), mine = watched
    put = etsy_api.put(f"/shops/{shop}/marketplace/etsy/watches/{listing}", json={"keywords": f"speckled {tag} mug"})
    assert put.status_code == 200, put.text
    calls = len(fake.calls)
    assert sync(etsy_api, shop)["competitor_prices"] == 2  # not inactive, not USD, not the shop's own mug
    assert any(path == "/v3/application/listings/active" for _, _, path, _ in fake.calls[calls:])
    assert observed(etsy_engine, listing) == [(f"etsy:{r1.listing_id}", "18.50", "etsy-watch"),
                                              (f"etsy:{r2.listing_id}", "22.00", "etsy-watch")]
    shown = etsy_api.get(f"/shops/{shop}/marketplace/etsy/watches/{listing}").json()
    assert (shown["keywords"], shown["last_seen"], shown["last_error"]) == (f"speckled {tag} mug", 2, None)
    fake.set_price_at_etsy(r1.listing_id, Decimal("17.00"))
    assert sync(etsy_api, shop)["competitor_prices"] == 2  # every sync a new observation of each
    assert (f"etsy:{r1.listing_id}", "17.00", "etsy-watch") in observed(etsy_engine, listing)


def test_a_named_watch_reads_its_listings_in_one_call_and_max_results_bounds_a_search(etsy_api, etsy_engine, fake,
                                                                                     watched):
    shop, listing, tag, (r1, _, r3, _, towel), _ = watched
    named = etsy_api.put(f"/shops/{shop}/marketplace/etsy/watches/{listing}",
                         json={"etsy_listing_ids": [r1.listing_id, r3.listing_id, towel.listing_id, 10**14]})
    assert named.status_code == 200, named.text
    calls = len(fake.calls)
    assert sync(etsy_api, shop)["competitor_prices"] == 2  # r3 is inactive, the last does not exist
    assert [path for _, _, path, _ in fake.calls[calls:]].count("/v3/application/listings/batch") == 1
    assert etsy_api.put(f"/shops/{shop}/marketplace/etsy/watches/{listing}",
                        json={"keywords": f"speckled {tag}", "max_results": 2}).status_code == 200
    assert sync(etsy_api, shop)["competitor_prices"] == 1  # the newest 2 active ones: the USD one and r2
    assert [w["listing_id"] for w in etsy_api.get(f"/shops/{shop}/marketplace/etsy/watches").json()] == [listing]
    assert etsy_api.delete(f"/shops/{shop}/marketplace/etsy/watches/{listing}").json()["max_results"] == 2
    assert sync(etsy_api, shop)["competitor_prices"] == 0
    assert_problem(etsy_api.delete(f"/shops/{shop}/marketplace/etsy/watches/{listing}"), 404, "listing_id")


@pytest.mark.parametrize("body, field", [
    ({}, "keywords"),
    ({"keywords": "mug", "etsy_listing_ids": [1]}, "keywords"),
    ({"keywords": ""}, "keywords"),
    ({"keywords": "x" * 201}, "keywords"),
    ({"etsy_listing_ids": []}, "etsy_listing_ids"),
    ({"etsy_listing_ids": list(range(1, 102))}, "etsy_listing_ids"),
    ({"etsy_listing_ids": [1, 1]}, "etsy_listing_ids"),
    ({"etsy_listing_ids": [-5]}, "etsy_listing_ids[0]"),
    ({"etsy_listing_ids": ["12"]}, "etsy_listing_ids[0]"),
    ({"etsy_listing_ids": [1.5]}, "etsy_listing_ids[0]"),
    ({"keywords": "mug", "max_results": 0}, "max_results"),
    ({"keywords": "mug", "max_results": 101}, "max_results"),
    ({"keywords": "mug", "max_results": "NaN"}, "max_results"),
    ({"keywords": "mug'); DROP TABLE pricing_events; --", "colour": "red"}, "colour"),
])
def test_a_bad_watch_is_refused_naming_the_field_and_nothing_is_kept(etsy_api, etsy_engine, fake, watched, body, field):
    shop, listing, *_ = watched
    assert_problem(etsy_api.put(f"/shops/{shop}/marketplace/etsy/watches/{listing}", json=body), 422, field)
    assert_problem(etsy_api.get(f"/shops/{shop}/marketplace/etsy/watches/{listing}"), 404, "listing_id")


def test_other_tenants_unknown_listings_and_readers_are_refused(etsy_api, etsy_server, etsy_accounts, seller, watched):
    shop, listing, *_ = watched
    path = f"/shops/{shop}/marketplace/etsy/watches"
    assert etsy_api.put(f"{path}/{listing}", json={"keywords": "mug"}).status_code == 200
    with httpx.Client(base_url=etsy_server[0], headers=etsy_accounts.new("seller"), timeout=30) as stranger:
        assert_problem(stranger.put(f"{path}/{listing}", json={"keywords": "mug"}), 404)
        assert_problem(stranger.get(f"{path}/{listing}"), 404)
        assert_problem(stranger.get(path), 404)
        assert_problem(stranger.delete(f"{path}/{listing}"), 404)
    assert_problem(etsy_api.put(f"{path}/{uuid.uuid4()}", json={"keywords": "mug"}), 404)
    with httpx.Client(base_url=etsy_server[0], headers=etsy_accounts.new("analyst", seller.tenant_id),
                      timeout=30) as analyst:
        assert analyst.get(f"{path}/{listing}").json()["keywords"] == "mug"
        assert analyst.put(f"{path}/{listing}", json={"keywords": "bowl"}).status_code == 403
