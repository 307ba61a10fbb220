"""Every command, over real HTTP on real PostgreSQL: what a client sends and what it gets back."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from uuid import UUID

import pytest

from conftest import listing_spec

SEEN_AT = datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)


def event_names(engine, aggregate_id: str) -> list[str]:
    return [type(e).__name__ for e in engine.core.events.get(UUID(aggregate_id))]


def register(api, shop, *specs) -> list[str]:
    response = api.post(f"/shops/{shop}/listings", json={"listings": list(specs)})
    assert response.status_code == 201, response.text
    return [x["listing_id"] for x in response.json()["listings"]]


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert body.get("field") == field, body
    return body


# -- shops --------------------------------------------------------------------------------------
class TestOpenShop:
    def test_a_tenant_opens_a_shop_and_finds_it_among_its_shops(self, api):
        response = api.post("/shops", json={"name": "Hedgerow Ceramics", "currency": "GBP", "marketplace": "etsy"})
        assert response.status_code == 201
        shop = response.json()["shop_id"]
        assert response.json()["version"] == 1
        assert api.get(f"/shops/{shop}").json() == {
            "shop_id": shop, "name": "Hedgerow Ceramics", "currency": "GBP", "marketplace": "etsy", "version": 1}
        assert api.get("/shops").json() == {"shops": [shop]}

    def test_an_unknown_currency_is_refused_naming_it(self, api, count_events):
        before = count_events()
        assert_problem(api.post("/shops", json={"name": "X", "currency": "XYZ"}), 422, "currency")
        assert count_events() == before

    def test_a_blank_name_is_refused(self, api):
        assert_problem(api.post("/shops", json={"name": "   ", "currency": "GBP"}), 422, "name")


# -- listings -----------------------------------------------------------------------------------
class TestRegisterListings:
    def test_one_listing_is_registered_with_its_guardrails(self, api, shop):
        [listing] = register(api, shop, listing_spec(1, title="Speckled mug"))
        state = api.get(f"/shops/{shop}/listings/{listing}").json()
        assert {k: state[k] for k in ("version", "external_id", "sku", "title", "price", "currency",
                                      "floor", "ceiling", "cost", "status")} == {
            "version": 1, "external_id": "ext-1", "sku": "SKU-1", "title": "Speckled mug", "price": "20.00",
            "currency": "GBP", "floor": "10.00", "ceiling": "40.00", "cost": "6.00", "status": "active"}

    def test_many_listings_are_registered_in_one_command(self, api, shop, engine):
        ids = register(api, shop, *[listing_spec(i) for i in range(250)])
        assert len(set(ids)) == 250
        assert event_names(engine, ids[-1]) == ["Registered"]

    @pytest.mark.parametrize("key", ["external_id", "sku"])
    def test_a_duplicate_inside_the_batch_is_422_naming_the_second_one(self, api, shop, key, count_events):
        before = count_events()
        specs = [listing_spec(0), listing_spec(1), listing_spec(2, **{key: listing_spec(0)[key]})]
        body = assert_problem(api.post(f"/shops/{shop}/listings", json={"listings": specs}), 422, f"listings[2].{key}")
        assert "listings[0]" in body["detail"]
        assert count_events() == before

    @pytest.mark.parametrize("key", ["external_id", "sku"])
    def test_a_value_already_taken_in_the_shop_is_409_naming_it(self, api, shop, key, count_events):
        register(api, shop, listing_spec(0))
        before = count_events()
        specs = [listing_spec(5), listing_spec(6, **{key: listing_spec(0)[key]})]
        assert_problem(api.post(f"/shops/{shop}/listings", json={"listings": specs}), 409, f"listings[1].{key}")
        assert count_events() == before  # all or nothing: listings[0] was not registered either

    def test_the_same_external_id_is_fine_in_another_shop(self, api, shop):
        register(api, shop, listing_spec(0))
        other = api.post("/shops", json={"name": "Second shop", "currency": "GBP"}).json()["shop_id"]
        register(api, other, listing_spec(0))

    def test_a_price_outside_its_own_guardrails_names_the_listing(self, api, shop):
        specs = [listing_spec(0), listing_spec(1, price="5.00")]
        assert_problem(api.post(f"/shops/{shop}/listings", json={"listings": specs}), 422, "listings[1].price")

    def test_a_listing_in_another_currency_than_the_shop_is_refused(self, api, shop):
        specs = [listing_spec(0, currency="USD")]
        assert_problem(api.post(f"/shops/{shop}/listings", json={"listings": specs}), 422, "listings[0].currency")


# -- prices and guardrails ----------------------------------------------------------------------------
class TestSetPrice:
    def test_a_new_price_is_recorded_with_who_and_why(self, api, tenant, shop, listing, engine):
        response = api.put(f"/shops/{shop}/listings/{listing}/price",
                           json={"price": "24.50", "currency": "GBP", "reason": "winter sale", "source": "experiment",
                                 "rule": "beat-lowest"})
        assert response.json() == {"listing_id": listing, "version": 2, "changed": True, "price": "24.50",
                                   "currency": "GBP"}
        change = list(engine.core.events.get(UUID(listing)))[-1]
        assert (str(change.price.amount), str(change.previous.amount), change.rule) == ("24.50", "20.00", "beat-lowest")
        assert (change.meta.actor_id, change.meta.source, engine.identity.vault.reveal(change.meta.reason)) == (
            tenant.account_id, "experiment", "winter sale")

    def test_the_same_price_again_changes_nothing_and_writes_nothing(self, api, shop, listing, count_events):
        before = count_events()
        response = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "20.00", "currency": "GBP"})
        assert response.status_code == 200
        assert (response.json()["changed"], response.json()["version"]) == (False, 1)
        assert count_events() == before

    @pytest.mark.parametrize("price", ["9.99", "40.01"])
    def test_a_price_outside_the_guardrails_is_refused(self, api, shop, listing, price, count_events):
        before = count_events()
        body = assert_problem(api.put(f"/shops/{shop}/listings/{listing}/price",
                                      json={"price": price, "currency": "GBP"}), 422, "price")
        assert "floor" in body["detail"] or "ceiling" in body["detail"]
        assert count_events() == before

    def test_a_price_in_another_currency_is_refused(self, api, shop, listing):
        assert_problem(api.put(f"/shops/{shop}/listings/{listing}/price",
                               json={"price": "20.00", "currency": "USD"}), 422, "currency")

    def test_rollback_is_not_a_source_a_client_may_claim(self, api, shop, listing):
        assert_problem(api.put(f"/shops/{shop}/listings/{listing}/price",
                               json={"price": "21.00", "currency": "GBP", "source": "rollback"}), 422, "source")


class TestSetGuardrails:
    def test_new_guardrails_are_recorded_and_then_enforced(self, api, shop, listing):
        response = api.put(f"/shops/{shop}/listings/{listing}/guardrails",
                           json={"floor": "15.00", "ceiling": "25.00", "cost": "7.00", "currency": "GBP"})
        assert response.status_code == 200 and response.json()["version"] == 2
        state = api.get(f"/shops/{shop}/listings/{listing}").json()
        assert (state["floor"], state["ceiling"], state["cost"]) == ("15.00", "25.00", "7.00")
        assert_problem(api.put(f"/shops/{shop}/listings/{listing}/price",
                               json={"price": "30.00", "currency": "GBP"}), 422, "price")

    @pytest.mark.parametrize("rails, field", [({"floor": "21.00"}, "floor"), ({"ceiling": "19.99"}, "ceiling")])
    def test_guardrails_that_exclude_the_current_price_are_refused(self, api, shop, listing, rails, field,
                                                                    count_events):
        before = count_events()
        assert_problem(api.put(f"/shops/{shop}/listings/{listing}/guardrails",
                               json={**rails, "currency": "GBP"}), 422, field)
        assert count_events() == before

    def test_floor_above_ceiling_is_refused(self, api, shop, listing):
        assert_problem(api.put(f"/shops/{shop}/listings/{listing}/guardrails",
                               json={"floor": "30.00", "ceiling": "12.00", "currency": "GBP"}), 422, "floor")


# -- facts --------------------------------------------------------------------------------------------
def observation(listing: str, i: int = 0, **overrides) -> dict:
    return {"listing_id": listing, "competitor": f"etsy:shop/Rival{i % 17}/{i}", "price": f"{18 + i % 5}.95",
            "currency": "GBP", "observed_at": (SEEN_AT + timedelta(seconds=i)).isoformat(), "source": "etsy-api",
            **overrides}


def sale(listing: str, transaction_id: str, quantity: int = 1, **overrides) -> dict:
    return {"listing_id": listing, "quantity": quantity, "unit_price": "20.00", "currency": "GBP",
            "order_id": "order-1", "transaction_id": transaction_id, "sold_at": SEEN_AT.isoformat(), **overrides}


class TestRecordObservations:
    @pytest.mark.slow
    def test_a_batch_of_ten_thousand_is_accepted_and_every_observation_stored(self, api, shop, engine):
        listings = register(api, shop, *[listing_spec(i) for i in range(20)])
        batch = [observation(listings[i % 20], i) for i in range(10_000)]
        response = api.post(f"/shops/{shop}/observations", json={"observations": batch})
        assert response.status_code == 201, response.text
        assert response.json()["recorded"] == 10_000
        stored = Counter(event_names(engine, response.json()["batch_id"]))
        assert stored == {"Received": 1, "CompetitorPriceObserved": 10_000}

    def test_each_observation_keeps_its_own_business_time(self, api, shop, listing, engine):
        response = api.post(f"/shops/{shop}/observations", json={"observations": [observation(listing, 7)]})
        [_, observed] = engine.core.events.get(UUID(response.json()["batch_id"]))
        assert observed.meta.occurred_at == SEEN_AT + timedelta(seconds=7)
        assert observed.timestamp > observed.meta.occurred_at  # recorded later than it happened

    def test_an_observation_of_an_unknown_listing_names_it_and_nothing_is_stored(self, api, shop, listing,
                                                                                count_events):
        before = count_events()
        batch = [observation(listing, 0), observation("00000000-0000-4000-8000-000000000000", 1)]
        assert_problem(api.post(f"/shops/{shop}/observations", json={"observations": batch}), 422,
                       "observations[1].listing_id")
        assert count_events() == before


class TestRecordSales:
    def test_sales_and_returns_are_recorded_as_their_own_facts(self, api, shop, listing, engine):
        lines = [sale(listing, "t-1", 3), sale(listing, "t-2", -1, order_id="order-1")]
        response = api.post(f"/shops/{shop}/sales", json={"sales": lines})
        assert response.status_code == 201 and response.json()["recorded"] == 2
        _, sold, returned = engine.core.events.get(UUID(response.json()["batch_id"]))
        assert (type(sold).__name__, sold.quantity) == ("Sold", 3)
        assert (type(returned).__name__, returned.quantity) == ("Returned", 1)

    def test_a_transaction_recorded_twice_is_409_and_nothing_is_written(self, api, shop, listing, count_events):
        assert api.post(f"/shops/{shop}/sales", json={"sales": [sale(listing, "t-1")]}).status_code == 201
        before = count_events()
        again = [sale(listing, "t-9"), sale(listing, "t-1")]
        assert_problem(api.post(f"/shops/{shop}/sales", json={"sales": again}), 409, "sales[1].transaction_id")
        assert count_events() == before

    def test_the_same_transaction_twice_in_one_batch_is_422(self, api, shop, listing, count_events):
        before = count_events()
        lines = [sale(listing, "t-1"), sale(listing, "t-1")]
        assert_problem(api.post(f"/shops/{shop}/sales", json={"sales": lines}), 422, "sales[1].transaction_id")
        assert count_events() == before

    def test_a_zero_quantity_is_refused(self, api, shop, listing):
        assert_problem(api.post(f"/shops/{shop}/sales", json={"sales": [sale(listing, "t", 0)]}), 422,
                       "sales[0].quantity")


# -- bulk price change --------------------------------------------------------------------------------
class TestBulkSetPrices:
    def test_many_prices_change_in_one_command(self, api, shop, engine):
        ids = register(api, shop, *[listing_spec(i) for i in range(3)])
        changes = [{"listing_id": x, "price": f"2{i}.50"} for i, x in enumerate(ids)]
        response = api.post(f"/shops/{shop}/price-changes",
                            json={"changes": changes, "currency": "GBP", "source": "import", "reason": "new list"})
        assert response.status_code == 200, response.text
        assert [c["price"] for c in response.json()["changes"]] == ["20.50", "21.50", "22.50"]
        assert all(api.get(f"/shops/{shop}/listings/{x}").json()["version"] == 2 for x in ids)
        # One command, one correlation: the changes share their command id.
        commands = {list(engine.core.events.get(UUID(x)))[-1].meta.command_id for x in ids}
        assert len(commands) == 1

    @pytest.mark.parametrize("bad_item, status, field", [
        ({"price": "99.00"}, 422, "changes[2].price"),                                  # above its ceiling
        ({"price": "1.234"}, 422, "changes[2].price"),                                  # 3-decimal GBP
        ({"listing_id": "00000000-0000-4000-8000-000000000000"}, 422, "changes[2].listing_id"),
        ({"expected_version": 7}, 409, "changes[2].expected_version"),
    ])
    def test_one_bad_item_refuses_the_whole_command_and_changes_no_listing(self, api, shop, bad_item, status,
                                                                           field, count_events):
        ids = register(api, shop, *[listing_spec(i) for i in range(4)])
        before = count_events()
        changes = [{"listing_id": x, "price": "25.00"} for x in ids]
        changes[2].update(bad_item)
        assert_problem(api.post(f"/shops/{shop}/price-changes", json={"changes": changes, "currency": "GBP"}),
                       status, field)
        assert count_events() == before
        for x in ids:
            state = api.get(f"/shops/{shop}/listings/{x}").json()
            assert (state["version"], state["price"]) == (1, "20.00")

    def test_the_same_listing_twice_is_refused(self, api, shop, listing):
        changes = [{"listing_id": listing, "price": "21.00"}, {"listing_id": listing, "price": "22.00"}]
        assert_problem(api.post(f"/shops/{shop}/price-changes", json={"changes": changes, "currency": "GBP"}),
                       422, "changes[1].listing_id")
