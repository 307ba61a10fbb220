from conftest import listing_spec


def test_a_listing_gets_a_new_price_over_http(api, shop, listing):
    response = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "22.50", "currency": "GBP"})
    assert response.status_code == 200, response.text
    assert response.json() == {"listing_id": listing, "version": 2, "changed": True, "price": "22.50", "currency": "GBP"}
    assert api.get(f"/shops/{shop}/listings/{listing}").json()["price"] == "22.50"
    assert api.get(f"/shops/{shop}/listings/{listing}", params={"version": 1}).json()["price"] == "20.00"


def test_registering_many_listings_at_once(api, shop):
    response = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(i) for i in range(3)]})
    assert response.status_code == 201
    assert [x["external_id"] for x in response.json()["listings"]] == ["ext-0", "ext-1", "ext-2"]
