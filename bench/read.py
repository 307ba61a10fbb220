"""Read-side benchmark (`etsypro bench read [--json]`), on one fresh database:

(a) a log of >= 1,000,000 events written through the command handlers (competitor observations in
    commands of 10,000, sales with returns, bulk price changes), over several shops;
(b) raw_read_rows_per_s: the same events read back with a plain paged SELECT (the baseline);
(c) catchup_events_per_s: a fresh projector applying the whole log to all views;
(d) rebuild_s_1m: `projections rebuild all` (replay into fresh tables, swap) scaled to 1M events;
(e) live_lag_p95_ms: append-to-visible latency at moderate load with the projector following live;
(f) query_p95_ms: analysts' queries over real HTTP on that data (query_sql_p95_ms: the same
    queries without HTTP).
kafka_events_per_s belongs to the Kafka path's benchmark.
"""

from __future__ import annotations

import os
import random
import resource
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import httpx
import psycopg

import codec
from api.app import create_app
from api.progress import Progress
from api.server import running
from api.settings import Settings
from bench.common import (cpu_seconds, fresh_database, median, note, percentile, print_table, rate,
                          server_version, show, sizes_from)
from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor, ActorKind
from projections import queries
from projections.projector import InBackground, Projector, tune_gc
from projections.rebuild import rebuild
from projections.registry import ALL
from read.side import ReadSide

CURRENCY = "GBP"
START = datetime(2026, 1, 5, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Sizes:
    events: int = 1_000_000
    batch: int = 10_000           # projector events per transaction (as `etsypro project`)
    command_batch: int = 10_000   # facts per command
    shops: int = 10
    listings: int = 100           # per shop
    competitors: int = 12         # per listing
    days: int = 60                # business time the facts span
    live_seconds: float = 15.0
    live_commands_per_s: float = 50.0  # each with 10 observations or one price change: ~300 events/s
    queries: int = 400


# -- (a) the log ----------------------------------------------------------------------------
@dataclass
class Shop:
    shop_id: UUID
    listings: list[UUID]
    prices: dict  # (listing index, competitor) -> Decimal: competitors' prices drift slowly


def _context() -> CommandContext:
    return CommandContext(actor=Actor("bench-read", ActorKind.SERVICE), tenant_id="bench-read")


def _setup(engine: PricingEngine, sizes: Sizes, rng: random.Random) -> list[Shop]:
    ctx, shops = _context(), []
    for s in range(sizes.shops):
        shop_id = UUID(engine.listings.open_shop(ctx, models.OpenShop(name=f"Bench shop {s}", currency=CURRENCY)).body["shop_id"])
        specs = [{"external_id": f"{s}-{i}", "sku": f"B{s}-{i}", "title": f"Item {i}", "price": "25.00",
                  "currency": CURRENCY, "floor": "5.00", "ceiling": "95.00", "cost": "4.00"}
                 for i in range(sizes.listings)]
        body = engine.listings.register_listings(ctx, shop_id, models.RegisterListings.model_validate({"listings": specs})).body
        prices = {(i, c): Decimal(rng.randrange(1500, 4000)) / 100
                  for i in range(sizes.listings) for c in range(sizes.competitors)}
        shops.append(Shop(shop_id, [UUID(x["listing_id"]) for x in body["listings"]], prices))
    return shops


def _observations(shop: Shop, sizes: Sizes, rng: random.Random, t0: datetime, span: timedelta) -> dict:
    items = []
    for k in range(sizes.command_batch):
        i, c = rng.randrange(sizes.listings), rng.randrange(sizes.competitors)
        if rng.random() < 0.05:  # a competitor reprices now and then
            shop.prices[i, c] = max(Decimal("1.00"), shop.prices[i, c] + Decimal(rng.randrange(-200, 201)) / 100)
        items.append({"listing_id": str(shop.listings[i]), "competitor": f"rival-{c}",
                      "price": str(shop.prices[i, c]), "currency": CURRENCY, "source": "bench",
                      "observed_at": (t0 + span * k / sizes.command_batch).isoformat()})
    return {"observations": items}


def _sales(shop: Shop, sizes: Sizes, rng: random.Random, t0: datetime, span: timedelta, seq: int) -> dict:
    lines = []
    for k in range(sizes.command_batch):
        quantity = -1 if rng.random() < 0.05 else rng.choice((1, 1, 1, 2, 3))
        lines.append({"listing_id": str(rng.choice(shop.listings)), "quantity": quantity,
                      "unit_price": f"{rng.randrange(1000, 5000) / 100:.2f}", "currency": CURRENCY,
                      "order_id": f"o{seq}-{k // 3}", "transaction_id": f"t{seq}-{k}",
                      "sold_at": (t0 + span * k / sizes.command_batch).isoformat()})
    return {"sales": lines}


def write_log(engine: PricingEngine, url: str, sizes: Sizes) -> tuple[int, float]:
    """Commands until the log holds sizes.events events: (events, seconds)."""
    rng, ctx = random.Random(42), _context()
    started = time.perf_counter()
    shops = _setup(engine, sizes, rng)
    plan_commands = sizes.events // sizes.command_batch + 1
    span = timedelta(days=sizes.days) / plan_commands
    progress = Progress("writing the log", sizes.events)
    n, events = 0, 0
    while events < sizes.events:
        shop = shops[n % len(shops)]
        t0 = START + span * n
        if n % 10 == 9:
            engine.listings.record_sales(ctx, shop.shop_id, models.RecordSales.model_validate(
                _sales(shop, sizes, rng, t0, span, n)))
        else:
            engine.listings.record_observations(ctx, shop.shop_id, models.RecordObservations.model_validate(
                _observations(shop, sizes, rng, t0, span)))
        if n % 5 == 0:  # a bulk repricing of a fifth of the shop's listings
            changes = [{"listing_id": str(x), "price": f"{rng.randrange(2000, 3000) / 100:.2f}"}
                       for x in shop.listings[: sizes.listings // 5]]
            engine.listings.bulk_set_prices(ctx, shop.shop_id, models.BulkSetPrices.model_validate(
                {"changes": changes, "currency": CURRENCY, "source": "experiment", "rule": "bench", "reason": "bench"}))
        n += 1
        events = _head(url)
        progress.update(min(events, sizes.events))
    return events, time.perf_counter() - started


def _head(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]


# -- (b) raw read ---------------------------------------------------------------------------
def raw_read(url: str, page: int) -> tuple[int, float]:
    rows, after = 0, 0
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        while True:
            got = cur.execute("SELECT notification_id, originator_id, originator_version, topic, state"
                              " FROM pricing_events WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
                              [after, page], prepare=True, binary=True).fetchall()
            if not got:
                break
            rows += len(got)
            after = got[-1][0]
    return rows, time.perf_counter() - started


# -- (c) catch-up, (d) rebuild --------------------------------------------------------------
class BackendCpu:
    """CPU seconds used by the projector's database backends, read from /proc while they run
    (only when the database server runs on this machine; None otherwise)."""

    def __init__(self, url: str):
        self.url, self.seen = url, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> BackendCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                           " AND application_name LIKE 'etsypro-projector%%'"):
                    try:
                        self.seen[pid] = cpu_seconds(pid)
                    except OSError:
                        continue
                self._stop.wait(0.05)

    @property
    def seconds(self) -> float | None:
        return sum(self.seen.values()) if self.seen else None


def catch_up(url: str, engine: PricingEngine, sizes: Sizes) -> tuple[int, float, float, float | None]:
    """(events, seconds, CPU seconds of this process, CPU seconds of its database backends)."""
    projector = Projector(url, codec.to_domain_event, batch_size=sizes.batch)
    progress = Progress("catching up", _head(url))
    cpu = time.process_time()
    started = time.perf_counter()
    with BackendCpu(url) as backends:
        events = projector.catch_up(progress.update)
    seconds = time.perf_counter() - started
    projector.close()
    return events, seconds, time.process_time() - cpu, backends.seconds


def rebuild_all(url: str, engine: PricingEngine, sizes: Sizes) -> tuple[int, float]:
    progress = Progress("rebuilding all views", _head(url))
    done = rebuild(url, codec.to_domain_event, ALL, batch_size=sizes.batch,
                   progress=lambda n, total: progress.update(n))
    return done.events, done.seconds


def shops_of(engine: PricingEngine, tenant_id: str) -> list[UUID]:
    reads = ReadSide(engine.core.conninfo, pool_size=1)
    try:
        return reads.shops.shops_of(tenant_id)
    finally:
        reads.close()


# -- (e) live lag ---------------------------------------------------------------------------
def live_lag(url: str, engine: PricingEngine, sizes: Sizes) -> list[float]:
    """Append-to-visible milliseconds: from a command's commit to its last event being in the
    views (the projector commits view rows and position together, so the position tells)."""
    rng, ctx = random.Random(7), _context()
    shop_id = shops_of(engine, ctx.tenant_id)[0]
    listings = [UUID(k) for k in engine.core.recorder.reserved_all(shop_id, "listing")][:50]
    pause = Settings.from_env().follow_pause_s  # paced as `etsypro serve` runs it
    background = InBackground.projector(Projector(url, codec.to_domain_event, batch_size=sizes.batch,
                                                  pause=pause)).start()
    lags: list[float] = []
    interval = 1 / sizes.live_commands_per_s
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            _wait_position(conn, _head(url))
            deadline = time.perf_counter() + sizes.live_seconds
            tick = time.perf_counter()
            n = 0
            while time.perf_counter() < deadline:
                if n % 3 == 2:
                    engine.listings.set_price(ctx, shop_id, rng.choice(listings), models.SetPrice(
                        price=Decimal(rng.randrange(2000, 3000)) / 100, currency=CURRENCY, reason="live"))
                else:
                    engine.listings.record_observations(ctx, shop_id, models.RecordObservations.model_validate({"observations": [
                        {"listing_id": str(rng.choice(listings)), "competitor": f"rival-{k}", "price": "21.00",
                         "currency": CURRENCY, "observed_at": datetime.now(timezone.utc).isoformat()}
                        for k in range(10)]}))
                committed = time.perf_counter()
                target = conn.execute("SELECT max(notification_id) FROM pricing_events").fetchone()[0]
                _wait_position(conn, target)
                lags.append((time.perf_counter() - committed) * 1000)
                n += 1
                tick += interval
                time.sleep(max(0.0, tick - time.perf_counter()))
    finally:
        background.stop()
    return lags


def _wait_position(conn: psycopg.Connection, target: int, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while conn.execute("SELECT min(log_position) FROM analytics.projection_tracking"
                       " WHERE projection = ANY(%s)", [[p.name for p in ALL]]).fetchone()[0] < target:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the projector did not reach position {target}")
        time.sleep(0.001)


# -- (f) queries ----------------------------------------------------------------------------
def query_mix(engine: PricingEngine, rng: random.Random) -> list[tuple[str, dict]]:
    """The analysts' questions: (path under /shops/{shop}/analytics/, params), shop and listing at random."""
    ctx = _context()
    shops = shops_of(engine, ctx.tenant_id)
    listings = {s: [UUID(k) for k in engine.core.recorder.reserved_all(s, "listing")] for s in shops}
    end = START + timedelta(days=Sizes.days)
    mix = []
    for _ in range(400):
        shop = rng.choice(shops)
        listing = str(rng.choice(listings[shop]))
        week_ago = (end - timedelta(days=rng.randrange(7, 50))).isoformat()
        mix.append(rng.choice([
            (shop, "prices", {}),
            (shop, "price-changes", {"listing_id": listing}),
            (shop, "competitor-observations", {"listing_id": listing, "since": week_ago}),
            (shop, "competitor-bands", {"listing_id": listing, "bucket": "day"}),
            (shop, "competitor-bands", {"listing_id": listing, "bucket": "week"}),
            (shop, "competitor-bands", {"bucket": "day", "since": week_ago,
                                        "until": (datetime.fromisoformat(week_ago) + timedelta(days=1)).isoformat()}),
            (shop, "sales", {"listing_id": listing}),
            (shop, "sales-by-listing", {"listing_id": listing, "bucket": "day"}),
            (shop, "sales-by-shop", {"bucket": "day"}),
            (shop, "sales-by-shop", {"bucket": "week"}),
        ]))
    return mix


def query_latencies(url: str, engine: PricingEngine, sizes: Sizes) -> tuple[list[float], list[float]]:
    """(HTTP ms, SQL-only ms) per query of the mix."""
    rng = random.Random(9)
    mix = [query_mix(engine, rng)[i % 400] for i in range(sizes.queries)]
    sql_ms = []
    with psycopg.connect(url) as conn:
        for shop, view, params in mix:
            q = queries.query(view, shop, cursor_key=engine.identity.secrets.cursor_key,
                              **{k: (UUID(v) if k == "listing_id" else
                                     datetime.fromisoformat(v) if k in ("since", "until") else v)
                                 for k, v in params.items()})
            started = time.perf_counter()
            queries.run(conn, q)
            sql_ms.append((time.perf_counter() - started) * 1000)
    engine.identity.use_secret_key(secrets.token_urlsafe(48))
    ctx = _context()
    account = engine.identity.create_account(ctx, f"analyst-{uuid4().hex[:8]}", "service", None, {"service": None})
    key = engine.identity.issue_api_key(ctx, UUID(account.body["account_id"]), ["analytics:read"], None).body["api_key"]
    http_ms = []
    with running(create_app(engine)) as base, httpx.Client(base_url=base, timeout=60,
                                                            headers={"Authorization": f"Bearer {key}"}) as client:
        for shop, view, params in mix[:20]:  # warm up connections and plans
            client.get(f"/shops/{shop}/analytics/{view}", params=params).raise_for_status()
        for shop, view, params in mix:
            started = time.perf_counter()
            client.get(f"/shops/{shop}/analytics/{view}", params=params).raise_for_status()
            http_ms.append((time.perf_counter() - started) * 1000)
    return http_ms, sql_ms


# -- the run ----------------------------------------------------------------------------------
def run(sizes: Sizes) -> dict:
    tune_gc()  # as `etsypro project` and rebuild do
    with fresh_database("etsypro_bench_read") as (url, where):
        engine = PricingEngine(url, pool_size=4)
        try:
            note(f"writing {sizes.events:,} events ...")
            events, write_s = write_log(engine, url, sizes)
            note("raw read ...")
            raw_rows, raw_s = raw_read(url, sizes.batch)
            note("catch-up ...")
            caught, catch_s, catch_cpu, catch_server_cpu = catch_up(url, engine, sizes)
            load = os.getloadavg()[0]
            note("rebuild ...")
            rebuilt, rebuild_s = rebuild_all(url, engine, sizes)
            note("live lag ...")
            lags = live_lag(url, engine, sizes)
            note("queries ...")
            http_ms, sql_ms = query_latencies(url, engine, sizes)
        finally:
            engine.close()
        version = server_version(url)
    return {
        "events": events,
        "raw_read_rows_per_s": round(rate(raw_rows, raw_s)),
        "catchup_events_per_s": round(rate(caught, catch_s)),
        "catchup_s": round(catch_s, 1),
        "catchup_client_cpu_us_per_event": round(catch_cpu / caught * 1e6, 1),
        "catchup_server_cpu_us_per_event": round(catch_server_cpu / caught * 1e6, 1) if catch_server_cpu else None,
        "load_average_catchup": round(load, 1),
        "rebuild_s": round(rebuild_s, 1),
        "rebuild_s_1m": round(rebuild_s * 1_000_000 / rebuilt, 1),
        "live_lag_p50_ms": round(median(lags), 1),
        "live_lag_p95_ms": round(percentile(lags, 95), 1),
        "live_samples": len(lags),
        "query_p50_ms": round(median(http_ms), 1),
        "query_p95_ms": round(percentile(http_ms, 95), 1),
        "query_sql_p95_ms": round(percentile(sql_ms, 95), 1),
        "write_events_per_s": round(rate(events, write_s)),
        "batch": sizes.batch,
        "postgres": f"{version} ({where})",
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


MEANINGS = {
    "events": "events in the log (written through the command handlers)",
    "raw_read_rows_per_s": "baseline: the same events by plain paged SELECT (binary rows, as the projector), no decoding",
    "catchup_events_per_s": "fresh projector, all views, whole log (target >= 30,000)",
    "catchup_s": "",
    "catchup_client_cpu_us_per_event": "CPU of the projector process per event (decode, rows, COPY)",
    "catchup_server_cpu_us_per_event": "CPU of its PostgreSQL backends per event (read, insert, rollups)",
    "load_average_catchup": "1-minute load average after catch-up: other work on the machine slows every figure",
    "rebuild_s": "rebuild of all views: replay into fresh tables, index, swap",
    "rebuild_s_1m": "the same scaled to 1,000,000 events (target <= 60)",
    "live_lag_p50_ms": "",
    "live_lag_p95_ms": "commit to visible in the views, moderate load (target <= 100)",
    "live_samples": "commands measured",
    "query_p50_ms": "",
    "query_p95_ms": "analysts' queries over HTTP on this data (target <= 50)",
    "query_sql_p95_ms": "the same queries without HTTP",
    "write_events_per_s": "building the log through the command handlers",
    "batch": "projector events per transaction",
    "postgres": "",
    "max_rss_mb": "peak memory of this process",
}


def report(figures: dict) -> None:
    print_table("etsypro bench read", [(k, f"{v:,}" if isinstance(v, int) else str(v), MEANINGS.get(k, ""))
                                       for k, v in figures.items()])


def main(args) -> int:
    return show(run(sizes_from(args, Sizes)), args.json, report)
