"""`etsypro admin create`: the first admin of a tenant, from the server's shell; then everything
else through the API with that admin's login."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import psycopg
import pytest

from api.app import create_app
from api.server import running
from commands.engine import PricingEngine
from conftest import ROOT, SUITE_SECRET_KEY


def etsypro(url: str, *args: str, stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_SECRET_KEY": SUITE_SECRET_KEY}  # the server's key
    return subprocess.run([sys.executable, "-m", "api.cli", *args], input=stdin, env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_first_admin_comes_from_the_cli_and_creates_a_seller(new_database):
    url = new_database()
    passphrase = "the first admin's passphrase"
    done = etsypro(url, "admin", "create", "--tenant", "acme", "--username", "Root", "--password-stdin",
                   stdin=passphrase + "\n")
    assert done.returncode == 0, done.stderr
    assert "admin root created in tenant acme" in done.stdout
    assert passphrase not in done.stdout + done.stderr

    again = etsypro(url, "admin", "create", "--tenant", "acme", "--username", "root", "--password-stdin",
                    stdin="another long passphrase\n")
    assert again.returncode == 1 and "username" in again.stderr
    weak = etsypro(url, "admin", "create", "--tenant", "acme", "--username", "root2", "--password-stdin",
                   stdin="password123\n")
    assert weak.returncode == 1 and "too common" in weak.stderr

    engine = PricingEngine(url, pool_size=2)
    engine.identity.use_secret_key(SUITE_SECRET_KEY)  # the key the CLI sealed the username under
    try:
        with running(create_app(engine)) as base_url, httpx.Client(base_url=base_url) as http:
            answer = http.post("/auth/login", json={"tenant": "acme", "username": "root", "password": passphrase})
            assert answer.status_code == 200, answer.text
            admin = {"Authorization": f"Bearer {answer.json()['access_token']}"}
            seller = http.post("/accounts", headers=admin, json={
                "username": "bea", "password": "her own long passphrase", "roles": [{"role": "seller", "shops": []}]})
            assert seller.status_code == 201, seller.text
            assert seller.json()["tenant_id"] == "acme"
            listed = http.get("/accounts", headers=admin).json()["accounts"]
            assert sorted(a["username"] for a in listed) == ["bea", "root"]
    finally:
        engine.close()


# (NUL cannot reach a command line: the operating system ends arguments there)
@pytest.mark.parametrize("username", ["ro\x1b[31mot", "ro\x7fot", "ro\x85ot", "ro\u202eot", "two\nlines", "ab", "x" * 65],
                         ids=["ESC", "DEL", "C1", "bidi override", "line break", "too short", "too long"])
def test_the_cli_refuses_a_username_the_api_would_refuse(new_database, username):
    url = new_database()
    refused = etsypro(url, "admin", "create", "--tenant", "acme", "--username", username, "--password-stdin",
                      stdin="a long enough passphrase\n")
    assert refused.returncode == 2 and "--username" in refused.stderr, refused.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pricing_events").fetchone()[0] == 0
