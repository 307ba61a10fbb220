"""No password, password hash, TOTP secret, recovery code or token appears in any stored event,
snapshot, command-log row, log line or error answer. Every identity flow runs through HTTP on a
server that logs everything (debug level, access log on); then every place is scanned."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import httpx
import psycopg
import pyotp
import pytest
import uvicorn

from api.app import create_app
from api.auth import AuthSettings, trusted_proxies
from api.server import free_port


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logged_server(engine):
    """A server of its own with every log on, and a handler that keeps every line."""
    collect = Collect()
    collect.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    app = create_app(engine, auth_settings=AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1")))  # a local proxy
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="debug", access_log=True,
                            proxy_headers=False)  # as `etsypro serve` runs it
    server = uvicorn.Server(config)  # the Config has configured uvicorn's loggers by now
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(collect)
        lg.setLevel(logging.DEBUG)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", collect
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for lg, level in zip(loggers, levels):
            lg.removeHandler(collect)
            lg.setLevel(level)


def test_no_secret_is_stored_in_events_logs_or_errors(logged_server, accounts, database_url):
    base_url, logs = logged_server
    admin = accounts.new("admin")
    secrets: dict[str, str] = {"admin password": admin.password, "admin token": admin["Authorization"].split()[1]}
    errors: list[str] = []

    def request(method: str, path: str, headers=None, **kwargs) -> httpx.Response:
        # Each request from its own address, so the login rate limit does not cut the flow short.
        headers = {**(headers or {}), "X-Forwarded-For": f"198.19.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"}
        response = httpx.request(method, f"{base_url}{path}", headers=headers, timeout=30, **kwargs)
        if response.status_code >= 400:
            errors.append(response.text + str(dict(response.headers)))
        return response

    username = f"secret-keeper-{uuid.uuid4().hex[:6]}"
    password = f"first secret passphrase {uuid.uuid4().hex[:10]}"
    wrong = f"a mistyped passphrase {uuid.uuid4().hex[:10]}"
    new_password = f"second secret passphrase {uuid.uuid4().hex[:10]}"
    secrets.update({"password": password, "wrong password": wrong, "new password": new_password})

    # Errors that carry a secret in their request: a weak password, an overlong one.
    weak = "dragon2024!!"
    assert request("POST", "/accounts", admin, json={"username": "weak-one", "password": weak, "roles": []}).status_code == 422
    long = "x" * 2000
    assert request("POST", "/accounts", admin, json={"username": "long-one", "password": long, "roles": []}).status_code == 422
    secrets.update({"weak password": weak, "overlong password": long})

    created = request("POST", "/accounts", admin, json={"username": username, "password": password,
                                                        "roles": [{"role": "seller", "shops": []}]})
    assert created.status_code == 201, created.text
    account_id = created.json()["account_id"]
    assert request("POST", "/auth/login", json={"tenant": admin.tenant_id, "username": username, "password": wrong}).status_code == 401
    assert request("POST", "/auth/login", json={"tenant": admin.tenant_id, "username": "no-such-user", "password": wrong}).status_code == 401

    first = request("POST", "/auth/login", json={"tenant": admin.tenant_id, "username": username, "password": password}).json()
    auth = {"Authorization": f"Bearer {first['access_token']}"}
    secrets.update({"access token": first["access_token"], "refresh token": first["refresh_token"]})
    with psycopg.connect(database_url) as conn:
        secrets["password hash"] = conn.execute("SELECT hash FROM password_credentials WHERE account_id = %s",
                                                [account_id]).fetchone()[0]

    enrolled = request("POST", "/auth/mfa/enroll", auth).json()
    secrets["totp secret"] = enrolled["secret"]
    totp = pyotp.TOTP(enrolled["secret"])
    recovery = request("POST", "/auth/mfa/confirm", auth, json={"code": totp.now()}).json()["recovery_codes"]
    secrets.update({f"recovery code {i}": code for i, code in enumerate(recovery)})
    with psycopg.connect(database_url) as conn:
        encrypted = bytes(conn.execute("SELECT secret_encrypted FROM totp_credentials WHERE account_id = %s",
                                       [account_id]).fetchone()[0])

    challenge = request("POST", "/auth/login", json={"tenant": admin.tenant_id, "username": username, "password": password}).json()["challenge"]
    secrets["mfa challenge"] = challenge
    second = request("POST", "/auth/login/mfa", json={"challenge": challenge, "code": totp.at(time.time() + 30)}).json()
    secrets.update({"second access token": second["access_token"], "second refresh token": second["refresh_token"]})
    rotated = request("POST", "/auth/token", json={"refresh_token": second["refresh_token"]}).json()
    secrets.update({"rotated access token": rotated["access_token"], "rotated refresh token": rotated["refresh_token"]})
    assert request("POST", "/auth/token", json={"refresh_token": second["refresh_token"]}).status_code == 401  # reuse
    challenge = request("POST", "/auth/login", json={"tenant": admin.tenant_id, "username": username, "password": password}).json()["challenge"]
    third = request("POST", "/auth/login/mfa", json={"challenge": challenge, "recovery_code": recovery[0]}).json()
    auth = {"Authorization": f"Bearer {third['access_token']}"}
    secrets.update({"third access token": third["access_token"], "third refresh token": third["refresh_token"]})
    assert request("POST", "/auth/password", auth, json={"current_password": wrong, "new_password": new_password}
                   ).status_code == 422
    assert request("POST", "/auth/password", auth, json={"current_password": password, "new_password": new_password}
                   ).status_code == 200
    with psycopg.connect(database_url) as conn:
        secrets["new password hash"] = conn.execute("SELECT hash FROM password_credentials WHERE account_id = %s",
                                                    [account_id]).fetchone()[0]

    service = request("POST", "/accounts", admin, json={"username": f"svc-{uuid.uuid4().hex[:6]}", "kind": "service",
                                                        "roles": [{"role": "service", "shops": None}]}).json()
    # With an Idempotency-Key: the answer (which holds the key) must still not be kept for replays.
    key = request("POST", f"/accounts/{service['account_id']}/api-keys", {**admin, "Idempotency-Key": "key-1"},
                  json={"scopes": ["shops:read"]}).json()
    secrets["api key"] = key["api_key"]
    assert request("GET", "/shops", {"Authorization": f"Bearer {key['api_key']}"}).status_code == 200
    assert request("DELETE", f"/accounts/{service['account_id']}/api-keys/{key['key_id']}", admin).status_code == 200
    assert request("GET", "/shops", {"Authorization": f"Bearer {key['api_key']}"}).status_code == 401

    # -- the scan ----------------------------------------------------------------------------
    with psycopg.connect(database_url) as conn:
        stored = [bytes(row[0]) for row in conn.execute("SELECT state FROM pricing_events")]
        stored += [bytes(row[0]) for row in conn.execute("SELECT state FROM pricing_snapshots")]
        stored += [str(row).encode() for row in conn.execute("SELECT * FROM command_log")]
        stored += [str(row).encode() for row in conn.execute("SELECT * FROM event_index")]
        stored += [str(row).encode() for row in conn.execute("SELECT * FROM reservations")]
    everything = {"stored events, snapshots, command log, index": b"\n".join(stored),
                  "log lines": "\n".join(logs.lines).encode(),
                  "error answers": "\n".join(errors).encode()}
    assert len(logs.lines) > 20 and len(errors) >= 6 and len(stored) > 20  # the scan has material
    assert any("POST /auth/login" in line for line in logs.lines)        # the access log was on
    # The scan finds what is there: the username is stored in events (it is not a secret), and
    # the refusal's words are in the errors. A secret stored the same way would be found alike.
    assert uuid.UUID(account_id).hex.encode() in everything["stored events, snapshots, command log, index"]
    assert username.encode() not in everything["stored events, snapshots, command log, index"]  # sealed (erasure)
    assert b"too common" in everything["error answers"]

    leaks = [(what, where) for what, secret in secrets.items() for where, blob in everything.items()
             if secret.encode() in blob]
    leaks += [("encrypted totp secret", where) for where, blob in everything.items()
              if encrypted in blob or encrypted.hex().encode() in blob]
    assert not leaks, leaks
    # The events say what happened, without the secrets.
    with psycopg.connect(database_url) as conn:
        names = [r[0].split(".")[-1] for r in conn.execute(
            "SELECT topic FROM pricing_events WHERE originator_id = %s ORDER BY originator_version", [account_id])]
    for name in ("Registered", "LoginFailed", "LoginSucceeded", "MfaEnrolled", "MfaConfirmed",
                 "TokenFamilyRevoked", "PasswordChanged"):
        assert name in names
