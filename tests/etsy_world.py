"""What the Etsy tests share: the fake Etsy over real HTTP, an engine with a known secret key (so
`etsypro etsy push|sync` subprocesses decrypt the tokens it stored), its API, and connecting a shop
through the real PKCE round trip. Import the fixtures by name into a test module."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.server import running
from commands.engine import PricingEngine
from conftest import Accounts, listing_spec
from fake_etsy import FakeEtsy, FakeEtsyConfig
from fake_etsy import create_app as create_fake
from streams.etsy_client import Budget, EtsyApp, EtsyClient

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "etsy-tests-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def fake():
    return FakeEtsy(FakeEtsyConfig(per_second=200))


@pytest.fixture(scope="module")
def fake_url(fake):
    with running(create_fake(fake)) as url:
        yield url


@pytest.fixture(scope="module")
def etsy_engine(database_url):
    engine = PricingEngine(database_url, pool_size=3)
    engine.identity.use_secret_key(SECRET_KEY)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def etsy_server(etsy_engine, fake, fake_url):
    """The engine's API with the fake as its Etsy; yields (base url, EtsyApp)."""
    app = create_app(etsy_engine)
    with running(app) as url:
        app.state.etsy = EtsyApp(fake.config.keystring, fake.config.shared_secret, fake_url, f"{fake_url}/oauth/connect",
                                 f"{url}/marketplace/etsy/callback")
        yield url, app.state.etsy


@pytest.fixture(scope="module")
def etsy_accounts(etsy_engine):
    return Accounts(etsy_engine)


@pytest.fixture
def seller(etsy_accounts):
    return etsy_accounts.new("seller")


@pytest.fixture
def etsy_api(etsy_server, seller):
    with httpx.Client(base_url=etsy_server[0], headers=seller, timeout=60) as client:
        yield client


def client_of(etsy_app: EtsyApp, **budget) -> EtsyClient:
    return EtsyClient(etsy_app, Budget(**budget))


def open_shop(api: httpx.Client) -> str:
    response = api.post("/shops", json={"name": f"Etsy shop {uuid.uuid4().hex[:6]}", "currency": "GBP"})
    assert response.status_code == 201, response.text
    return response.json()["shop_id"]


def connect(api: httpx.Client, fake: FakeEtsy, shop: str, etsy_shop=None):
    """The real round trip: start (PKCE), the fake's consent page, the engine's callback."""
    etsy_shop = etsy_shop or fake.add_shop("GBP")
    fake.consenting_user = etsy_shop.user_id
    started = api.post(f"/shops/{shop}/marketplace/etsy/connect", json={"etsy_shop_id": etsy_shop.shop_id})
    assert started.status_code == 200, started.text
    consent = httpx.get(started.json()["authorize_url"])
    assert consent.status_code == 302, consent.text
    finished = httpx.get(consent.headers["location"])
    assert finished.status_code in (200, 201), finished.text
    return etsy_shop, finished


def etsy_shop_with_listings(fake: FakeEtsy, count: int, variations: int = 0):
    shop = fake.add_shop("GBP")
    listings = [fake.add_listing(shop.shop_id, f"Mug {i}", f"MUG-{i}", Decimal("20.00"), variations=variations)
                for i in range(count)]
    return shop, listings


def etsypro(database_url: str, etsy_app: EtsyApp, *args: str, **popen) -> subprocess.Popen:
    """`etsypro <args>` as its own process, on the tests' database, key and fake Etsy."""
    env = {**os.environ, "ETSYPRO_DATABASE_URL": database_url, "ETSYPRO_SECRET_KEY": SECRET_KEY,
           "ETSYPRO_ETSY_KEYSTRING": etsy_app.keystring, "ETSYPRO_ETSY_SHARED_SECRET": etsy_app.shared_secret,
           "ETSYPRO_ETSY_API_URL": etsy_app.api_url, "ETSYPRO_POOL_SIZE": "2"}
    return subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, **popen)


@contextmanager
def etsy_in_environment(base_url: str):
    """A fake Etsy, named in the ETSYPRO_ETSY_* variables that servers of this process read when
    their app has no `state.etsy` (api/routers/marketplace.py); yields the fake."""
    fake = FakeEtsy(FakeEtsyConfig(per_second=200))
    with running(create_fake(fake)) as url:
        env = {"ETSYPRO_ETSY_KEYSTRING": fake.config.keystring, "ETSYPRO_ETSY_SHARED_SECRET": fake.config.shared_secret,
               "ETSYPRO_ETSY_API_URL": url, "ETSYPRO_ETSY_REDIRECT_URI": f"{base_url}/marketplace/etsy/callback"}
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield fake
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def sample_marketplace_routes(api: httpx.Client, shop: str) -> None:
    """A success and an error of every documented Etsy route, through `api` (a seller of `shop`),
    for the OpenAPI contract's sample (tests/test_openapi_contract.py can call it as it is)."""
    base = f"/shops/{shop}/marketplace/etsy"
    for path in ("", "/queue", "/drifts"):
        api.get(base + path)
        api.get(f"/shops/{uuid.uuid4()}/marketplace/etsy{path}")  # 404
    api.get(base + "/queue", params={"limit": 0})  # 422
    api.post(base + "/sync")  # 404: not connected
    api.post(base + "/disconnect")  # 404: not connected
    api.post(base + "/connect", json={"etsy_shop_id": 0})  # 422
    spec = listing_spec(0, external_id=f"watched-{uuid.uuid4().hex[:8]}", sku=f"W-{uuid.uuid4().hex[:8]}")
    listing = api.post(f"/shops/{shop}/listings", json={"listings": [spec]}).json()["listings"][0]["listing_id"]
    api.put(f"{base}/watches/{listing}", json={"keywords": "speckled mug"})
    api.put(f"{base}/watches/{listing}", json={})  # 422
    for path in (f"/watches/{listing}", "/watches"):
        api.get(base + path)
        api.get(f"/shops/{uuid.uuid4()}/marketplace/etsy{path}")  # 404
    api.delete(f"{base}/watches/{listing}")
    api.delete(f"{base}/watches/{listing}")  # 404: no watch any more
    with etsy_in_environment(str(api.base_url).rstrip("/")) as fake:
        connect(api, fake, shop)
        api.post(base + "/sync")
        api.post(base + "/disconnect")


__all__ = ["fake", "fake_url", "etsy_engine", "etsy_server", "etsy_accounts", "seller", "etsy_api", "client_of",
           "open_shop", "connect", "etsy_shop_with_listings", "etsypro", "listing_spec", "SECRET_KEY",
           "etsy_in_environment", "sample_marketplace_routes"]
