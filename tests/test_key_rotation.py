"""Rotating ETSYPRO_SECRET_KEY without downtime (docs/operations.md, "Rotating the server key"):
servers run with the new key and the previous one, `etsypro rotate-secret` re-seals TOTP secrets
and Etsy tokens, then the previous key is dropped. Real PostgreSQL (a database per scenario, since a
rotation walks whole tables) and real HTTP servers."""

from __future__ import annotations

import argparse
import time
import uuid
from contextlib import contextmanager

import httpx
import psycopg
import pyotp
import pytest

from api.app import create_app
from api.auth import AuthSettings
from api.rotation_cli import REFUSED, add_parsers, rotate_secret
from api.server import running
from commands.context import CommandContext
from commands.credentials import Secrets
from commands.engine import PricingEngine
from commands.rotation import SEALED, RotationRefused, rotate
from conftest import Accounts
from domain.meta import Actor
from etsy_world import connect, open_shop
from streams.etsy_client import EtsyApp

pytest_plugins = ["etsy_world"]  # fake, fake_url

OLD, NEW, NEWER, WRONG = ("old-server-key-" + "o" * 32, "new-server-key-" + "n" * 32,
                          "newer-server-key-" + "w" * 32, "some-other-key-" + "x" * 32)
UNTHROTTLED = AuthSettings(login_per_minute=10**6, token_per_minute=10**6)


@contextmanager
def engine_with(url: str, current: str, previous: str | None = None):
    engine = PricingEngine(url, pool_size=2)
    engine.identity.use_secret_key(current, previous)
    try:
        yield engine
    finally:
        engine.close()


@contextmanager
def served(engine: PricingEngine, fake, fake_url: str):
    """The engine's API over HTTP, with the fake as its Etsy."""
    app = create_app(engine, auth_settings=UNTHROTTLED)
    with running(app) as url:
        app.state.etsy = EtsyApp(fake.config.keystring, fake.config.shared_secret, fake_url,
                                 f"{fake_url}/oauth/connect", f"{url}/marketplace/etsy/callback")
        with httpx.Client(base_url=url, timeout=60) as http:
            yield http


def run_cli(monkeypatch, url: str, env: dict[str, str | None], *args: str) -> int:
    """`etsypro rotate-secret ARGS` in this process, with ETSYPRO_* set as `env` says (None: unset)."""
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", url)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    return rotate_secret(parser.parse_args(["rotate-secret", *args]))


def keys(current: str | None, previous: str | None) -> dict[str, str | None]:
    return {"ETSYPRO_SECRET_KEY": current, "ETSYPRO_SECRET_KEY_PREVIOUS": previous}


class Person:
    """A seller with a password, TOTP and recovery codes, logging in over HTTP."""

    def __init__(self, credentials, secret: str, recovery: list[str]):
        self.credentials, self.secret, self.recovery = credentials, secret, recovery
        self.last_step = 0

    def next_code(self) -> str:
        """A code the server has not seen yet (codes within one 30 s step of now are accepted)."""
        while (step := max(self.last_step + 1, int(time.time() // 30) - 1)) > int(time.time() // 30) + 1:
            time.sleep(1)
        self.last_step = step
        return pyotp.TOTP(self.secret).generate_otp(step)

    def login(self, http: httpx.Client, **second_factor) -> httpx.Response:
        c = self.credentials
        started = http.post("/auth/login", json={"username": c.username, "password": c.password, "tenant": c.tenant_id})
        assert started.status_code == 200 and started.json()["mfa_required"], started.text
        return http.post("/auth/login/mfa", json={"challenge": started.json()["challenge"],
                                                   **(second_factor or {"code": self.next_code()})})


def enrolled(http: httpx.Client, credentials) -> Person:
    enrollment = http.post("/auth/mfa/enroll", headers=credentials)
    assert enrollment.status_code == 200, enrollment.text
    person = Person(credentials, enrollment.json()["secret"], [])
    confirmed = http.post("/auth/mfa/confirm", headers=credentials, json={"code": person.next_code()})
    assert confirmed.status_code == 200, confirmed.text
    person.recovery = confirmed.json()["recovery_codes"]
    return person


def bearer(tokens: dict) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def sealed_values(url: str) -> dict[str, list[bytes]]:
    with psycopg.connect(url) as conn:
        return {c.name: [bytes(r[0]) for r in conn.execute(f"SELECT {c.column} FROM {c.table} WHERE {c.column}"
                                                           f" IS NOT NULL ORDER BY {c.key}")] for c in SEALED}


def test_an_account_with_totp_and_an_etsy_grant_keeps_working_across_a_rotation(new_database, fake, fake_url,
                                                                                 monkeypatch, capsys):
    url = new_database()
    with engine_with(url, OLD) as old, served(old, fake, fake_url) as http:
        accounts = Accounts(old)
        person, service = enrolled(http, accounts.new("seller")), accounts.new("service")
        with httpx.Client(base_url=http.base_url, headers=person.credentials, timeout=60) as seller:
            shop = open_shop(seller)
            connect(seller, fake, shop)
        grant_before = old.marketplace.grant(uuid.UUID(shop))
        session, unused_session = person.login(http).json(), person.login(http).json()
        assert http.get("/auth/me", headers=bearer(session)).status_code == 200

    # Every server rolled to the new key, the old one kept as previous: nobody notices, except
    # that access tokens signed with the old key are refused and clients refresh.
    with engine_with(url, NEW, OLD) as both, served(both, fake, fake_url) as http:
        assert http.get("/auth/me", headers=bearer(session)).status_code == 401
        refreshed = http.post("/auth/token", json={"refresh_token": session["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        assert http.get("/auth/me", headers=bearer(refreshed.json())).status_code == 200
        assert http.get(f"/shops/{shop}/marketplace/etsy", headers=bearer(refreshed.json())).status_code == 200
        assert http.post("/auth/token", json={"refresh_token": session["refresh_token"]}).status_code == 401  # spent
        assert http.get("/auth/me", headers=service).status_code == 200  # and its digest is re-keyed
        live = person.login(http)  # TOTP secret sealed under the old key
        assert live.status_code == 200, live.text
        assert person.login(http, recovery_code=person.recovery[0]).status_code == 200  # digested under the old key
        assert both.marketplace.grant(uuid.UUID(shop)) == grant_before
        before_rotation = sealed_values(url)
        assert run_cli(monkeypatch, url, keys(NEW, OLD), "--batch", "1") == 0
        assert "public.totp_credentials.secret_encrypted: 1 re-sealed" in capsys.readouterr().out
        assert person.login(http).status_code == 200 and both.marketplace.grant(uuid.UUID(shop)) == grant_before

    # The previous key dropped: everything sealed opens under the new key alone.
    assert run_cli(monkeypatch, url, keys(NEW, OLD), "--check") == 0
    after_rotation, only_old = sealed_values(url), Secrets(OLD)
    assert all(after_rotation[name] != before_rotation[name] for name in after_rotation if before_rotation[name])
    with engine_with(url, NEW) as new, served(new, fake, fake_url) as http:
        assert new.marketplace.grant(uuid.UUID(shop)) == grant_before
        assert person.login(http).status_code == 200
        again = http.post("/auth/token", json={"refresh_token": live.json()["refresh_token"]})
        assert again.status_code == 200 and http.get("/auth/me", headers=bearer(again.json())).status_code == 200
        assert http.get("/auth/me", headers=service).status_code == 200
        # What only the old key digested, and was not used while it was previous, is refused (documented).
        assert http.post("/auth/token", json={"refresh_token": unused_session["refresh_token"]}).status_code == 401
        assert person.login(http, recovery_code=person.recovery[1]).status_code == 401
    totp = next(c for c in SEALED if c.table == "public.totp_credentials")
    with pytest.raises(Exception):
        only_old.decrypt(after_rotation[totp.name][0], uuid.UUID(person.credentials.account_id).bytes)


def with_totp(url: str, key: str, count: int) -> dict[uuid.UUID, str]:
    """`count` accounts with a TOTP secret sealed under `key`: {account id: secret}."""
    with engine_with(url, key) as engine:
        accounts, secrets = Accounts(engine), {}
        for _ in range(count):
            account = accounts.new("seller")
            ctx = CommandContext(actor=Actor(account.account_id), tenant_id=account.tenant_id)
            secrets[uuid.UUID(account.account_id)] = engine.identity.enroll_mfa(ctx)[0]
        return secrets


def opened_by(url: str, secrets: Secrets) -> dict[uuid.UUID, str]:
    """The TOTP secrets `secrets` (its current key alone) opens."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT account_id, secret_encrypted FROM totp_credentials").fetchall()
    opened = {}
    for account_id, sealed in rows:
        try:
            opened[account_id] = secrets.decrypt(bytes(sealed), account_id.bytes).decode()
        except Exception:
            pass
    return opened


class Interrupted(Exception):
    pass


def test_a_rotation_interrupted_half_way_resumes_where_it_stopped(new_database):
    url = new_database()
    secrets = with_totp(url, OLD, 7)
    totp = [c for c in SEALED if c.table == "public.totp_credentials"]

    def stop_after_two_batches(column: str, done: int, total: int) -> None:
        if done >= 4:
            raise Interrupted

    with psycopg.connect(url) as conn, pytest.raises(Interrupted):
        rotate(conn, Secrets(NEW, OLD), batch_size=2, progress=stop_after_two_batches, columns=totp)
    assert len(opened_by(url, Secrets(NEW))) == 4 and len(opened_by(url, Secrets(OLD))) == 3
    with psycopg.connect(url) as conn:
        resumed = rotate(conn, Secrets(NEW, OLD), batch_size=2, columns=totp)
    tally = resumed.columns[totp[0].name]
    assert (tally.resealed, tally.current) == (3, 4)
    assert opened_by(url, Secrets(NEW)) == secrets and opened_by(url, Secrets(OLD)) == {}


@pytest.fixture(scope="module")
def under_old(new_database) -> str:
    """A database whose TOTP secrets are sealed under OLD (the refusals below change nothing)."""
    url = new_database()
    with_totp(url, OLD, 3)
    return url


@pytest.mark.parametrize("current, previous, says", [
    (NEW, None, "ETSYPRO_SECRET_KEY_PREVIOUS is not set"),
    (None, OLD, "ETSYPRO_SECRET_KEY is not set"),
    (OLD, OLD, "is the same as ETSYPRO_SECRET_KEY"),
    (NEW, "too-short", "ETSYPRO_SECRET_KEY_PREVIOUS must be at least 32 characters"),
    ("too-short", OLD, "ETSYPRO_SECRET_KEY must be at least 32 characters"),
    (NEW, WRONG, "neither ETSYPRO_SECRET_KEY nor ETSYPRO_SECRET_KEY_PREVIOUS opens public.totp_credentials"),
])
def test_a_wrong_or_short_key_is_refused_and_changes_nothing(under_old, monkeypatch, capsys, current, previous, says):
    before = sealed_values(under_old)
    assert run_cli(monkeypatch, under_old, keys(current, previous)) == REFUSED
    assert says in capsys.readouterr().err
    assert sealed_values(under_old) == before


def test_check_counts_what_is_left_and_changes_nothing(under_old, monkeypatch, capsys):
    before = sealed_values(under_old)
    assert run_cli(monkeypatch, under_old, keys(NEW, OLD), "--check") == 1
    assert "public.totp_credentials.secret_encrypted: 3 to re-seal" in capsys.readouterr().out
    assert sealed_values(under_old) == before


@pytest.mark.parametrize("current, previous", [(NEW, None), (NEW, NEW)])
def test_rotate_itself_refuses_without_a_distinct_previous_key(under_old, current, previous):
    with psycopg.connect(under_old) as conn, pytest.raises(RotationRefused):
        rotate(conn, Secrets(current, previous))


def test_new_secrets_use_the_current_key_and_old_ones_still_open():
    """Table of what a rotating Secrets does with each kind of secret."""
    old, both, new = Secrets(OLD), Secrets(NEW, OLD), Secrets(NEW)
    sealed_old = old.encrypt(b"totp", b"bound")
    assert both.decrypt(sealed_old, b"bound") == b"totp"
    resealed = both.reencrypt(sealed_old, b"bound")
    assert new.decrypt(resealed, b"bound") == b"totp" and both.reencrypt(resealed, b"bound") is None
    assert new.decrypt(both.encrypt(b"x", b"bound"), b"bound") == b"x"  # new ciphertexts: current key only
    assert both.digests("rt_1") == [new.digest("rt_1"), old.digest("rt_1")] and both.digest("rt_1") == new.digest("rt_1")
    assert both.jwt_key == new.jwt_key and both.cursor_key == new.cursor_key
    assert new.digests("rt_1") == [new.digest("rt_1")]
