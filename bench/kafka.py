"""Kafka path benchmark (`etsypro bench kafka [--json]`): the relay and a faust worker, end to end.

A log of N events through the real command handlers (mostly competitor observations, with sales
and price changes), on a fresh database and a fresh local Tansu broker. A faust worker
(`etsypro worker`, its own process) has joined its group and applied a warm-up first. Then the
clock starts, the relay publishes the log, and the clock stops when the worker's sink has
applied every record (its offsets in PostgreSQL cover all of them):

    kafka_events_per_s  = N / (relay start -> last record applied)   [the issue's target: >= 3,000]
    relay_events_per_s  = N / (relay start -> broker acknowledged all, position recorded)
    worker_join_s       = worker spawn -> warm-up applied (process start + group join)

`measure(events)` returns the figures as a dict, for `etsypro bench read` to include.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg

from bench.common import fresh_database, note, print_table, rate, server_version, show
from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor, ActorKind
from projections.registry import ALL
from streams import wire
from bench.broker import TansuBroker
from streams.relay import Relay
from streams.workers import DEFAULT_APP_ID, topics_for

ROOT = Path(__file__).resolve().parents[1]
CURRENCY = "GBP"
LISTINGS = 200
OBSERVATIONS_PER_COMMAND = 5000


def measure(events: int = 100_000, batch: int = 2000) -> dict:
    with fresh_database("etsypro_bench_kafka") as (url, where), TansuBroker() as broker, \
            tempfile.TemporaryDirectory(prefix="etsypro-bench-kafka-") as tmp:
        engine = PricingEngine(url, pool_size=2)
        worker = None
        try:
            ctx = CommandContext(actor=Actor("bench", ActorKind.SERVICE), tenant_id="bench-kafka")
            shop, listings = _shop(engine, ctx)
            note("kafka: starting a worker and applying the warm-up")
            spawned = time.monotonic()
            worker = _spawn_worker(url, broker.bootstrap_servers, Path(tmp), batch)
            asyncio.run(Relay(url, broker.bootstrap_servers).catch_up())
            _wait_applied(url, _records(url), worker, Path(tmp) / "worker.log", timeout=120)
            join_s = time.monotonic() - spawned

            note(f"kafka: writing {events:,} events")
            _write(engine, ctx, shop, listings, events)
            before, total = _records_applied(url), _records(url)
            timed = total - before
            note(f"kafka: relaying and applying {timed:,} events")
            relay = Relay(url, broker.bootstrap_servers)
            started = time.monotonic()
            relayed: list[float] = []
            thread = threading.Thread(target=lambda: (asyncio.run(relay.catch_up()),
                                                      relayed.append(time.monotonic() - started)))
            thread.start()
            _wait_applied(url, total, worker, Path(tmp) / "worker.log", timeout=600)
            elapsed = time.monotonic() - started
            thread.join()
        finally:
            if worker is not None:
                worker.terminate()
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            engine.close()
        return {
            "kafka_events_per_s": round(rate(timed, elapsed)),
            "kafka_events": timed,
            "kafka_seconds": round(elapsed, 3),
            "relay_events_per_s": round(rate(timed, relayed[0])),
            "worker_join_s": round(join_s, 2),
            "worker_batch": batch,
            "cores": os.cpu_count(),
            "postgres": f"{server_version(url)} ({where})",
        }


# -- the log ----------------------------------------------------------------------------------
def _shop(engine: PricingEngine, ctx: CommandContext) -> tuple[UUID, list[UUID]]:
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Kafka bench", currency=CURRENCY)).body["shop_id"])
    specs = [{"external_id": f"k{i}", "sku": f"K{i}", "title": f"Mug {i}", "price": "20.00", "currency": CURRENCY,
              "floor": "5.00", "ceiling": "90.00", "cost": "4.00"} for i in range(LISTINGS)]
    body = engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate({"listings": specs})).body
    return shop, [UUID(x["listing_id"]) for x in body["listings"]]


def _write(engine: PricingEngine, ctx: CommandContext, shop: UUID, listings: list[UUID], events: int) -> None:
    """About 85% observations, 10% sale lines, 5% price changes, interleaved."""
    rng, day, written, round_ = random.Random(5), datetime(2026, 11, 2, tzinfo=timezone.utc), 0, 0
    while written < events:
        n = min(OBSERVATIONS_PER_COMMAND, events - written)
        engine.listings.record_observations(ctx, shop, models.RecordObservations.model_validate({"observations": [
            {"listing_id": str(rng.choice(listings)), "competitor": f"rival-{rng.randrange(40)}",
             "price": f"{rng.randrange(1500, 2600) / 100:.2f}", "currency": CURRENCY, "source": "bench",
             "observed_at": (day + timedelta(minutes=rng.randrange(60 * 24 * 28))).isoformat()}
            for _ in range(n)]}))
        written += n
        sales = min(n // 8, events - written)
        if sales:
            engine.listings.record_sales(ctx, shop, models.RecordSales.model_validate({"sales": [
                {"listing_id": str(rng.choice(listings)), "quantity": rng.choice([1, 1, 2, -1]),
                 "unit_price": str(Decimal(rng.randrange(1000, 3000)) / 100), "currency": CURRENCY,
                 "order_id": f"o{round_}-{i // 2}", "transaction_id": f"t{round_}-{i}",
                 "sold_at": (day + timedelta(minutes=rng.randrange(60 * 24 * 28))).isoformat()}
                for i in range(sales)]}))
            written += sales
        changes = min(n // 20, LISTINGS, events - written)
        if changes:
            engine.listings.bulk_set_prices(ctx, shop, models.BulkSetPrices.model_validate({
                "changes": [{"listing_id": str(x), "price": f"{21 + round_ % 7}.{rng.randrange(10, 99)}"}
                            for x in rng.sample(listings, changes)],
                "currency": CURRENCY, "source": "experiment", "reason": f"bench round {round_}"}))
            written += changes
        round_ += 1


# -- the worker -------------------------------------------------------------------------------
def _spawn_worker(url: str, bootstrap: str, tmp: Path, batch: int) -> subprocess.Popen:
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_KAFKA_BOOTSTRAP": bootstrap,
           "ETSYPRO_DATA_DIR": str(tmp)}
    with open(tmp / "worker.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())",
                                 "worker", "--batch", str(batch)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def _records(url: str) -> int:
    """Records the worker's topics will hold once the whole log is published (no duplicates)."""
    wanted = set(topics_for(ALL))
    with psycopg.connect(url) as conn:
        counts = conn.execute("SELECT topic, count(*) FROM pricing_events GROUP BY topic").fetchall()
    return sum(n for topic, n in counts if wire.kafka_topic(topic) in wanted)


def _records_applied(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT coalesce(sum(last_offset + 1), 0)::bigint FROM streams.sink_offsets WHERE sink = %s",
                            [DEFAULT_APP_ID]).fetchone()[0]


def _wait_applied(url: str, total: int, worker: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _records_applied(url) < total:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker applied {_records_applied(url):,} of {total:,} records in {timeout}s")
        time.sleep(0.02)


# -- output -----------------------------------------------------------------------------------
def report(figures: dict) -> None:
    print_table(f"Kafka path ({figures['cores']} cores, PostgreSQL {figures['postgres']}, Tansu broker)", [
        ("kafka_events_per_s", f"{figures['kafka_events_per_s']:,}",
         f"relay -> Kafka -> faust worker -> views, {figures['kafka_events']:,} events in"
         f" {figures['kafka_seconds']}s (target >= 3,000)"),
        ("relay_events_per_s", f"{figures['relay_events_per_s']:,}", "publishing alone: read, send, broker acks"),
        ("worker_join_s", f"{figures['worker_join_s']}", "worker spawn -> group joined -> warm-up applied"),
    ])


def main(args) -> int:
    return show(measure(events=args.events or 100_000, batch=args.batch or 2000), args.json, report)
