"""The pure side of the Etsy connection, property-based: money objects read back exactly, and the
GET-to-PUT transform of any inventory sets the price, keeps everything else, and is a body the
fake Etsy (holding Etsy's rules for a PUT) accepts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidValue
from domain.marketplace import etsy_money, inventory_for_put, price_of_inventory
from domain.money import Money
from fake_etsy.app import _inventory_problem, money

amounts = st.decimals(min_value=Decimal("0.20"), max_value=Decimal("50000"), places=2)


@given(amounts)
def test_a_money_object_reads_back_as_the_amount_it_carries(amount):
    assert etsy_money(money(amount, "GBP"), "price") == Money(amount, "GBP")


@pytest.mark.parametrize("value", [None, "12.00", {"amount": "1200", "divisor": 100, "currency_code": "GBP"},
                                   {"amount": 1200, "divisor": 0, "currency_code": "GBP"},
                                   {"amount": 1200, "divisor": 100, "currency_code": "POUND"},
                                   {"amount": True, "divisor": 100, "currency_code": "GBP"}])
def test_what_is_not_a_money_object_is_refused_naming_the_field(value):
    with pytest.raises(InvalidValue) as refused:
        etsy_money(value, "results[3].price")
    assert refused.value.field == "results[3].price"


@st.composite
def inventories(draw):
    """An inventory as Etsy's GET answers it: ids, is_deleted, money objects, maybe variations."""
    sizes = draw(st.integers(min_value=0, max_value=4))
    base = draw(amounts)
    varies = sizes > 1 and draw(st.booleans())
    products = []
    for i in range(max(sizes, 1)):
        price = draw(amounts) if varies and i else base
        products.append({
            "product_id": 1000 + i, "sku": f"SKU-{i}", "is_deleted": False,
            "property_values": [{"property_id": 100, "property_name": "Size", "scale_id": None,
                                 "value_ids": [200 + i], "values": [f"size {i}"]}] if sizes else [],
            "offerings": [{"offering_id": 5000 + i, "quantity": draw(st.integers(0, 999)), "is_enabled": draw(st.booleans()),
                           "is_deleted": False, "price": money(price, "GBP")}]})
    return {"products": products, "price_on_property": [100] if varies else [], "quantity_on_property": [],
            "sku_on_property": [100] if sizes else []}


def keys_everywhere(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | set().union(*(keys_everywhere(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(keys_everywhere(v) for v in node)) if node else set()
    return set()


@settings(max_examples=200)
@given(inventories(), amounts)
def test_the_put_body_sets_the_price_and_keeps_the_rest(inventory, price):
    try:
        body = inventory_for_put(inventory, Money(price, "GBP"))
    except InvalidValue as refused:  # a size's price scaled out of Etsy's range: refused before any PUT
        assert inventory["price_on_property"] and "outside the prices Etsy accepts" in refused.detail
        return
    assert _inventory_problem(body) is None  # what Etsy (the fake) accepts
    assert not {"product_id", "offering_id", "is_deleted"} & keys_everywhere(body)
    assert [p["property_values"] for p in body["products"]] == [p["property_values"] for p in inventory["products"]]
    assert [p["sku"] for p in body["products"]] == [p["sku"] for p in inventory["products"]]
    assert {k: body[k] for k in ("price_on_property", "sku_on_property")} == \
        {k: inventory[k] for k in ("price_on_property", "sku_on_property")}
    offered = [o for p in body["products"] for o in p["offerings"]]
    assert [(o["quantity"], o["is_enabled"]) for o in offered] == \
        [(o["quantity"], o["is_enabled"]) for p in inventory["products"] for o in p["offerings"]]
    assert offered[0]["price"] == float(price)  # the listing's price: the first product's
    if not inventory["price_on_property"]:
        assert {o["price"] for o in offered} == {float(price)}


def test_an_inventory_without_products_is_refused():
    with pytest.raises(InvalidValue):
        inventory_for_put({"products": []}, Money(Decimal("10.00"), "GBP"))
    with pytest.raises(InvalidValue):
        price_of_inventory({"products": [{"offerings": []}]})
