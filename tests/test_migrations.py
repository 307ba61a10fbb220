"""Migrations: applying them twice changes nothing, two processes applying them at once both
succeed and apply each migration once, and the analytics schema's TimescaleDB upgrade runs on a
real TimescaleDB (the in-process engine of tests/timescale/), where the projector's own
statements then deduplicate redelivered facts even in compressed chunks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

import migrations
from api.database import create_database, drop_database
from projections import competitor_prices, sales
from projections.base import LIVE

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "migrations"


def catalog(url: str) -> list[tuple]:
    """Everything the migrations define that could differ: columns, indexes, functions, views."""
    with psycopg.connect(url) as conn:
        return conn.execute("""
            SELECT 'column', table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
            FROM information_schema.columns WHERE table_schema IN ('public', 'analytics')
            UNION ALL SELECT 'index', schemaname || '.' || indexname || ' ' || indexdef FROM pg_indexes
            WHERE schemaname IN ('public', 'analytics')
            UNION ALL SELECT 'function', p.oid::regprocedure::text FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'analytics')
            UNION ALL SELECT 'migration', version || ' ' || checksum FROM schema_migrations
            ORDER BY 1, 2""").fetchall()


@pytest.fixture
def empty_database(pg_admin_url):
    name = f"etsypro_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    yield url
    drop_database(pg_admin_url, name)


def test_applying_twice_changes_nothing(empty_database):
    first = migrations.apply(empty_database, log=lambda *_: None)
    before = catalog(empty_database)
    assert migrations.apply(empty_database, log=lambda *_: None) == []
    assert catalog(empty_database) == before
    assert {"0100_analytics_schema", "0190_analytics_timescale"} <= set(first)


def test_two_processes_migrating_at_once_both_succeed(empty_database):
    script = "import sys, migrations; print(len(migrations.apply(sys.argv[1], log=lambda *_: None)))"
    procs = [subprocess.Popen([sys.executable, "-c", script, empty_database], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    applied = sorted(int(out) for out, _ in results)
    assert applied[0] == 0 and applied[1] == len(migrations.available())  # one did it all, the other nothing
    with psycopg.connect(empty_database) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        hypertable_settings = conn.execute("SELECT count(*) FROM analytics.timescale_settings").fetchone()[0]
    assert versions == sorted(m.version for m in migrations.available())
    assert hypertable_settings == 2  # recorded; applied only where TimescaleDB is installed


# -- TimescaleDB ---------------------------------------------------------------------------
def _harness():
    name = "etsypro_tests_timescale_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "timescale" / "harness.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, Decimal)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _stage_and_apply(stage, statement, rows: list[tuple]) -> list[str]:
    """The projector's own statements, with the staged rows INSERTed (the engine has no COPY)."""
    values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
    return ["BEGIN", stage.ddl(), f"INSERT INTO pg_temp.{stage.name} VALUES {values}",
            statement.get("insert", LIVE).as_string(None), "COMMIT"]


SHOP, LISTING = "6a0d1f3e-0000-4000-8000-000000000001", "6a0d1f3e-0000-4000-8000-0000000000aa"
BATCH = "6a0d1f3e-0000-4000-8000-0000000000bb"
OBSERVATIONS = [  # (position, shop, listing, competitor, price, currency, source, observed_at, recorded_at, batch, actor)
    (10, SHOP, LISTING, "rival-a", Decimal("20.00"), "GBP", "test", "2026-03-02 10:05:00+00", "2026-03-10 00:00:00+00", BATCH, "t"),
    (11, SHOP, LISTING, "rival-b", Decimal("22.00"), "GBP", "test", "2026-03-02 10:45:00+00", "2026-03-10 00:00:00+00", BATCH, "t"),
    (12, SHOP, LISTING, "rival-c", Decimal("30.00"), "GBP", "test", "2026-03-02 14:00:00+00", "2026-03-10 00:00:00+00", BATCH, "t"),
]
LATE = (13, SHOP, LISTING, "rival-d", Decimal("26.00"), "GBP", "test", "2026-03-02 14:30:00+00", "2026-03-10 00:00:00+00", BATCH, "t")
SALES = [  # (position, shop, listing, kind, quantity, unit_price, currency, order, transaction, sold_at, recorded_at, batch, source, actor)
    (20, SHOP, LISTING, "sale", 2, Decimal("24.50"), "GBP", "o1", "t1", "2026-03-02 11:00:00+00", "2026-03-10 00:00:00+00", BATCH, "manual", "t"),
    (21, SHOP, LISTING, "return", -1, Decimal("24.50"), "GBP", "o1", "t2", "2026-03-02 11:30:00+00", "2026-03-10 00:00:00+00", BATCH, "manual", "t"),
]


def test_timescale_upgrade_runs_on_timescaledb_and_the_projector_statements_work_there():
    harness = _harness()
    files = sorted(MIGRATIONS.glob("01*.sql"))
    assert files[-1].name == "0190_analytics_timescale.sql"  # the upgrade runs after the plain-PG DDL
    compress = "SELECT count(compress_chunk(c)) AS n FROM show_chunks('analytics.{}') c"
    queries = [
        *_stage_and_apply(competitor_prices.STAGE, competitor_prices.STATEMENTS, OBSERVATIONS),
        *_stage_and_apply(sales.STAGE, sales.STATEMENTS, SALES),
        compress.format("competitor_observations"), compress.format("sales"),
        # Redelivery into compressed chunks: nothing changes but the one new observation.
        *_stage_and_apply(competitor_prices.STAGE, competitor_prices.STATEMENTS, [*OBSERVATIONS, LATE]),
        *_stage_and_apply(sales.STAGE, sales.STATEMENTS, SALES),
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 'analytics' ORDER BY 1",
        "SELECT hypertable_name, proc_name FROM timescaledb_information.jobs"
        " WHERE hypertable_schema = 'analytics' ORDER BY 1, 2",
        "SELECT count(*) AS facts, sum(price) AS total FROM analytics.competitor_observations",
        "SELECT bucket, observations::int AS n FROM analytics.competitor_price_histogram ORDER BY bucket, price",
        "SELECT observations::int AS n, min_price, p25, median, p75, max_price FROM analytics.competitor_bands('1 day')",
        "SELECT units::int, revenue, units_returned::int, lines::int FROM analytics.sales_by_shop_day",
        "SELECT count(*) AS n FROM timescaledb_information.chunks WHERE hypertable_schema = 'analytics'"
        " AND is_compressed",
    ]
    try:
        results = harness.run_timescale_sql(files, queries)
    except harness.TimescaleUnavailable as exc:
        if os.environ.get("ETSYPRO_REQUIRE_TIMESCALE") == "1":
            pytest.fail(f"TimescaleDB harness required but unavailable: {exc.reason}")
        pytest.skip(f"TimescaleDB not runnable here, so its DDL was not executed: {exc.reason}")
    hypertables, jobs, facts, histogram, bands, shop_day, compressed = results[-7:]
    assert hypertables == [{"hypertable_name": "competitor_observations", "compression_enabled": True},
                           {"hypertable_name": "sales", "compression_enabled": True}]
    assert {(j["hypertable_name"], j["proc_name"]) for j in jobs} == {
        ("competitor_observations", "policy_compression"), ("competitor_observations", "policy_retention"),
        ("sales", "policy_compression")}
    assert facts == [{"facts": 4, "total": "98.00"}]
    assert [(h["bucket"], h["n"]) for h in histogram] == [
        ("2026-03-02 10:00:00+00", 1), ("2026-03-02 10:00:00+00", 1), ("2026-03-02 14:00:00+00", 1),
        ("2026-03-02 14:00:00+00", 1)]
    assert bands == [{"n": 4, "min_price": "20.00", "p25": "21.5000", "median": "24.0000", "p75": "27.0000",
                      "max_price": "30.00"}]
    assert shop_day == [{"units": 1, "revenue": "24.50", "units_returned": 1, "lines": 2}]
    assert compressed[0]["n"] >= 2
