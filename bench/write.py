"""Write-side benchmark (`etsypro bench write [--json]`).

(a) competitor observations through the command path (pydantic model, handler, aggregate,
    event store with hash chain and audit index): events/s, counting every stored event;
(b) the very same stored-event rows by raw binary COPY into a table shaped like the event store,
    in the same run: rows/s, and (a)/(b);
(c) single price changes over HTTP against a real uvicorn server in its own process, driven by
    concurrent keep-alive clients: requests/s, p50 and p99 latency;
(d) time to load a listing with 100 and with 100,000 observations recorded for it: facts live in
    their own aggregates, so the listing's load time must not grow with them.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from uuid import UUID, uuid4

import httpx
import psycopg

from api.progress import Progress
from api.settings import Settings
from bench.common import (Stopwatch, fresh_database, median, note, percentile, print_table,
                          children, process_tree_cpu, rate, server_version, show, sizes_from)
from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor, ActorKind
from projections.projector import tune_gc

CURRENCY = "GBP"
PRICES = ("21.00", "22.00")  # alternate, so every command really changes the price


@dataclass(frozen=True)
class Sizes:
    ingest_events: int = 200_000  # observations ingested for (a) and copied for (b)
    ingest_clients: int = min(os.cpu_count() or 1, 4)  # concurrent ingesting clients, after a one-client pass
    batch: int = 10_000           # observations per command
    commands: int = 5_000         # measured HTTP price changes for (c)
    warmup_commands: int = 500
    clients: int = 8              # concurrent keep-alive HTTP clients
    listings: int = 400           # listings the HTTP clients spread their changes over
    load_small: int = 100         # observations recorded for the listing in (d), small case
    load_large: int = 100_000     # ... and large case
    load_repeats: int = 15        # loads per case; the median is reported
    workers: int = min(os.cpu_count() or 1, 4)  # server worker processes: one per core (up to 4)
    http_client: str = "raw"      # load generator: "raw" (lean asyncio HTTP/1.1) or "httpx"


# -- setup through the real command path ----------------------------------------------------
def _context(tenant: str) -> CommandContext:
    return CommandContext(actor=Actor("bench", ActorKind.SERVICE), tenant_id=tenant)


def _open_shop(engine: PricingEngine, ctx: CommandContext, name: str) -> UUID:
    result = engine.listings.open_shop(ctx, models.OpenShop(name=name, currency=CURRENCY))
    return UUID(result.body["shop_id"])


def _register_listings(engine: PricingEngine, ctx: CommandContext, shop: UUID, count: int) -> list[UUID]:
    specs = [{"external_id": f"ext-{i}", "sku": f"SKU-{i}", "title": f"Mug {i}", "price": PRICES[0],
              "currency": CURRENCY, "floor": "10.00", "ceiling": "40.00", "cost": "6.00"} for i in range(count)]
    result = engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate({"listings": specs}))
    return [UUID(x["listing_id"]) for x in result.body["listings"]]


def _observations_payload(listings: list[UUID], count: int, start: int) -> dict:
    """The JSON-shaped body a client would send: strings everywhere, validated by pydantic."""
    day = datetime(2026, 11, 25, tzinfo=timezone.utc)
    return {"observations": [
        {"listing_id": str(listings[k % len(listings)]), "competitor": f"etsy:shop/Rival{k % 50}/{k}",
         "price": f"{19 + (k % 500) / 100:.2f}", "currency": CURRENCY,
         "observed_at": (day + timedelta(seconds=k)).isoformat(), "source": "etsy-api"}
        for k in range(start, start + count)]}


def _record(engine, ctx, shop, payload: dict) -> UUID:
    result = engine.listings.record_observations(ctx, shop, models.RecordObservations.model_validate(payload))
    return UUID(result.body["batch_id"])


# -- (a) ingest and (b) raw COPY ---------------------------------------------------------------
def measure_ingest(engine: PricingEngine, sizes: Sizes) -> tuple[dict, list[UUID]]:
    """Half the observations by one client, then half by `ingest_clients` concurrent clients (as a
    server's request threads run them: one client's Python work overlaps another's database work)."""
    ctx = _context(f"bench-ingest-{uuid4().hex[:8]}")
    shop = _open_shop(engine, ctx, "Ingest")
    listings = _register_listings(engine, ctx, shop, 100)
    _record(engine, ctx, shop, _observations_payload(listings, min(sizes.batch, 1000), 0))  # warm-up
    # Request bodies are built up front: building them is the clients' work, not the engine's.
    payloads = [_observations_payload(listings, min(sizes.batch, sizes.ingest_events - start), start)
                for start in range(0, sizes.ingest_events, sizes.batch)]
    half = len(payloads) // 2 or 1
    progress = Progress("(a) ingesting observations", sizes.ingest_events)
    one, batches = _ingest(engine, ctx, shop, payloads[:half], 1, progress)
    many, more = _ingest(engine, ctx, shop, payloads[half:], sizes.ingest_clients, progress)
    return {"ingest_events": one["events"] + many["events"], "ingest_clients": sizes.ingest_clients,
            "ingest_events_per_s": many["events_per_s"] if many["events"] else one["events_per_s"],
            "ingest_events_per_s_one_client": one["events_per_s"]}, batches + more


def _ingest(engine, ctx, shop, payloads: list[dict], clients: int, progress: Progress) -> tuple[dict, list[UUID]]:
    """Record the payloads with `clients` threads; events/s over the wall time of the whole run."""
    pending, batches, lock = list(reversed(payloads)), [], threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                payload = pending.pop()
            batch = _record(engine, ctx, shop, payload)
            with lock:
                batches.append(batch)
                progress.update(progress.done + len(payload["observations"]))

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if len(batches) != len(payloads):
        raise RuntimeError("an ingest client failed (see the traceback above)")
    # One CompetitorPriceObserved per observation + the batch's Received.
    events = sum(len(p["observations"]) + 1 for p in payloads)
    return {"events": events, "seconds": seconds, "events_per_s": rate(events, seconds)}, batches


COPY_TARGET = "bench_copy_events"
COPY_TARGET_DESCRIPTION = ("the event rows (a) stored, into a table with pricing_events' columns, keys and indexes; "
                           "no hash-chain trigger, audit index or lock")


def measure_copy(url: str, batches: list[UUID]) -> dict:
    """Binary COPY of exactly the rows (a) stored, one transaction per command's worth of rows."""
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE {COPY_TARGET} (originator_id uuid NOT NULL, originator_version bigint NOT NULL,"
                     " topic text, state bytea, notification_id bigserial,"
                     " PRIMARY KEY (originator_id, originator_version))")
        conn.execute(f"CREATE UNIQUE INDEX ON {COPY_TARGET} (notification_id)")
        conn.commit()
        watch, rows_copied = Stopwatch(), 0
        progress = Progress("(b) raw COPY of the same rows", len(batches))
        for i, batch in enumerate(batches, 1):
            rows = conn.execute("SELECT originator_id, originator_version, topic, state FROM pricing_events"
                                " WHERE originator_id = %s ORDER BY originator_version", [batch]).fetchall()
            conn.commit()
            with watch:
                with conn.cursor() as curs, curs.copy(
                        f"COPY {COPY_TARGET} (originator_id, originator_version, topic, state)"
                        " FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["uuid", "int8", "text", "bytea"])
                    for row in rows:
                        copy.write_row(row)
                conn.commit()
            rows_copied += len(rows)
            progress.update(i)
        conn.execute(f"DROP TABLE {COPY_TARGET}")
        conn.commit()
    return {"copy_rows": rows_copied, "copy_seconds": watch.seconds,
            "copy_rows_per_s": rate(rows_copied, watch.seconds)}


# -- (c) single commands over HTTP ------------------------------------------------------------
class Server:
    """`etsypro serve` in its own process, on a fresh port, against the benchmark's database."""

    def __init__(self, url: str, workers: int, secret_key: str):
        from api.server import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="etsypro-bench-server-", suffix=".log", delete=False)
        env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_SECRET_KEY": secret_key}
        command = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if workers != 1:
            command += ["--workers", str(workers)]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.tail()}")
            try:
                httpx.get(self.base_url, timeout=1)  # any answer at all: it is serving
                return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return "".join(f.readlines()[-30:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        os.unlink(self.log.name)


def _next_price(changes: dict[UUID, int], listing: UUID) -> str:
    """The price other than the listing's current one (listings start at PRICES[0])."""
    changes[listing] = changes.get(listing, 0) + 1
    return PRICES[changes[listing] % 2]


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client connection over asyncio streams.

    Why not httpx: on a 2-core machine the load generator shares the CPU with the server and
    PostgreSQL, and httpx.AsyncClient spends ~1.5 ms of CPU per request here (this ~0.2 ms), which
    would measure the client more than the server. `--http-client httpx` measures with httpx.
    """

    def __init__(self, base_url: str, headers: dict):
        self.host, _, port = base_url.removeprefix("http://").partition(":")
        self.port = int(port)
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{self.host}:{port}", **headers,
                                                         "Content-Type": "application/json"}.items())

    async def __aenter__(self) -> RawConnection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def put(self, path: str, body: dict) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        self.writer.write(f"PUT {path} HTTP/1.1\r\n{self.head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        status = int((await self.reader.readline()).split()[1])
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("the server answered without Content-Length; this client reads only that")
        return status, await self.reader.readexactly(length)


class HttpxConnection:
    def __init__(self, base_url: str, headers: dict):
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)

    async def __aenter__(self) -> HttpxConnection:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()

    async def put(self, path: str, body: dict) -> tuple[int, bytes]:
        response = await self.client.put(path, json=body)
        return response.status_code, response.content


CLIENTS = {"raw": RawConnection, "httpx": HttpxConnection}


async def _drive(connect, shop: UUID, listings: list[UUID], changes: dict[UUID, int], total: int, clients: int,
                 progress: Progress | None = None) -> tuple[list[float], float]:
    """`clients` keep-alive connections, each changing its own listings' prices one request at a
    time (two clients never race on one listing). Returns (latencies in s, wall seconds)."""
    latencies: list[float] = []

    async def client(n: int) -> None:
        mine = listings[n::clients]
        async with connect() as http:
            for i in range(n, total, clients):
                listing = mine[(i // clients) % len(mine)]
                body = {"price": _next_price(changes, listing), "currency": CURRENCY}
                started = time.perf_counter()
                status, answer = await http.put(f"/shops/{shop}/listings/{listing}/price", body)
                latencies.append(time.perf_counter() - started)
                if status != 200 or not json.loads(answer)["changed"]:
                    raise RuntimeError(f"PUT price answered {status}: {answer[:500]!r}")
                if progress:
                    progress.update(len(latencies))

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, time.perf_counter() - started


def _api_key(engine: PricingEngine, ctx: CommandContext) -> str:
    """A service account's API key, as an integration calling the API would hold."""
    account = engine.identity.create_account(ctx, f"bench-{uuid4().hex[:8]}", "service", None, {"service": None})
    key = engine.identity.issue_api_key(ctx, UUID(account.body["account_id"]), ["prices:write"], None)
    return key.body["api_key"]


def measure_commands(engine: PricingEngine, url: str, sizes: Sizes) -> dict:
    ctx = _context(f"bench-http-{uuid4().hex[:8]}")
    shop = _open_shop(engine, ctx, "HTTP")
    listings = _register_listings(engine, ctx, shop, max(sizes.listings, sizes.clients))
    secret = secrets.token_urlsafe(48)  # the server's signing key; API keys are stored as its digests
    engine.identity.use_secret_key(secret)
    headers = {"Authorization": f"Bearer {_api_key(engine, ctx)}"}
    server_settings = Settings.from_env()  # the server reads the same environment
    server = Server(url, sizes.workers, secret)
    try:
        server.wait_ready()
        # Warm-up: every worker's connection pool, shop cache and code paths.
        changes: dict[UUID, int] = {}
        connect = partial(CLIENTS[sizes.http_client], server.base_url, headers)
        asyncio.run(_drive(connect, shop, listings, changes, min(sizes.warmup_commands, sizes.commands), sizes.clients))
        progress = Progress("(c) HTTP price changes", sizes.commands)
        cpu_before = process_tree_cpu(server.process.pid)
        workers = children(server.process.pid, started_by=b"spawn_main")  # not multiprocessing's resource tracker
        latencies, seconds = asyncio.run(
            _drive(connect, shop, listings, changes, sizes.commands, sizes.clients, progress))
        cpu = {p: t - cpu_before.get(p, 0.0) for p, t in process_tree_cpu(server.process.pid).items()}
    finally:
        server.stop()
    return {**_server_cpu(cpu, workers or [server.process.pid], len(latencies)),
            "command_rps": rate(len(latencies), seconds),
            "command_p50_ms": percentile(latencies, 50) * 1000,
            "command_p99_ms": percentile(latencies, 99) * 1000,
            "command_requests": len(latencies), "command_clients": sizes.clients,
            "command_http_client": sizes.http_client, "server_workers": sizes.workers,
            "server_projector": server_settings.projector, "server_follow_pause_ms": server_settings.follow_pause_ms,
            "server_access_log": server_settings.access_log}


def _server_cpu(cpu: dict[int, float], workers: list[int], requests: int) -> dict:
    """CPU per request of the server's processes (workers, and the parent running the projector
    and the policy), of the workers alone, and how it split over them (connections are handed to
    them in turn, so an even split is expected; an uneven one queues the busier worker's clients)."""
    if not cpu or not requests:
        return {}
    spent = sorted((cpu.get(p, 0.0) for p in workers), reverse=True)
    return {"server_cpu_ms_per_request": sum(cpu.values()) / requests * 1000,
            "server_workers_cpu_ms_per_request": sum(spent) / requests * 1000,
            "server_worker_cpu_shares": [round(t / (sum(spent) or 1), 3) for t in spent]}


# -- (d) load time with many observations ------------------------------------------------------
def _load_ms(engine: PricingEngine, listing: UUID, repeats: int) -> float:
    """Median time of a cold load (from the snapshot and the events after it, as after a restart):
    the aggregate cache is emptied first, or it would answer from memory."""
    engine.core.repository.get(listing)  # warm-up: connection, prepared statements
    times = []
    for _ in range(repeats):
        if engine.core.repository.cache is not None:
            engine.core.repository.cache.clear()
        started = time.perf_counter()
        engine.core.repository.get(listing)
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def measure_load(engine: PricingEngine, sizes: Sizes) -> dict:
    ctx = _context(f"bench-load-{uuid4().hex[:8]}")
    shop = _open_shop(engine, ctx, "Load")
    [listing] = _register_listings(engine, ctx, shop, 1)
    changes: dict[UUID, int] = {}
    for _ in range(3):  # a listing with a little history of its own
        engine.listings.set_price(ctx, shop, listing, models.SetPrice(price=_next_price(changes, listing), currency=CURRENCY))
    _record(engine, ctx, shop, _observations_payload([listing], sizes.load_small, 0))
    small = _load_ms(engine, listing, sizes.load_repeats)
    done = sizes.load_small
    progress = Progress("(d) recording observations for one listing", sizes.load_large)
    while done < sizes.load_large:
        count = min(sizes.batch, sizes.load_large - done)
        _record(engine, ctx, shop, _observations_payload([listing], count, done))
        done += count
        progress.update(done)
    large = _load_ms(engine, listing, sizes.load_repeats)
    return {"load_ms_100": small, "load_ms_100k": large, "load_observations_small": sizes.load_small,
            "load_observations_large": sizes.load_large, "load_repeats": sizes.load_repeats}


# -- the run ------------------------------------------------------------------------------------
HEADLINE = ("ingest_events_per_s", "copy_rows_per_s", "ingest_vs_copy", "command_rps", "command_p50_ms",
            "command_p99_ms", "load_ms_100", "load_ms_100k")


def run(sizes: Sizes = Sizes()) -> dict:
    tune_gc()  # the engine runs here as in a server process, which does the same (api/server.py)
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much
    with fresh_database("etsypro_bench_write") as (url, where):
        engine = PricingEngine(url, pool_size=Settings.from_env().pool_size)  # as a server process's
        try:
            # HTTP first: the server runs the in-process projector (its default), which would
            # otherwise spend the measurement catching up on the ingested observations.
            note("(c) single price changes over HTTP ...")
            commands = measure_commands(engine, url, sizes)
            note("(a) ingesting observations through the command path ...")
            ingest, batches = measure_ingest(engine, sizes)
            note("(b) raw COPY of the same rows ...")
            copy = measure_copy(url, batches)
            note("(d) loading a listing with few and with many observations ...")
            load = measure_load(engine, sizes)
        finally:
            engine.close()
        figures = {**ingest, **copy, **commands, **load,
                   "ingest_vs_copy": ingest["ingest_events_per_s"] / copy["copy_rows_per_s"],
                   "ingest_one_client_vs_copy": ingest["ingest_events_per_s_one_client"] / copy["copy_rows_per_s"],
                   "copy_target": COPY_TARGET_DESCRIPTION, "observations_per_command": sizes.batch,
                   "database": where, "database_version": server_version(url), "cpus": os.cpu_count(),
                   "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    return {**{key: figures.pop(key) for key in HEADLINE}, **figures}


def report(figures: dict) -> None:
    f = figures
    print_table("Write side", [
        ("ingest", f"{f['ingest_events_per_s']:,.0f} events/s",
         f"{f['ingest_clients']} concurrent clients; {f['ingest_events']:,} events in all, "
         f"{f['observations_per_command']:,} observations per command"),
        ("  one client", f"{f['ingest_events_per_s_one_client']:,.0f} events/s", "the first half of the events"),
        ("raw COPY", f"{f['copy_rows_per_s']:,.0f} rows/s", f["copy_target"] + "; one connection"),
        ("ingest / COPY", f"{f['ingest_vs_copy']:.2f}", f"one client: {f['ingest_one_client_vs_copy']:.2f}"),
        ("HTTP price changes", f"{f['command_rps']:,.0f} req/s",
         f"{f['command_requests']:,} requests, {f['command_clients']} keep-alive clients, "
         f"{f['server_workers']} server worker(s), projector {f['server_projector']}"),
        ("  p50 latency", f"{f['command_p50_ms']:.1f} ms", ""),
        ("  p99 latency", f"{f['command_p99_ms']:.1f} ms", ""),
        ("load listing", f"{f['load_ms_100']:.2f} ms", f"{f['load_observations_small']:,} observations recorded for it"),
        ("load listing", f"{f['load_ms_100k']:.2f} ms", f"{f['load_observations_large']:,} observations recorded for it"),
    ])
    print(f"PostgreSQL {f['database_version']} ({f['database']}), {f['cpus']} CPUs, load average "
          f"{f['load_average_before']:.1f} before and {f['load_average_after']:.1f} after the run")


def main(args) -> int:
    return show(run(sizes_from(args, Sizes)), args.json, report)
