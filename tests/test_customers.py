"""Repeat customers over real HTTP: the `customers` view counts each order once however often its
file is imported, tells repeat buyers by their pseudonyms, forgets which orders were an erased
buyer's, and answers only the shop's own tenant (analysts included), refusing a bad period by name."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest

from commands.context import CommandContext
from domain.meta import Actor, ActorKind
from test_demand_http import project
from test_commands_http import assert_problem

ORDERS = (Path(__file__).parent / "data" / "EtsySoldOrders2026.csv").read_bytes()  # adal twice, cbabbage once
CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def imported(api, shop, database_url) -> str:
    for status in (201, 200):  # the second import records nothing again
        answer = api.post(f"/shops/{shop}/imports/etsy-orders", content=ORDERS, headers=CSV)
        assert answer.status_code == status, answer.text
    project(database_url)
    return shop


def test_repeat_buyers_their_orders_and_revenue(api, imported):
    found = api.get(f"/shops/{imported}/customers")
    assert found.status_code == 200, found.text
    assert {k: v for k, v in found.json().items() if not k.endswith("_at")} == {
        "orders": 3, "orders_with_buyer": 3, "buyers": 2, "repeat_buyers": 1, "orders_from_repeat_buyers": 2,
        "repeat_order_share": 0.6667, "revenue_with_buyer": "118.45", "revenue_from_repeat_buyers": "92.90",
        "repeat_revenue_share": 0.7843, "currency": "GBP", "buyers_by_orders": {"1": 1, "2": 1, "3": 0, "4+": 0}}
    only_late = api.get(f"/shops/{imported}/customers", params={"since": "2026-11-26T00:00:00Z"}).json()
    assert (only_late["orders"], only_late["repeat_buyers"]) == (2, 0)


def test_an_erased_buyer_no_longer_links_orders(api, imported, engine, tenant, database_url):
    operator = CommandContext(actor=Actor("operator:erase", ActorKind.SERVICE), tenant_id=tenant.tenant_id)
    engine.identity.vault.erase_buyer(operator, UUID(imported), "adal")
    project(database_url)
    found = api.get(f"/shops/{imported}/customers").json()
    assert (found["orders"], found["orders_with_buyer"], found["buyers"], found["repeat_buyers"]) == (3, 1, 1, 0)
    with psycopg.connect(database_url) as conn:
        buyers = [b for (b,) in conn.execute("SELECT buyer FROM analytics.shop_orders WHERE shop_id = %s", [imported])]
    assert buyers.count(None) == 2 and len(buyers) == 3  # adal's two orders; cbabbage's keeps its pseudonym


@pytest.mark.parametrize("params, field", [
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-01T00:00:00Z"}, "until"),
    ({"since": "2026-12-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "until"),
    ({"since": "2026-12-01T00:00:00"}, "since"),  # no offset: which day it is depends on where you stand
])
def test_a_bad_period_is_refused_naming_the_field(api, shop, params, field):
    assert_problem(api.get(f"/shops/{shop}/customers", params=params), 422, field)


def test_another_tenant_is_refused_and_an_analyst_may_read(api, imported, accounts, base_url, tenant):
    with httpx.Client(base_url=base_url, headers=accounts.new("seller"), timeout=30) as stranger:
        assert_problem(stranger.get(f"/shops/{imported}/customers"), 404)
    with httpx.Client(base_url=base_url, headers=accounts.new("analyst", tenant.tenant_id), timeout=30) as analyst:
        assert analyst.get(f"/shops/{imported}/customers").json()["orders"] == 3
