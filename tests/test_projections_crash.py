"""Exactly-once under crash: `etsypro project` is killed with SIGKILL in the middle of a batch
(view rows written, transaction not committed), several times; each restart resumes from the
last committed position, and the views end up exactly right."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from commands.engine import PricingEngine
from projections import registry
from test_projections_helpers import Written, broken_invariants, observe, open_shop, sell

ROOT = Path(__file__).resolve().parents[1]
ETSYPRO = [sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())"]

IN_A_BATCH = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'etsypro-projector'
      AND backend_xid IS NOT NULL                       -- its transaction has written
      AND state IN ('active', 'idle in transaction')
      AND (query LIKE '%%"competitor_observations"%%'   -- writing observation facts,
           OR query LIKE '%%"sales_by_shop_hour"%%'       -- sale facts and rollups,
           OR query LIKE 'UPDATE analytics.projection_tracking%%')  -- or moving the position: not committed"""


def projector(url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url}
    return subprocess.Popen([*ETSYPRO, "project", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_mid_batch(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute(IN_A_BATCH).fetchone() is None:
            assert proc.poll() is None, f"the projector finished before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "never saw the projector inside a batch"
            time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def facts_inserted_and_kept(url: str) -> tuple[int, int]:
    """(rows ever inserted into the facts table, rows there now): more inserted than kept means a
    batch wrote rows that were then rolled back."""
    with psycopg.connect(url, autocommit=True) as conn:
        kept = conn.execute("SELECT count(*) FROM analytics.competitor_observations").fetchone()[0]
        inserted = conn.execute("SELECT n_tup_ins FROM pg_stat_user_tables"
                                " WHERE relid = 'analytics.competitor_observations'::regclass").fetchone()[0]
    return inserted, kept


def test_killed_mid_batch_then_restarted_counts_everything_exactly_once(new_database):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    rng, written = random.Random(5), Written()
    shop = open_shop(engine, "t-crash", 50, written)
    for _ in range(8):
        observe(engine, shop, 10_000, rng, written)
        sell(engine, shop, 2_000, rng, written)
    engine.close()

    positions = []
    for _ in range(3):
        kill_mid_batch(url, projector(url, "--once", "--batch", "4000"))
        with psycopg.connect(url, autocommit=True) as conn:  # the killed one's backend aborts and leaves
            while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                               " AND application_name LIKE 'etsypro-projector%%'").fetchone()[0]:
                time.sleep(0.01)
        with psycopg.connect(url) as conn:
            positions.append(conn.execute("SELECT coalesce(min(log_position), 0) FROM analytics.projection_tracking"
                                          ).fetchone()[0])
    deadline = time.monotonic() + 10  # the killed backends report their aborted inserts as they exit
    while (counts := facts_inserted_and_kept(url))[0] == counts[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    inserted, kept = counts
    assert inserted > kept, "no kill landed after view rows were written"

    finish = projector(url, "--once", "--batch", "4000")
    out, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err

    with psycopg.connect(url) as conn:
        head = conn.execute("SELECT max(notification_id) FROM pricing_events").fetchone()[0]
        final = [r[0] for r in conn.execute("SELECT log_position FROM analytics.projection_tracking")]
        observations, lines, units, revenue = conn.execute(
            "SELECT (SELECT count(*) FROM analytics.competitor_observations), count(*), sum(quantity), sum(revenue)"
            " FROM analytics.sales").fetchone()
    assert positions[-1] < head, "the kills should have left work to do"
    assert final == [head] * len(registry.ALL)
    assert (observations, lines, units, revenue) == (written.observations, written.sale_lines, written.units,
                                                     written.revenue)
    assert broken_invariants(url) == {}
