"""Optimistic concurrency over HTTP: a client that names the version it saw never overwrites a change it
did not see; clients that do not name one all land, one after the other, with no version skipped."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from conftest import listing_spec, price_changes, send_together


def put_price(base_url, tenant, shop, listing, price: str, **extra) -> httpx.Response:
    return httpx.put(f"{base_url}/shops/{shop}/listings/{listing}/price", headers=tenant, timeout=60,
                     json={"price": price, "currency": "GBP", **extra})


def test_a_stale_expected_version_is_409_with_the_current_version(api, shop, listing, count_events):
    assert api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "21.00", "currency": "GBP"}).json()[
        "version"] == 2
    before = count_events()
    response = api.put(f"/shops/{shop}/listings/{listing}/price",
                       json={"price": "22.00", "currency": "GBP", "expected_version": 1})
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["current_version"], response.json()["field"]) == (2, "expected_version")
    assert count_events() == before


def test_the_current_expected_version_is_accepted(api, shop, listing):
    response = api.put(f"/shops/{shop}/listings/{listing}/guardrails",
                       json={"floor": "11.00", "currency": "GBP", "expected_version": 1})
    assert (response.status_code, response.json()["version"]) == (200, 2)


@pytest.mark.parametrize("round_", range(5))
def test_two_writers_at_the_same_version_one_wins_and_no_update_is_lost(base_url, tenant, shop, listing, engine,
                                                                        round_):
    prices = ["25.00", "30.00"]
    answers = send_together(2, lambda i: put_price(base_url, tenant, shop, listing, prices[i], expected_version=1))

    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
    loser = answers[1 - winner]
    assert (loser.json()["current_version"], loser.json()["field"]) == (2, "expected_version")
    [change] = price_changes(engine, listing)  # exactly one change: the winner's, not both
    assert (change.originator_version, str(change.price.amount)) == (2, prices[winner])
    assert api_price(base_url, tenant, shop, listing) == prices[winner]


def api_price(base_url, tenant, shop, listing) -> str:
    return httpx.get(f"{base_url}/shops/{shop}/listings/{listing}", headers=tenant).json()["price"]


def test_without_expected_version_every_concurrent_change_lands_in_turn(base_url, tenant, shop, listing, engine):
    n = 20
    prices = [f"{21 + i}.00" for i in range(n)]  # all within the 10.00-40.00 guardrails
    answers = send_together(n, lambda i: put_price(base_url, tenant, shop, listing, prices[i]))

    assert [a.status_code for a in answers] == [200] * n, [a.text for a in answers if a.status_code != 200]
    assert sorted(a.json()["version"] for a in answers) == list(range(2, n + 2))  # contiguous, none shared
    changes = price_changes(engine, listing)
    assert [c.originator_version for c in changes] == list(range(2, n + 2))
    assert sorted(str(c.price.amount) for c in changes) == sorted(prices)
    # Each change names the price it replaced: the one before it in the history, never a stale read.
    for earlier, later in zip(changes, changes[1:]):
        assert later.previous == earlier.price


def test_concurrent_bulk_changes_with_expected_versions_do_not_both_win(base_url, tenant, shop, engine):
    ids = [x["listing_id"] for x in httpx.post(f"{base_url}/shops/{shop}/listings", headers=tenant,
                                               json={"listings": [listing_spec(i) for i in range(3)]}).json()["listings"]]

    def bulk(i):
        changes = [{"listing_id": x, "price": f"{25 + i}.00", "expected_version": 1} for x in ids]
        return httpx.post(f"{base_url}/shops/{shop}/price-changes", headers=tenant, timeout=60,
                          json={"changes": changes, "currency": "GBP"})

    answers = send_together(2, bulk)
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
    for x in ids:
        assert [str(c.price.amount) for c in price_changes(engine, x)] == [f"{25 + winner}.00"]


@pytest.mark.parametrize("key", ["external_id", "sku"])
def test_racing_registrations_of_one_external_id_register_it_once(base_url, tenant, shop, key):
    def register(i):
        spec = listing_spec(i, **{key: "CONTESTED"})
        return httpx.post(f"{base_url}/shops/{shop}/listings", headers=tenant, json={"listings": [spec]}, timeout=60)

    answers = send_together(6, register)
    assert Counter(a.status_code for a in answers) == {201: 1, 409: 5}, [a.text for a in answers]
    losers = [a for a in answers if a.status_code == 409]
    assert all(a.headers["content-type"] == "application/problem+json" for a in losers)
    assert {a.json()["field"] for a in losers} == {f"listings[0].{key}"}  # the loser learns which value


def test_racing_sales_with_one_transaction_id_record_it_once(base_url, tenant, shop, listing, count_events):
    def record(i):
        line = {"listing_id": listing, "quantity": 1, "unit_price": "20.00", "currency": "GBP",
                "order_id": f"o-{i}", "transaction_id": "t-contested", "sold_at": "2026-11-25T10:00:00Z"}
        return httpx.post(f"{base_url}/shops/{shop}/sales", headers=tenant, json={"sales": [line]}, timeout=60)

    before = count_events()
    answers = send_together(6, record)
    assert Counter(a.status_code for a in answers) == {201: 1, 409: 5}, [a.text for a in answers]
    assert {a.json()["field"] for a in answers if a.status_code == 409} == {"sales[0].transaction_id"}
    assert count_events() == before + 2  # one batch: its Received event and the Sold event
