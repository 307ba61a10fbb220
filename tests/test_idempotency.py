"""Idempotency-Key: a client may retry any command safely. The same key and body answer the original
result and write nothing; the same key with another body is refused; racing duplicates write once."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from conftest import listing_spec, send_together

SEEN_AT = datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}


def observations(listing: str, n: int) -> dict:
    return {"observations": [
        {"listing_id": listing, "competitor": f"rival-{i}", "price": "19.95", "currency": "GBP",
         "observed_at": (SEEN_AT + timedelta(seconds=i)).isoformat()} for i in range(n)]}


def sales(listing: str, *transactions: str) -> dict:
    return {"sales": [{"listing_id": listing, "quantity": 1, "unit_price": "20.00", "currency": "GBP",
                       "order_id": "o-1", "transaction_id": t, "sold_at": SEEN_AT.isoformat()} for t in transactions]}


def commands(shop: str, listing: str) -> dict[str, tuple[str, str, dict]]:
    """One representative request per command endpoint: (method, path, body)."""
    return {
        "open_shop": ("POST", "/shops", {"name": "Another shop", "currency": "GBP"}),
        "register_listings": ("POST", f"/shops/{shop}/listings", {"listings": [listing_spec(99)]}),
        "set_price": ("PUT", f"/shops/{shop}/listings/{listing}/price", {"price": "23.00", "currency": "GBP"}),
        "set_guardrails": ("PUT", f"/shops/{shop}/listings/{listing}/guardrails",
                           {"floor": "12.00", "ceiling": "30.00", "currency": "GBP"}),
        "bulk_set_prices": ("POST", f"/shops/{shop}/price-changes",
                            {"changes": [{"listing_id": listing, "price": "24.00"}], "currency": "GBP"}),
        "record_observations": ("POST", f"/shops/{shop}/observations", observations(listing, 3)),
        "record_sales": ("POST", f"/shops/{shop}/sales", sales(listing, "t-1", "t-2")),
        "rollback_listing": ("POST", f"/shops/{shop}/listings/{listing}/rollback", {"to_version": 1}),
        "bulk_rollback": ("POST", f"/shops/{shop}/rollbacks", {"source": "manual"}),
    }


COMMANDS = list(commands("s", "l"))


def another(name: str, body: dict) -> dict:
    """The same command with one detail changed."""
    if name == "open_shop":
        return {**body, "name": "A different name"}
    if name == "register_listings":
        return {"listings": [{**body["listings"][0], "title": "A different title"}]}
    if name == "record_observations":
        return {"observations": [{**o, "competitor": "someone-else"} for o in body["observations"]]}
    if name == "record_sales":
        return {"sales": [{**line, "order_id": "another-order"} for line in body["sales"]]}
    return {**body, "reason": "a different request"}


def prepare(api, shop, listing, name):
    """Rollbacks need something to roll back."""
    if name in ("rollback_listing", "bulk_rollback"):
        response = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "26.00", "currency": "GBP"})
        assert response.status_code == 200


@pytest.mark.parametrize("name", COMMANDS)
def test_a_retry_with_the_same_key_and_body_replays_the_answer_and_writes_nothing(api, shop, listing, name,
                                                                                  count_events):
    prepare(api, shop, listing, name)
    method, path, body = commands(shop, listing)[name]
    headers = key()
    first = api.request(method, path, json=body, headers=headers)
    assert first.status_code in (200, 201), first.text
    assert "Idempotent-Replayed" not in first.headers
    written = count_events()

    retry = api.request(method, path, json=body, headers=headers)
    assert (retry.status_code, retry.json()) == (first.status_code, first.json())
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert count_events() == written


@pytest.mark.parametrize("name", COMMANDS)
def test_the_same_key_with_another_body_is_refused_naming_the_key(api, shop, listing, name, count_events):
    prepare(api, shop, listing, name)
    method, path, body = commands(shop, listing)[name]
    headers = key()
    assert api.request(method, path, json=body, headers=headers).status_code in (200, 201)
    written = count_events()

    other = another(name, body)
    response = api.request(method, path, json=other, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "Idempotency-Key"
    assert count_events() == written


def test_the_same_key_on_another_endpoint_is_refused(api, shop, listing):
    headers = key()
    assert api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "23.00", "currency": "GBP"},
                   headers=headers).status_code == 200
    response = api.post(f"/shops/{shop}/price-changes", headers=headers,
                        json={"changes": [{"listing_id": listing, "price": "23.00"}], "currency": "GBP"})
    assert (response.status_code, response.json()["field"]) == (422, "Idempotency-Key")


def test_keys_belong_to_their_caller(api, base_url, accounts):
    """Another caller's identical key is a different key: it never replays someone else's answer."""
    headers = key()
    mine = api.post("/shops", json={"name": "Mine", "currency": "GBP"}, headers=headers)
    stranger = {**accounts.new("seller"), **headers}
    theirs = httpx.post(f"{base_url}/shops", json={"name": "Mine", "currency": "GBP"}, headers=stranger)
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["shop_id"] != mine.json()["shop_id"]


def test_a_retry_after_the_state_moved_on_still_replays_the_original_answer(api, shop, listing):
    """The replay is the recorded answer, not a fresh decision: the client learns what its command did."""
    headers = key()
    first = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "23.00", "currency": "GBP"},
                    headers=headers)
    api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "24.00", "currency": "GBP"})
    retry = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "23.00", "currency": "GBP"},
                    headers=headers)
    assert retry.json() == first.json() == {**first.json(), "version": 2, "price": "23.00"}
    assert api.get(f"/shops/{shop}/listings/{listing}").json()["price"] == "24.00"


def test_a_refused_command_does_not_use_up_its_key(api, shop, listing):
    """Nothing was written, so the client may correct the body and send it under the same key."""
    headers = key()
    refused = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "99.00", "currency": "GBP"},
                      headers=headers)
    assert refused.status_code == 422
    accepted = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "29.00", "currency": "GBP"},
                       headers=headers)
    assert accepted.status_code == 200 and accepted.json()["price"] == "29.00"


@pytest.mark.slow
def test_a_batch_of_ten_thousand_observations_is_replayed_without_being_stored_twice(api, shop, listing,
                                                                                     count_events):
    body, headers = observations(listing, 10_000), key()
    before = count_events()
    first = api.post(f"/shops/{shop}/observations", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["recorded"] == 10_000
    assert count_events() == before + 10_001  # the batch's Received event and one per observation

    retry = api.post(f"/shops/{shop}/observations", json=body, headers=headers)
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert count_events() == before + 10_001


@pytest.mark.parametrize("name", ["register_listings", "set_price", "record_sales", "open_shop"])
def test_racing_duplicates_with_one_key_write_once_and_all_get_the_same_answer(base_url, tenant, shop, listing,
                                                                               name, count_events):
    method, path, body = commands(shop, listing)[name]
    headers = {**tenant, **key()}
    before = count_events()

    def send(_):
        return httpx.request(method, f"{base_url}{path}", json=body, headers=headers, timeout=60)

    answers = send_together(8, send)
    assert {a.status_code for a in answers} == {answers[0].status_code} and answers[0].status_code < 300, \
        [a.text for a in answers]
    assert all(a.json() == answers[0].json() for a in answers)
    assert Counter(a.headers.get("Idempotent-Replayed") for a in answers) == {"true": 7, None: 1}
    # open_shop: the Shop's event and the opener's grant of it; record_sales: the batch and one per line.
    one_write = {"register_listings": 1, "set_price": 1, "record_sales": 3, "open_shop": 2}[name]
    assert count_events() == before + one_write
