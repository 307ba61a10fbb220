"""Structured logs: one JSON line per request (route template, status, duration, tenant,
correlation id, command id) and per notable event; and, after every auth flow (passwords, wrong
passwords, refresh tokens, TOTP enrollment and codes, recovery codes, MFA challenges, password
change, API keys, logout), not one secret anywhere in what was logged."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid

import httpx
import pyotp
import pytest

from api.app import create_app
from api.auth import AuthSettings
from api.logs import MASK, HumanFormatter, JsonFormatter, redact
from api.observability import Observability
from api.server import running


@pytest.fixture
def captured():
    """Everything logged (INFO and up, any logger) while the test runs, as JSON lines."""
    stream, root = io.StringIO(), logging.getLogger()
    handler, level = logging.StreamHandler(stream), root.level
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def logged_url(engine):
    settings = AuthSettings(login_per_minute=10**6, token_per_minute=10**6)
    with running(create_app(engine, auth_settings=settings, observed=Observability(request_log=True))) as url:
        yield url


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def auth_flows(http: httpx.Client, admin) -> list[str]:
    """Every way a secret crosses the API; returns the secrets that crossed."""
    password, new_password = f"first passphrase {uuid.uuid4().hex}", f"second passphrase {uuid.uuid4().hex}"
    username = f"logged-{uuid.uuid4().hex[:10]}"
    person = http.post("/accounts", headers=admin, json={"username": username, "password": password,
                                                         "roles": [{"role": "seller", "shops": None}]})
    assert person.status_code == 201, person.text
    login = {"tenant": admin.tenant_id, "username": username}
    assert http.post("/auth/login", json={**login, "password": password + "x"}).status_code == 401
    first = http.post("/auth/login", json={**login, "password": password}).json()
    second = http.post("/auth/token", json={"refresh_token": first["refresh_token"]}).json()
    enrolled = http.post("/auth/mfa/enroll", headers=bearer(second["access_token"])).json()
    totp = pyotp.TOTP(enrolled["secret"])
    confirm_code = totp.now()
    recovery = http.post("/auth/mfa/confirm", headers=bearer(second["access_token"]),
                         json={"code": confirm_code}).json()["recovery_codes"]
    challenge = http.post("/auth/login", json={**login, "password": password}).json()["challenge"]
    login_code = totp.at(time.time() + 30)  # the current step's code was spent on confirmation
    third = http.post("/auth/login/mfa", json={"challenge": challenge, "code": login_code}).json()
    wrong_code = f"{(int(login_code) + 1) % 1_000_000:06d}"
    refused = http.post("/auth/login/mfa", json={"challenge": http.post("/auth/login", json={**login, "password": password})
                                                 .json()["challenge"], "code": wrong_code})
    assert refused.status_code == 401
    fourth = http.post("/auth/login/mfa", json={"challenge": http.post("/auth/login", json={**login, "password": password})
                                                .json()["challenge"], "recovery_code": recovery[0]}).json()
    changed = http.post("/auth/password", headers=bearer(fourth["access_token"]),
                        json={"current_password": password, "new_password": new_password})
    assert changed.status_code == 200, changed.text
    service = http.post("/accounts", headers=admin, json={"username": f"svc-{uuid.uuid4().hex[:8]}", "kind": "service",
                                                          "roles": [{"role": "service", "shops": None}]})
    assert service.status_code == 201, service.text
    key = http.post(f"/accounts/{service.json()['account_id']}/api-keys", headers={**admin, "Idempotency-Key": "key-1"},
                    json={"scopes": ["shops:read"]}).json()["api_key"]
    assert http.get("/auth/me", headers=bearer(key)).status_code == 200
    assert http.post("/auth/logout", headers=bearer(fourth["access_token"])).status_code == 200  # the session that changed it
    tokens = [t for answer in (first, second, third, fourth) for t in (answer["access_token"], answer["refresh_token"])]
    return [password, new_password, password + "x", enrolled["secret"], enrolled["otpauth_uri"], challenge, key,
            admin["Authorization"].split()[1], *tokens, *recovery, confirm_code, login_code, wrong_code]


def test_no_secret_reaches_the_logs_of_the_auth_flows(logged_url, accounts, captured):
    admin = accounts.new("admin")
    with httpx.Client(base_url=logged_url, timeout=30, headers={"X-Correlation-Id": "corr-logs-1"}) as http:
        secrets = auth_flows(http, admin)
    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) >= 20  # the flows were logged, so the scan below scans something
    for secret in secrets:
        found = re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", text)
        assert found is None, f"a secret ({secret[:3]}…) is in the logs: {text[max(0, found.start() - 200):found.end()]}"


def test_each_request_is_one_json_line_naming_route_status_duration_tenant_and_ids(logged_url, tenant, captured):
    with httpx.Client(base_url=logged_url, headers={**tenant, "X-Correlation-Id": "corr-42"}, timeout=30) as api:
        shop = api.post("/shops", json={"name": "Logged", "currency": "GBP"}, headers={"Idempotency-Key": "open-7"})
        assert shop.status_code == 201
        again = api.post("/shops", json={"name": "Logged", "currency": "GBP"}, headers={"Idempotency-Key": "open-7"})
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert api.get(f"/shops/{shop.json()['shop_id']}").status_code == 200
    requests = [line for line in map(json.loads, captured.getvalue().splitlines()) if line["logger"] == "etsypro.request"]
    assert [(r["method"], r["route"], r["status"]) for r in requests] == [
        ("POST", "/shops", 201), ("POST", "/shops", 201), ("GET", "/shops/{shop_id}", 200)]
    for line in requests:
        assert line["tenant"] == tenant.tenant_id and line["account"] == tenant.account_id
        assert line["correlation_id"] == "corr-42" and line["duration_ms"] > 0 and line["level"] == "INFO"
    assert [r.get("command_id") for r in requests] == ["open-7", "open-7", None]
    assert [r.get("replayed") for r in requests] == [None, True, None]


def test_notable_events_get_a_line_of_their_own(logged_url, accounts, captured):
    admin = accounts.new("admin")
    with httpx.Client(base_url=logged_url, timeout=30) as http:
        username, password = f"n-{uuid.uuid4().hex[:10]}", f"a passphrase {uuid.uuid4().hex}"
        created = http.post("/accounts", headers=admin, json={"username": username, "password": password,
                                                              "roles": [{"role": "seller", "shops": None}]})
        login = {"tenant": admin.tenant_id, "username": username}
        http.post("/auth/login", json={**login, "password": "not it at all"})
    events = [line for line in map(json.loads, captured.getvalue().splitlines()) if line["logger"] == "etsypro.event"]
    failed = [e for e in events if e["event"] == "Account.LoginFailed"]
    assert len(failed) == 1 and failed[0]["aggregate_id"] == created.json()["account_id"]
    assert failed[0]["actor"] and failed[0]["version"] > 1


@pytest.mark.parametrize("text, kept", [
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "Authorization: "),
    ("refresh rt_ddONZc_1WNR71F5VfTScoayFci7_tIdyN_9obfZ_E84 spent", "refresh  spent"),
    ("key ek_AbCdEfGhIjKlMnOpQrStUv used", "key  used"),
    ("challenge mfa_0123456789abcdefghij", "challenge "),
    ("reset pr_Zk3vQ1u9yTt0bW8rM2nH6cXe4sJ7aLdF5gP0iKqR2oU issued", "reset  issued"),
    ("route /shops/{shop_id} 200", "route /shops/{shop_id} 200"),  # nothing secret: unchanged
])
def test_credentials_are_masked_by_shape(text, kept):
    assert redact(text).replace(MASK, "") == kept


@pytest.mark.parametrize("formatter", [JsonFormatter(), HumanFormatter()])
def test_fields_named_like_secrets_are_masked_in_either_format(formatter):
    record = logging.LogRecord("etsypro.test", logging.INFO, __file__, 1, "login %s", ("ok",), None)
    record.password, record.totp_code, record.refresh_token, record.route = "hunter2!", "123456", "abc", "/auth/login"
    line = formatter.format(record)
    assert "hunter2!" not in line and "123456" not in line and "abc" not in line
    assert "/auth/login" in line and "login ok" in line and "\n" not in line
