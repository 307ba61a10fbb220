"""Logins and other account events are part of the tenant's audit log, for tenant-wide readers."""

import httpx


def test_an_auditor_of_the_tenant_sees_its_logins_in_the_audit_log(base_url, accounts):
    seller = accounts.new("seller")
    auditor = accounts.new("auditor", seller.tenant_id)
    stranger = accounts.new("auditor")  # another tenant
    with httpx.Client(base_url=base_url, headers=auditor, timeout=30) as http:
        page = http.get("/audit/events", params={"type": "Account.LoginSucceeded", "limit": 100}).json()
        history = http.get(f"/aggregates/{seller.account_id}/history")
    logins = {e["aggregate_id"] for e in page["events"]}
    assert {seller.account_id, auditor.account_id} <= logins
    assert stranger.account_id not in logins
    assert history.status_code == 200 and history.json()["events"][0]["type"] == "Account.Registered"

    with httpx.Client(base_url=base_url, headers=stranger, timeout=30) as http:
        assert http.get(f"/aggregates/{seller.account_id}/history").status_code == 404
        theirs = http.get("/audit/events", params={"limit": 100}).json()["events"]
    assert all(e["aggregate_id"] != seller.account_id for e in theirs)


def test_a_seller_scoped_to_shops_sees_no_account_events(base_url, accounts, tenant, api, shop):
    colleague = accounts.new("seller", tenant.tenant_id)
    response = api.get(f"/aggregates/{colleague.account_id}/history")
    assert response.status_code == 404
