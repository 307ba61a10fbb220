"""The CSV upload routes (api/routers/imports.py) over real HTTP: tenancy and roles, problem+json
naming the line and column, nothing written by a refused file, and a rerun writing nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import listing_spec

DATA = Path(__file__).parent / "data"
CSV = {"Content-Type": "text/csv"}
HEADER = "Sale Date,Item Name,Buyer,Quantity,Price,Currency,Transaction ID,Listing ID,Order ID,SKU\n"


@pytest.fixture
def etsy_shop(api, shop) -> str:
    """The shop with the fixtures' two Etsy listings."""
    specs = [listing_spec(0, external_id="1234567890", sku="MUG-BLUE", price="24.00"),
             listing_spec(1, external_id="1234567891", sku="BOWL-STONE", price="18.50")]
    assert api.post(f"/shops/{shop}/listings", json={"listings": specs}).status_code == 201
    return shop


def upload(client: httpx.Client, shop: str, kind: str, body: bytes, headers=CSV, **params) -> httpx.Response:
    return client.post(f"/shops/{shop}/imports/{kind}", content=body, headers=headers, params=params)


def test_an_upload_records_the_file_once(api, etsy_shop):
    listings = upload(api, etsy_shop, "etsy-listings", (DATA / "EtsyListingsDownload.csv").read_bytes())
    assert listings.status_code == 201 and listings.json()["recorded"] == 2, listings.text
    first = upload(api, etsy_shop, "etsy-order-items", (DATA / "EtsySoldOrderItems2026.csv").read_bytes())
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["lines"], body["recorded"], body["orders_recorded"], body["invalid"]) == (5, 5, 4, 0)
    again = upload(api, etsy_shop, "etsy-order-items", (DATA / "EtsySoldOrderItems2026.csv").read_bytes())
    assert again.status_code == 200 and (again.json()["recorded"], again.json()["already_recorded"]) == (0, 5)
    feed = upload(api, etsy_shop, "competitor-prices", (DATA / "competitor_prices.csv").read_bytes())
    assert feed.status_code == 201 and feed.json()["out_of_order"] == 1, feed.text


def test_an_invalid_line_refuses_the_file_naming_line_and_column(api, etsy_shop, count_events):
    body = (HEADER + "11/28/26,Mug,adal,1,24.00,GBP,t-1,1234567890,o-1,MUG-BLUE\n"
                     "11/28/26,Mug,adal,1,24.0O,GBP,t-2,1234567890,o-1,MUG-BLUE\n"
                     "11/31/26,Mug,adal,1,24.00,GBP,t-3,1234567890,o-1,MUG-BLUE\n").encode()
    before = count_events()
    refused = upload(api, etsy_shop, "etsy-order-items", body)
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["field"] == "line 3, column 'Price'" and problem["invalid"] == 2
    assert [(e["line"], e["column"]) for e in problem["errors"]] == [(3, "Price"), (4, "Sale Date")]
    assert count_events() == before
    partial = upload(api, etsy_shop, "etsy-order-items", body, skip_invalid="true")
    assert partial.status_code == 201 and (partial.json()["recorded"], partial.json()["invalid"]) == (1, 2)


@pytest.mark.parametrize("body, field", [
    (b"Sale Date,Quantity\n11/28/26,1\n", "line 1, column 'Price'"),  # the first required column missing
    (HEADER.encode() + b"11/28/26,Mug \xff,adal,1,24.00,GBP,t,1234567890,o,MUG-BLUE\n", "line 2"),
])
def test_an_unreadable_file_is_a_problem_naming_where(api, etsy_shop, body, field):
    refused = upload(api, etsy_shop, "etsy-order-items", body)
    assert refused.status_code == 422 and refused.json()["field"] == field, refused.text


def test_tenancy_roles_and_media_type(base_url, accounts, tenant, api, etsy_shop):
    body = (DATA / "EtsySoldOrderItems2026.csv").read_bytes()
    stranger = accounts.new("seller")
    analyst = accounts.new("analyst", tenant.tenant_id)
    with httpx.Client(base_url=base_url, timeout=60) as anyone:
        assert upload(anyone, etsy_shop, "etsy-order-items", body).status_code == 401
        other = upload(anyone, etsy_shop, "etsy-order-items", body, headers={**CSV, **stranger})
        assert other.status_code == 404 and other.headers["content-type"] == "application/problem+json"
        assert upload(anyone, etsy_shop, "etsy-listings", body, headers={**CSV, **analyst}).status_code == 403
    wrong = upload(api, etsy_shop, "etsy-order-items", body, headers={"Content-Type": "application/json"})
    assert wrong.status_code == 415 and wrong.json()["field"] == "Content-Type"
