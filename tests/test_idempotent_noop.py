"""An accepted command that changed nothing is still remembered: its retry must not act later."""


def test_a_retried_no_op_does_not_act_on_the_newer_state(api, shop, listing):
    same_price = {"price": "20.00", "currency": "GBP"}
    first = api.put(f"/shops/{shop}/listings/{listing}/price", json=same_price, headers={"Idempotency-Key": "k-noop"})
    assert first.status_code == 200 and first.json()["changed"] is False

    api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "25.00", "currency": "GBP"})
    retry = api.put(f"/shops/{shop}/listings/{listing}/price", json=same_price, headers={"Idempotency-Key": "k-noop"})

    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json() == first.json()
    assert api.get(f"/shops/{shop}/listings/{listing}").json()["price"] == "25.00"
