"""Auditor CLI parity (issue 16 item 6): `etsypro audit history|events|export` give the REST routes'
answers; time travel (`?version`, `?at`) for every aggregate kind over REST."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from api.cli import main
from tests.conftest import SUITE_SECRET_KEY, listing_spec
from tests.test_rules_http import assert_problem, define


@pytest.fixture(scope="module")
def world(base_url, accounts):
    """A seller's shop whose listing, rule and account change over time, and the tenant's auditor."""
    seller = accounts.new("seller")
    auditor = accounts.new("auditor", seller.tenant_id)
    with httpx.Client(base_url=base_url, headers=seller, timeout=60) as api:
        shop = api.post("/shops", json={"name": "Audit Kilns", "currency": "GBP"}).json()["shop_id"]
        listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
        rule = define(api, shop)["rule_id"]
        time.sleep(0.05)
        between = datetime.now(timezone.utc)  # after every version 1, before every version 2
        time.sleep(0.05)
        for price in ("21.00", "22.00", "23.00"):
            assert api.put(f"/shops/{shop}/listings/{listing}/price",
                           json={"price": price, "currency": "GBP", "reason": f"to {price}"}).status_code == 200
        assert api.put(f"/shops/{shop}/rules/{rule}", json={"name": "beat-lowest-7pct", "kind": "beat_lowest",
                                                            "percent": "7"}).status_code == 200
    return {"url": base_url, "seller": seller, "auditor": auditor, "shop": shop, "listing": listing, "rule": rule,
            "between": between}


@pytest.fixture
def rest(world):
    with httpx.Client(base_url=world["url"], headers=world["auditor"], timeout=60) as client:
        yield client


@pytest.fixture
def etsypro(database_url, monkeypatch, capsys):
    """etsypro(*args) -> (exit code, stdout, stderr), in this process against the suite's database."""
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", database_url)
    monkeypatch.setenv("ETSYPRO_SECRET_KEY", SUITE_SECRET_KEY)  # personal data opens as the server opens it

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def rest_history(rest, aggregate: str) -> list[dict]:
    events, after = [], 0
    while True:
        page = rest.get(f"/aggregates/{aggregate}/history", params={"after_version": after, "limit": 2}).json()
        events += page["events"]
        if not page["more"]:
            return events
        after = page["next_after_version"]


@pytest.mark.parametrize("kind", ["listing", "rule", "shop"])
def test_cli_history_is_the_rest_history(world, rest, etsypro, kind):
    code, out, err = etsypro("audit", "history", world[kind], "--json")
    assert code == 0, err
    assert json.loads(out) == {"aggregate_id": world[kind], "events": rest_history(rest, world[kind])}


@pytest.mark.parametrize("when", [("--version", "2"), ("--at", "between")])
def test_cli_history_at_a_version_or_moment_is_the_rest_state_and_the_events_up_to_it(world, rest, etsypro, when):
    flag, value = when
    value = world["between"].isoformat() if value == "between" else value
    code, out, err = etsypro("audit", "history", world["listing"], flag, value, "--json")
    assert code == 0, err
    answer = json.loads(out)
    state = rest.get(f"/aggregates/{world['listing']}/state", params={flag.lstrip("-"): value}).json()
    assert answer["state"] == state
    assert answer["events"] == [e for e in rest_history(rest, world["listing"]) if e["version"] <= state["version"]]
    assert state["version"] == (2 if flag == "--version" else 1)


def test_cli_events_page_is_the_rest_page(world, rest, etsypro):
    tenant = world["seller"].tenant_id
    for params, args in [({"limit": 3}, ["--limit", "3"]),
                         ({"after": 0, "type": "Listing.PriceChanged"}, ["--type", "Listing.PriceChanged"]),
                         ({"shop_id": world["shop"], "limit": 2, "after": 2}, ["--shop", world["shop"], "--limit", "2",
                                                                                  "--after", "2"])]:
        code, out, err = etsypro("audit", "events", "--tenant", tenant, *args, "--json")
        assert code == 0, err
        assert json.loads(out) == rest.get("/audit/events", params=params).json(), params


def test_cli_export_is_the_rest_export_byte_for_byte(world, rest, etsypro, tmp_path):
    tenant, file = world["seller"].tenant_id, tmp_path / "log.ndjson"
    answer = rest.get("/audit/export", params={"from": 1})
    to = answer.headers["X-Export-To"]
    code, out, err = etsypro("audit", "export", "--tenant", tenant, "--to", to, str(file))
    assert code == 0, err
    assert file.read_bytes() == answer.content and answer.content.count(b"\n") >= 8
    code, _, err = etsypro("audit", "export", "--tenant", tenant, "--from", "5", "--to", "3", str(tmp_path / "x"))
    assert code == 1 and "to: must not be before from" in err


def test_cli_refuses_unknown_and_foreign_ids_like_the_api(world, etsypro):
    code, _, err = etsypro("audit", "history", str(uuid.uuid4()))
    assert code == 1 and "not found" in err
    code, _, err = etsypro("audit", "history", world["listing"], "--tenant", "someone-else")
    assert code == 1 and "aggregate not found" in err
    code, _, err = etsypro("audit", "events", "--tenant", "someone-else", "--shop", world["shop"])
    assert code == 1 and "shop_id: shop not found" in err


# -- time travel for every kind, over REST -------------------------------------------------------
KINDS = [  # (aggregate, version, type, a state field and its value then)
    ("listing", 1, "Listing", "price", {"amount": "20.00", "currency": "GBP"}),
    ("listing", 3, "Listing", "price", {"amount": "22.00", "currency": "GBP"}),
    ("rule", 1, "PricingRule", "name", "beat-lowest-5pct"),
    ("rule", 2, "PricingRule", "name", "beat-lowest-7pct"),
    ("shop", 1, "Shop", "name", "Audit Kilns"),
]


@pytest.mark.parametrize("kind, version, type_, field, value", KINDS)
def test_any_aggregate_at_a_version(world, rest, kind, version, type_, field, value):
    answer = rest.get(f"/aggregates/{world[kind]}/state", params={"version": version})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["type"], body["version"], body["state"][field]) == (type_, version, value)
    assert body["state"]["version"] == version and body["latest_version"] >= version


@pytest.mark.parametrize("kind", ["listing", "rule", "shop"])
def test_any_aggregate_at_a_moment_and_now(world, rest, kind):
    then = rest.get(f"/aggregates/{world[kind]}/state", params={"at": world["between"].isoformat()}).json()
    now = rest.get(f"/aggregates/{world[kind]}/state").json()
    assert then["version"] == 1 and now["version"] == now["latest_version"] >= 1
    assert then["state"]["id"] == world[kind]


def test_an_account_travels_for_tenant_wide_security_readers(world, rest):
    body = rest.get(f"/aggregates/{world['seller'].account_id}/state", params={"version": 1}).json()
    assert body["type"] == "Account" and body["state"]["id"] == world["seller"].account_id


@pytest.mark.parametrize("params, status, field", [
    ({"version": 99}, 404, "version"),
    ({"at": "2001-01-01T00:00:00+00:00"}, 404, "at"),
    ({"version": 1, "at": "2030-01-01T00:00:00+00:00"}, 422, "at"),
    ({"at": "2030-01-01T00:00:00"}, 422, "at"),
    ({"version": 0}, 422, "version"),
])
def test_time_travel_refusals_name_the_field(world, rest, params, status, field):
    assert_problem(rest.get(f"/aggregates/{world['listing']}/state", params=params), status, field)


def test_time_travel_across_tenants_is_not_found(world, base_url, accounts):
    stranger = accounts.new("auditor")
    with httpx.Client(base_url=base_url, headers=stranger, timeout=60) as other:
        assert_problem(other.get(f"/aggregates/{world['listing']}/state"), 404)
        assert_problem(other.get(f"/aggregates/{world['seller'].account_id}/state"), 404)
    analyst = accounts.new("analyst", world["seller"].tenant_id)
    assert_problem(httpx.get(f"{base_url}/aggregates/{world['listing']}/state", headers=analyst), 403)  # no audit:read


def test_the_state_before_the_moment_is_unchanged_by_later_events(world, rest):
    later = world["between"] + timedelta(hours=1)
    assert rest.get(f"/aggregates/{world['listing']}/state", params={"at": later.isoformat()}).json()["version"] == 4
