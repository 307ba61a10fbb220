"""The projections on real PostgreSQL: views match what was written, redelivery changes nothing,
no event is missed while many writers commit concurrently, and a rebuild equals the
incrementally maintained views (also when interrupted and resumed, while queries are served)."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

import psycopg
import pytest

import codec
from commands.engine import PricingEngine
from projections.base import LIVE
from projections.log import EventLog
from projections.projector import InBackground, Projector
from projections.rebuild import rebuild
from projections.registry import ALL, by_name
from test_projections_helpers import (INVARIANTS, Written, broken_invariants, observe, open_shop, populate, reprice, sell,
                                      snapshot, wait_caught_up)


@pytest.fixture(scope="module")
def projected(new_database):
    """A database with two shops' worth of mixed events, projected once."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    rng, written = random.Random(3), Written()
    for tenant in ("t-alpha", "t-beta"):
        populate(engine, tenant, rng, written)
    projector = Projector(url, codec.to_domain_event, batch_size=700)  # many batches, odd boundaries
    projector.catch_up()
    projector.close()
    yield url, engine, written
    engine.close()


def test_views_hold_exactly_what_was_written(projected):
    url, engine, written = projected
    assert broken_invariants(url) == {}
    with psycopg.connect(url) as conn:
        facts = conn.execute("SELECT count(*), sum(quantity), sum(revenue) FROM analytics.sales").fetchone()
        rollup = conn.execute("SELECT sum(units), sum(revenue), sum(lines) FROM analytics.sales_by_shop_hour").fetchone()
        observations = conn.execute("SELECT count(*) FROM analytics.competitor_observations").fetchone()[0]
        returns = conn.execute("SELECT count(*), min(quantity), max(revenue) FROM analytics.sales"
                               " WHERE kind = 'return'").fetchone()
        types = conn.execute("SELECT pg_typeof(revenue)::text, pg_typeof(price)::text FROM analytics.sales_by_shop_hour,"
                             " analytics.current_prices LIMIT 1").fetchone()
    assert facts == (written.sale_lines, written.units, written.revenue)
    assert rollup == (written.units, written.revenue, written.sale_lines)
    assert observations == written.observations
    assert returns[0] > 0 and returns[1] < 0 and returns[2] < 0  # returns count negative
    assert types == ("numeric", "numeric")  # money is never a float


@pytest.mark.parametrize("damage, invariant", [
    ("DELETE FROM analytics.sales WHERE log_position = (SELECT min(log_position) FROM analytics.sales)",
     "sale facts are exactly the sale and return events"),
    ("UPDATE analytics.competitor_price_histogram SET observations = observations + 1"
     " WHERE ctid = (SELECT min(ctid) FROM analytics.competitor_price_histogram)",
     "histogram = observation facts counted per listing, hour and price"),
    ("UPDATE analytics.sales_by_shop_hour SET units_returned = units_returned + 1"
     " WHERE ctid = (SELECT min(ctid) FROM analytics.sales_by_shop_hour)",
     "shop sales rollup = sale facts summed per shop and hour"),
])
def test_the_invariants_notice_a_damaged_view(projected, damage, invariant):
    """The checks above can fail: each names the damage done to its view (then rolled back)."""
    url, _, _ = projected
    with psycopg.connect(url) as conn:
        conn.execute(damage)
        assert conn.execute(INVARIANTS[invariant]).fetchone()[0] > 0
        conn.rollback()


def test_price_board_matches_the_listings_as_the_write_side_sees_them(projected):
    url, engine, written = projected
    with psycopg.connect(url) as conn:
        board = {r[0]: r[1:] for r in conn.execute(
            "SELECT listing_id, price, floor, ceiling, cost, shop_id FROM analytics.current_prices")}
    for shop in written.shops:
        for listing_id in shop.listings:
            listing = engine.core.listing(shop.ctx, shop.shop_id, listing_id)
            g = listing.guardrails
            assert board[listing_id] == (listing.price.amount, g.floor.amount, g.ceiling.amount, g.cost.amount,
                                         shop.shop_id)


def test_price_changes_say_who_why_and_what_they_compensate(projected):
    url, engine, written = projected
    with psycopg.connect(url) as conn:
        kinds = dict(conn.execute("SELECT kind, count(*) FROM analytics.price_changes GROUP BY kind").fetchall())
        compensation = conn.execute(
            "SELECT source, compensates, reason, actor_id, previous_price, change, price FROM analytics.price_changes"
            " WHERE kind = 'compensation' ORDER BY log_position LIMIT 1").fetchone()
        sources = {r[0] for r in conn.execute("SELECT DISTINCT source FROM analytics.price_changes")}
    assert kinds["registered"] == sum(len(s.listings) for s in written.shops)
    assert kinds["changed"] > 0 and kinds["compensation"] > 0
    source, compensates, reason, actor, previous, change, price = compensation
    assert source == "rollback" and compensates and all(v > 1 for v in compensates)
    assert reason == "undo" and actor == "pytest" and change == price - previous
    assert {"manual", "experiment", "rollback"} <= sources


def test_bands_equal_percentiles_over_the_raw_observations(projected):
    url, _, _ = projected
    with psycopg.connect(url) as conn:
        for width in ("1 hour", "1 day", "7 days"):
            mismatches = conn.execute("""
                WITH expected AS (
                    SELECT listing_id, analytics.bucket(%(w)s, observed_at) AS bucket, count(*) AS n,
                           min(price) AS lo, percentile_cont(0.25) WITHIN GROUP (ORDER BY price) AS p25,
                           percentile_cont(0.5) WITHIN GROUP (ORDER BY price) AS p50,
                           percentile_cont(0.75) WITHIN GROUP (ORDER BY price) AS p75, max(price) AS hi
                    FROM analytics.competitor_observations GROUP BY 1, 2)
                SELECT count(*) FROM expected e
                FULL JOIN analytics.competitor_bands(%(w)s) b USING (listing_id, bucket)
                WHERE b.observations IS DISTINCT FROM e.n OR b.min_price IS DISTINCT FROM e.lo
                   OR b.max_price IS DISTINCT FROM e.hi OR b.p25 IS DISTINCT FROM e.p25::numeric
                   OR b.median IS DISTINCT FROM e.p50::numeric OR b.p75 IS DISTINCT FROM e.p75::numeric""",
                                      {"w": width}).fetchone()[0]
            assert mismatches == 0, width


def test_redelivering_applied_events_changes_nothing(projected):
    """The handlers themselves are idempotent: the same batch applied again (as a Kafka sink may
    receive it, or a projector whose tracking was lost) leaves every row as it was."""
    url, engine, _ = projected
    before = snapshot(url)
    event_log = EventLog(codec.to_domain_event, ALL)
    with psycopg.connect(url) as conn:
        with conn.transaction(), conn.cursor() as cur:
            page = event_log.read(cur, 0, 1_000_000)
            for projection in ALL:
                projection.apply(cur, page.events, LIVE)                   # everything again, in one batch
                projection.apply(cur, page.events[::-1][:500], LIVE)       # and some again, out of order
        # The projector itself, told it is at the start of the log, re-reads everything.
        conn.execute("UPDATE analytics.projection_tracking SET log_position = 0")
        conn.commit()
    projector = Projector(url, codec.to_domain_event, batch_size=333)
    projector.catch_up()
    projector.close()
    assert snapshot(url) == before


# -- concurrent writers ---------------------------------------------------------------------
def test_no_event_is_missed_while_many_writers_commit_concurrently(new_database):
    """Writers commit small transactions from several threads while the projector follows the
    log live in small batches. Positions are visible only in commit order (the recorder's
    EXCLUSIVE lock), so the projector never moves past an event that has yet to commit."""
    url = new_database()
    engine = PricingEngine(url, pool_size=3)
    written = Written()
    shops = [open_shop(engine, f"t-{i}", 6, written) for i in range(4)]
    background = InBackground.projector(Projector(url, codec.to_domain_event, batch_size=50)).start()
    stop, errors, commits = threading.Event(), [], [0]

    def write(seed: int) -> None:
        rng, shop = random.Random(seed), shops[seed % len(shops)]
        mine = Written()
        try:
            while not stop.is_set():
                kind = rng.random()
                if kind < 0.5:
                    observe(engine, shop, rng.randrange(1, 6), rng, mine)
                elif kind < 0.8:
                    sell(engine, shop, rng.randrange(1, 4), rng, mine)
                else:
                    reprice(engine, shop, rng)
                commits[0] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    writers = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for w in writers:
        w.start()
    time.sleep(6)
    stop.set()
    for w in writers:
        w.join()
    try:
        wait_caught_up(url)
    finally:
        background.stop()
        engine.close()
    assert not errors, errors
    assert commits[0] > 200
    assert broken_invariants(url) == {}


# -- rebuild ---------------------------------------------------------------------------------
def test_rebuild_equals_the_incrementally_maintained_views(projected):
    url, engine, _ = projected
    incremental = snapshot(url)
    done = rebuild(url, codec.to_domain_event, ALL, batch_size=1000)
    assert done.resumed_from == 0 and done.events > 0
    assert snapshot(url) == incremental
    with psycopg.connect(url) as conn:
        leftovers = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'analytics'"
                                 " AND (tablename LIKE '%%rebuild' OR tablename LIKE '%%replaced')").fetchone()[0]
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'analytics' AND tablename = 'competitor_observations'")}
        tracking = {r[0] for r in conn.execute("SELECT projection FROM analytics.projection_tracking")}
    assert leftovers == 0
    assert indexes == {"competitor_observations_pkey", "competitor_observations_listing_time",
                       "competitor_observations_shop_time", "competitor_observations_observed_brin"}
    assert tracking == {p.name for p in ALL}


class Interrupted(Exception):
    pass


def test_interrupted_rebuild_resumes_while_queries_and_writes_go_on(new_database):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    rng, written = random.Random(11), Written()
    shop = populate(engine, "t-resume", rng, written, rounds=4)
    background = InBackground.projector(Projector(url, codec.to_domain_event, batch_size=200)).start()
    wait_caught_up(url)
    projection = by_name("competitor_prices")

    def interrupt_after_two_batches(done: int, total: int) -> None:
        if done >= 400:
            raise Interrupted

    with pytest.raises(Interrupted):
        rebuild(url, codec.to_domain_event, [projection], batch_size=200, progress=interrupt_after_two_batches)
    with psycopg.connect(url) as conn:  # the live view is untouched, the copy holds what was replayed
        live = conn.execute("SELECT count(*) FROM analytics.competitor_observations").fetchone()[0]
        copied = conn.execute("SELECT count(*) FROM analytics.competitor_observations__rebuild").fetchone()[0]
        resume_at = conn.execute("SELECT log_position FROM analytics.projection_tracking"
                                 " WHERE projection = 'rebuild:competitor_prices'").fetchone()[0]
    assert live == written.observations and 0 < copied < live and resume_at > 0

    # Resume while writers append and analysts query the live table.
    stop, seen, errors = threading.Event(), [], []

    def query() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    seen.append(conn.execute("SELECT count(*) FROM analytics.competitor_observations").fetchone()[0])
                except psycopg.Error as e:
                    errors.append(e)
                time.sleep(0.005)

    def write() -> None:
        while not stop.is_set():
            observe(engine, shop, 20, rng, written)
            time.sleep(0.01)

    threads = [threading.Thread(target=query), threading.Thread(target=write)]
    for t in threads:
        t.start()
    try:
        done = rebuild(url, codec.to_domain_event, [projection], batch_size=200)
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        wait_caught_up(url)
    finally:
        background.stop()
    assert done.resumed_from == resume_at
    assert not errors and len(seen) > 10
    assert seen == sorted(seen)  # queries never saw the view go backwards, before, during or after the swap
    assert broken_invariants(url) == {}
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.competitor_observations").fetchone()[0] \
            == written.observations
    engine.close()


def test_money_survives_the_projection_exactly(projected):
    """Amounts are Decimal from command to view: no float anywhere in between."""
    url, _, _ = projected
    with psycopg.connect(url) as conn:
        prices = [r[0] for r in conn.execute("SELECT price FROM analytics.competitor_observations LIMIT 200")]
    assert all(isinstance(p, Decimal) and p == p.quantize(Decimal("0.01")) for p in prices)


def test_cli_status_and_rebuild(projected, monkeypatch, capsys):
    import json

    from api.cli import main

    url, _, _ = projected
    monkeypatch.setenv("ETSYPRO_DATABASE_URL", url)
    before = snapshot(url)
    assert main(["projections", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["projections"]
    assert {s["projection"] for s in status} == {p.name for p in ALL}
    assert all(s["events_behind"] == 0 and s["log_position"] == s["head"] and s["parked"] == 0 for s in status)
    assert main(["projections", "rebuild", "sales", "--batch", "500"]) == 0
    assert "rebuilt sales" in capsys.readouterr().out
    assert snapshot(url) == before
    assert main(["projections", "rebuild", "nonsense"]) == 2
    assert "no projection named 'nonsense'" in capsys.readouterr().err
