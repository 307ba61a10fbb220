"""Shared fixtures: a real PostgreSQL (the machine's when it has room, else an embedded one), one
fresh database per test run, and the engine served over real HTTP."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

import migrations
from api.app import create_app
from api.auth import AuthSettings, issue_access_token
from api.database import create_database, drop_database, free_connections, start_embedded
from api.server import running
from commands.context import CommandContext
from commands.engine import PricingEngine
from read.side import ReadSide
from domain.listing import Listing
from domain.account import API_KEY_SCOPES
from domain.meta import Actor

ROOT = Path(__file__).resolve().parents[1]
# The most connections the suite holds at once on its server (README, "Tests"), and some spare.
SUITE_CONNECTIONS = 35
# Servers the tests build from settings (and `etsypro` processes they start) open this many
# connections each at start, not production's 10: the suite must run beside other work.
os.environ.setdefault("ETSYPRO_POOL_SIZE", "2")
SHOP_DATA = ROOT.parent / "shared" / "data" / "online_retail.parquet"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> str:
    """A server on which tests may create databases: the machine's when it has room for the suite's
    connections, else an embedded one (a reachable server that is full fails every test)."""
    url = os.environ.get("ETSYPRO_TEST_ADMIN_URL", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    return admin_server(url, lambda: tmp_path_factory.mktemp("embedded-pg"))


def admin_server(url: str, embedded_dir) -> str:
    """url when its server has room for the suite's connections, else an embedded server's."""
    if free_connections(url) >= SUITE_CONNECTIONS:
        return url
    return start_embedded(embedded_dir())


@pytest.fixture(scope="session")
def new_database(pg_admin_url):
    """Factory: a fresh, migrated database; all are dropped at the end of the run."""
    created = []

    def make() -> str:
        name = f"etsypro_test_{uuid.uuid4().hex[:12]}"
        url = create_database(pg_admin_url, name)
        created.append(name)
        migrations.apply(url, log=lambda *_: None)
        return url

    yield make
    for name in created:
        drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def database_url(new_database) -> str:
    return new_database()


@pytest.fixture(scope="session")
def count_events(database_url):
    """count_events() -> rows in pricing_events. Compare before and after to prove nothing was written."""

    def count() -> int:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT count(*) FROM pricing_events").fetchone()[0]

    return count


SUITE_SECRET_KEY = "suite-server-key-" + "s" * 32


@pytest.fixture(scope="session")
def engine(database_url) -> PricingEngine:
    engine = PricingEngine(database_url, pool_size=3)  # and as many again when busy
    engine.identity.use_secret_key(SUITE_SECRET_KEY)  # a command-line run in a test opens what the server sealed
    yield engine
    engine.close()


def verify_chain(engine: PricingEngine, from_position: int | None = None, progress=None):
    """The read side's chain check (read/audit.py) on the engine's database, on a pool of its own."""
    reads = ReadSide(engine.core.conninfo, pool_size=1)
    try:
        return reads.audit.verify_chain(from_position, progress=progress)
    finally:
        reads.close()


@pytest.fixture(scope="session")
def base_url(engine) -> str:
    with running(create_app(engine, max_body_bytes=8 * 1024 * 1024)) as url:
        yield url


@pytest.fixture(scope="module")
def unthrottled_url(engine) -> str:
    """The app with login limits out of the way, for tests that log in or send refused secrets often."""
    with running(create_app(engine, auth_settings=AuthSettings(login_per_minute=10**6, token_per_minute=10**6))) as url:
        yield url


def openapi_document(url: str) -> dict:
    return httpx.get(f"{url}/openapi.json").json()


class Credentials(dict):
    """Headers that authenticate as one account ({"Authorization": "Bearer ..."}), and who it is."""

    def __init__(self, token: str, tenant_id: str, account_id: str, username: str, password: str | None):
        super().__init__({"Authorization": f"Bearer {token}"})
        self.tenant_id, self.account_id, self.username, self.password = tenant_id, account_id, username, password


class Accounts:
    """Creates accounts as the CLI and admin API do, and logs them in (via the engine: the HTTP
    login itself, with its rate limits, is what tests/test_auth*.py exercise)."""

    def __init__(self, engine: PricingEngine):
        self.engine = engine

    def new(self, role: str = "seller", tenant_id: str | None = None, shops: list[str] | None | str = "default",
            scopes: list[str] | None = None) -> Credentials:
        """A fresh account with one role. shops: the role's shops (default: none yet for a seller,
        who is granted each shop it opens; the whole tenant for other roles). A service account
        comes with an API key of `scopes` (default: all of the service role's)."""
        tenant_id = tenant_id or f"tenant-{uuid.uuid4().hex[:10]}"
        if shops == "default":
            shops = [] if role == "seller" else None
        username, password = f"{role}-{uuid.uuid4().hex[:12]}", f"pw {uuid.uuid4().hex}"
        ctx = CommandContext(actor=Actor("pytest"), tenant_id=tenant_id)
        kind = "service" if role == "service" else "user"
        created = self.engine.identity.create_account(ctx, username, kind, password if kind == "user" else None,
                                             {role: shops})
        account_id = created.body["account_id"]
        if kind == "service":
            key = self.engine.identity.issue_api_key(ctx, uuid.UUID(account_id), scopes or sorted(API_KEY_SCOPES), None)
            return Credentials(key.body["api_key"], tenant_id, account_id, username, None)
        session = self.engine.identity.login(username, password, "pytest", tenant_id)
        token = issue_access_token(self.engine.identity.secrets, session, timedelta(minutes=30))
        return Credentials(token, tenant_id, account_id, username, password)


@pytest.fixture(scope="session")
def accounts(engine) -> Accounts:
    return Accounts(engine)


@pytest.fixture
def tenant(accounts) -> Credentials:
    """Headers of a fresh seller in a tenant of its own: tests never see each other's shops.
    `tenant.tenant_id` names the tenant; accounts.new(role, tenant.tenant_id) adds colleagues."""
    return accounts.new("seller")


@pytest.fixture
def api(base_url, tenant) -> httpx.Client:
    with httpx.Client(base_url=base_url, headers=tenant, timeout=60) as client:
        yield client


@pytest.fixture
def shop(api) -> str:
    response = api.post("/shops", json={"name": "Hedgerow Ceramics", "currency": "GBP"})
    assert response.status_code == 201, response.text
    return response.json()["shop_id"]


def listing_spec(n: int = 0, **overrides) -> dict:
    spec = {"external_id": f"ext-{n}", "sku": f"SKU-{n}", "title": f"Mug {n}", "price": "20.00",
            "currency": "GBP", "floor": "10.00", "ceiling": "40.00", "cost": "6.00"}
    spec.update(overrides)
    return spec


@pytest.fixture
def listing(api, shop) -> str:
    response = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]})
    assert response.status_code == 201, response.text
    return response.json()["listings"][0]["listing_id"]


def send_together(n: int, send) -> list:
    """Run send(i) in n threads released at the same moment; answers in thread order."""
    start, answers = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        start.wait()
        answers[i] = send(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return answers


def price_changes(engine, listing: str) -> list:
    """A listing's PriceChanged events, read straight from the event store."""
    return [e for e in engine.core.events.get(uuid.UUID(listing)) if isinstance(e, Listing.PriceChanged)]


def finite_everywhere(value) -> bool:
    """No NaN or inf anywhere in a result, however deeply nested (the demand models' answers)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Decimal):
        return value.is_finite()
    if dataclasses.is_dataclass(value):
        return all(finite_everywhere(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (tuple, list)):
        return all(finite_everywhere(v) for v in value)
    if isinstance(value, dict):
        return all(finite_everywhere(v) for v in value.values())
    return True
