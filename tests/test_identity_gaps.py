"""Identity gaps (issue 16 item 8), over real HTTP: disabling an account stops its logins, sessions
and keys at once; an admin-issued one-time password reset; failed logins naming no account
recorded on the tenant's security stream within a per-minute budget."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from domain.meta import EventMeta
from domain.security import UNKNOWN_LOGINS_PER_MINUTE, TenantSecurity, shown_username, tenant_security_id
from tests import test_auth
from tests.test_auth import assert_refused, bearer, client_ip, events_of, from_client, login, make_person, tokens

# test_auth's fixtures: a server trusting a local proxy, each request from an address of its own, an admin.
base_url, http, admin = test_auth.base_url, test_auth.http, test_auth.admin


def disable(http, admin, account_id: str, reason: str = "left the company"):
    return http.post(f"/accounts/{account_id}/disable", headers=admin, json={"reason": reason})


def history(http, admin, account_id: str) -> list[dict]:
    answer = http.get(f"/security/accounts/{account_id}/events", headers=admin, params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def service_key(http, admin) -> tuple[str, dict]:
    made = http.post("/accounts", headers=admin, json={"username": f"svc-{uuid.uuid4().hex[:8]}", "kind": "service",
                                                       "roles": [{"role": "service", "shops": None}]})
    assert made.status_code == 201, made.text
    account_id = made.json()["account_id"]
    key = http.post(f"/accounts/{account_id}/api-keys", headers=admin, json={"scopes": ["shops:read"]})
    assert key.status_code == 201, key.text
    return account_id, bearer(key.json()["api_key"])


# -- disabling -------------------------------------------------------------------------------
def test_disabling_a_person_stops_its_session_refresh_and_logins_at_once(http, admin):
    person = make_person(http, admin)
    session = tokens(http, person)
    shop = http.post("/shops", headers=bearer(session["access_token"]), json={"name": "Soon Gone", "currency": "GBP"})
    assert http.get(f"/shops/{shop.json()['shop_id']}", headers=bearer(session["access_token"])).status_code == 200
    answer = disable(http, admin, person["account_id"])
    assert answer.status_code == 200 and answer.json()["disabled"] is True
    assert http.get(f"/shops/{shop.json()['shop_id']}", headers=bearer(session["access_token"])).status_code == 401
    assert http.get("/auth/me", headers=bearer(session["access_token"])).status_code == 401
    assert http.post("/auth/token", json={"refresh_token": session["refresh_token"]}).status_code == 401
    assert_refused(login(http, person))  # the same answer as any refused login: nothing told
    recorded = history(http, admin, person["account_id"])
    assert [e["meta"]["reason"] for e in recorded if e["type"] == "Account.Disabled"] == ["left the company"]
    assert [e["data"]["reason"] for e in recorded if e["type"] == "Account.LoginFailed"] == ["disabled"]


def test_disabling_a_service_account_stops_its_keys_and_enabling_brings_them_back(http, admin):
    account_id, key = service_key(http, admin)
    assert http.get("/auth/me", headers=key).status_code == 200
    assert disable(http, admin, account_id).status_code == 200
    assert http.get("/auth/me", headers=key).status_code == 401
    enabled = http.post(f"/accounts/{account_id}/enable", headers=admin)
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert http.get("/auth/me", headers=key).status_code == 200


def test_an_enabled_person_logs_in_again_but_old_sessions_stay_ended(http, admin):
    person = make_person(http, admin)
    session = tokens(http, person)
    assert disable(http, admin, person["account_id"]).status_code == 200
    again = disable(http, admin, person["account_id"])
    assert again.status_code == 200 and again.json()["disabled"] is True  # idempotent: no new event
    assert http.post(f"/accounts/{person['account_id']}/enable", headers=admin).status_code == 200
    assert login(http, person).status_code == 200
    assert http.get("/auth/me", headers=bearer(session["access_token"])).status_code == 401


def test_disabling_refuses_oneself_others_tenants_and_non_admins(http, admin, accounts):
    own = disable(http, admin, admin.account_id)
    assert own.status_code == 422 and own.json()["field"] == "account_id"
    stranger = accounts.new("admin")
    person = make_person(http, admin)
    assert disable(http, stranger, person["account_id"]).status_code == 404
    assert disable(http, accounts.new("seller", admin.tenant_id), person["account_id"]).status_code == 403
    blank = http.post(f"/accounts/{person['account_id']}/disable", headers=admin, json={})
    assert blank.status_code == 422 and blank.json()["field"] == "reason"
    assert login(http, person).status_code == 200


# -- an admin-issued password reset -----------------------------------------------------------
def issue_reset(http, admin, account_id: str):
    return http.post(f"/accounts/{account_id}/password-reset", headers=admin)


def test_a_reset_token_sets_one_password_once_and_ends_every_session(http, admin, database_url):
    person = make_person(http, admin)
    session = tokens(http, person)
    issued = issue_reset(http, admin, person["account_id"])
    assert issued.status_code == 201, issued.text
    token = issued.json()["reset_token"]
    weak = http.post("/auth/password/reset", json={"token": token, "new_password": "password123"})
    assert weak.status_code == 422 and weak.json()["field"] == "new_password"  # the token is not spent by that
    new = f"a fresh passphrase {uuid.uuid4().hex[:6]}"
    done = http.post("/auth/password/reset", json={"token": token, "new_password": new})
    assert done.status_code == 200 and done.json() == {"changed": True}
    assert http.get("/auth/me", headers=bearer(session["access_token"])).status_code == 401
    assert_refused(login(http, person))
    assert login(http, person, password=new).status_code == 200
    reused = http.post("/auth/password/reset", json={"token": token, "new_password": f"yet another {uuid.uuid4().hex}"})
    assert reused.status_code == 401
    kinds = [t for t, _ in events_of(database_url, person["account_id"])]
    assert kinds.count("PasswordResetIssued") == 1 and kinds.count("PasswordReset") == 1
    with psycopg.connect(database_url) as conn:  # the token is kept only as a digest
        stored = conn.execute("SELECT count(*) FROM pricing_events WHERE position(%s in convert_from(state, 'UTF8')) > 0",
                              [token]).fetchone()[0]
    assert stored == 0


def test_a_newer_reset_token_replaces_the_older_and_disabling_spends_it(http, admin):
    person = make_person(http, admin)
    first = issue_reset(http, admin, person["account_id"]).json()["reset_token"]
    second = issue_reset(http, admin, person["account_id"]).json()["reset_token"]
    body = {"new_password": f"a fresh passphrase {uuid.uuid4().hex[:6]}"}
    assert http.post("/auth/password/reset", json={"token": first, **body}).status_code == 401
    assert disable(http, admin, person["account_id"]).status_code == 200
    assert http.post("/auth/password/reset", json={"token": second, **body}).status_code == 401
    assert http.post("/auth/password/reset", json={"token": "pr_forged", **body}).status_code == 401


def test_reset_tokens_are_for_people_of_the_admins_tenant(http, admin, accounts):
    account_id, _ = service_key(http, admin)
    service = issue_reset(http, admin, account_id)
    assert service.status_code == 422 and service.json()["field"] == "password"
    assert issue_reset(http, accounts.new("admin"), make_person(http, admin)["account_id"]).status_code == 404


# -- failed logins naming no account -----------------------------------------------------------
def unknown_logins(http, admin) -> dict:
    answer = http.get("/security/unknown-logins", headers=admin, params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_unknown_username_is_recorded_on_the_tenants_stream(http, admin, accounts):
    client = client_ip()
    for username in ("no-such-person", "Correct Horse Battery!"):
        assert_refused(http.post("/auth/login", headers=from_client(client),
                                 json={"tenant": admin.tenant_id, "username": username, "password": "whatever it is"}))
    events = unknown_logins(http, admin)["events"]
    assert [e["type"] for e in events] == ["TenantSecurity.Opened"] + ["TenantSecurity.UnknownUsernameLogin"] * 2
    assert [(e["data"]["username"], e["data"]["client"], e["meta"]["actor_id"]) for e in events[1:]] == [
        ("no-such-person", client, "anonymous"),
        (None, client, "anonymous")]  # not a possible username: perhaps a password typed in the wrong field
    assert http.get("/security/unknown-logins", headers=accounts.new("seller", admin.tenant_id)).status_code == 403
    assert unknown_logins(http, accounts.new("auditor", admin.tenant_id))["events"] == events
    assert unknown_logins(http, accounts.new("admin"))["events"] == []  # another tenant's stream


def test_a_tenant_that_does_not_exist_gets_no_stream(http, database_url):
    tenant = f"nobody-{uuid.uuid4().hex[:8]}"
    assert_refused(http.post("/auth/login", json={"tenant": tenant, "username": "someone", "password": "whatever it is"}))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pricing_events WHERE originator_id = %s",
                            [tenant_security_id(tenant)]).fetchone()[0] == 0


def test_a_flood_of_unknown_usernames_is_recorded_up_to_the_budget_and_counted_past_it(http, admin):
    over = 4
    for i in range(UNKNOWN_LOGINS_PER_MINUTE + over):
        assert_refused(http.post("/auth/login", json={"tenant": admin.tenant_id, "username": f"guess-{i}",
                                                      "password": "whatever it is"}))
    answer = unknown_logins(http, admin)
    failures = [e for e in answer["events"] if e["type"] == "TenantSecurity.UnknownUsernameLogin"]
    assert len(failures) == UNKNOWN_LOGINS_PER_MINUTE and answer["not_yet_recorded"] == over


T0 = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def meta_at(moment: datetime) -> EventMeta:
    return EventMeta(shop_id=None, actor_id="anonymous", actor_kind="user", source="manual", reason="",
                     command_id="c", correlation_id="c", causation_id="c", occurred_at=moment)


@pytest.mark.parametrize("offsets, recorded", [
    ([0] * 25, 20),                              # one minute: the budget
    ([0] * 20 + [61] * 5, 25),                   # a new minute, a new budget
    ([i * 2 for i in range(25)], 20),            # 25 in 48 s: the budget
    ([i * 3 for i in range(25)], 25),            # 20 in the first minute, 5 in the next
    ([0, 59.9, 60, 119.9, 120], 5),
])
def test_the_streams_budget_is_per_minute(offsets, recorded):
    stream = TenantSecurity(tenant_id="t", meta=meta_at(T0))
    done = sum(stream.unknown_username("x", "198.18.0.1", 0, meta_at(T0 + timedelta(seconds=s))) for s in offsets)
    assert done == recorded


@pytest.mark.parametrize("attempted, shown", [("Bob", "bob"), ("  alice@example.com ", "alice@example.com"),
                                              ("hunter2 password", None), ("ab", None), ("x" * 65, None)])
def test_only_what_could_be_a_username_is_shown(attempted, shown):
    assert shown_username(attempted) == shown
