"""Shared fixtures: a real PostgreSQL (the machine's when reachable, else an embedded one), one
fresh database per test run, and the engine served over real HTTP."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest

import migrations
from api.app import create_app
from api.database import create_database, drop_database, reachable, start_embedded
from api.server import running
from commands.engine import PricingEngine

ROOT = Path(__file__).resolve().parents[1]
SHOP_DATA = ROOT.parent / "shared" / "data" / "online_retail.parquet"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> str:
    """A server on which tests may create databases."""
    url = os.environ.get("ETSYPRO_TEST_ADMIN_URL", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    if reachable(url):
        return url
    return start_embedded(tmp_path_factory.mktemp("embedded-pg"))


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
def engine(database_url) -> PricingEngine:
    engine = PricingEngine(database_url)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def base_url(engine) -> str:
    with running(create_app(engine, max_body_bytes=8 * 1024 * 1024)) as url:
        yield url


@pytest.fixture
def tenant() -> dict[str, str]:
    """Headers for a tenant of its own: tests never see each other's shops."""
    return {"X-Tenant-Id": f"tenant-{uuid.uuid4().hex[:10]}", "X-Actor-Id": "alice"}


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
