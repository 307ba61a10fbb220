"""`etsypro bench ui`: the dashboard's figures against `etsypro serve` in its own process.

(a) board first paint: a shop of 1,000 listings (with competitor bands) loaded in headless
    Chromium (Debian's `chromium`, driven by Playwright): from the start of the navigation to the
    frame that shows the first rows (the page's own performance mark; the rest follow in chunks),
    and to all rows in the page (polled from outside, an upper bound); and the board's one request
    alone, for machines without a browser.
(b) event-to-page latency: 100 SSE clients hold the live stream open (as 100 dashboards would);
    price changes are sent one at a time and each client notes when each arrives. Measured from
    just before the PUT is sent (so the command's own time is included) to the client reading the
    event; the browser's board is timed the same way to the row showing the new price.
(c) server memory per client: the server's resident memory with the clients connected, less
    before, over the number of clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench.common import fresh_database, median, note, percentile, print_table, show, sizes_from
from bench.write import Server
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor

CHROMIUM = Path("/usr/bin/chromium")


@dataclass(frozen=True)
class Sizes:
    listings: int = 1000  # on the board
    clients: int = 100    # open SSE streams
    changes: int = 40     # price changes timed from send to every client
    paints: int = 5       # board reloads timed in the browser


def _seller(url: str, secret: str) -> dict:
    engine = PricingEngine(url, pool_size=1)
    try:
        engine.identity.use_secret_key(secret)
        ctx = CommandContext(actor=Actor("bench"), tenant_id=f"bench-ui-{uuid.uuid4().hex[:8]}")
        username, password = f"seller-{uuid.uuid4().hex[:8]}", f"bench passphrase {uuid.uuid4().hex}"
        engine.identity.create_account(ctx, username, "user", password, {"seller": []})
        return {"tenant": ctx.tenant_id, "username": username, "password": password}
    finally:
        engine.close()


def _shop(http: httpx.Client, listings: int) -> tuple[str, list[str]]:
    shop = http.post("/shops", json={"name": "Bench Ceramics", "currency": "GBP"}).json()["shop_id"]
    specs = [{"external_id": f"ext-{i}", "sku": f"SKU-{i}", "title": f"Mug {i}", "price": "20.00", "currency": "GBP",
              "floor": "10.00", "ceiling": "40.00", "cost": "6.00"} for i in range(listings)]
    ids = [x["listing_id"] for x in http.post(f"/shops/{shop}/listings", json={"listings": specs}).json()["listings"]]
    now = datetime.now(timezone.utc).isoformat()
    observations = [{"listing_id": lid, "competitor": f"c{j}", "price": f"{18 + j}.00", "currency": "GBP", "observed_at": now}
                    for lid in ids for j in range(3)]
    for i in range(0, len(observations), 10_000):
        http.post(f"/shops/{shop}/observations", json={"observations": observations[i:i + 10_000]}).raise_for_status()
    return shop, ids


def _wait_projected(http: httpx.Client, shop: str, listings: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = http.get(f"/shops/{shop}/board").json()["listings"]
        if len(rows) == listings and all(r["band_observations"] for r in rows):
            return
        time.sleep(0.2)
    raise RuntimeError("the board did not fill within the timeout")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Clients:
    """`count` SSE streams on one asyncio loop in a thread; arrivals[(listing, price)] = [times]."""

    def __init__(self, base_url: str, token: str, shop: str, count: int):
        self.base_url, self.token, self.shop, self.count = base_url, token, shop, count
        self.arrivals: dict[tuple[str, str], list[float]] = {}
        self.ready = 0
        self.all_ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)
        self.stop = None

    async def _run(self) -> None:
        self.stop = asyncio.Event()
        limits = httpx.Limits(max_connections=self.count + 5, max_keepalive_connections=self.count + 5)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=None) as http:
            tasks = [asyncio.create_task(self._client(http)) for _ in range(self.count)]
            await self.stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, http: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with http.stream("GET", "/events", params={"shop_id": self.shop}, headers=headers) as response:
            kind = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    if kind == "ready":
                        self.ready += 1
                        if self.ready == self.count:
                            self.all_ready.set()
                elif line.startswith("data: ") and kind == "event":
                    event = json.loads(line[6:])
                    if event["type"] == "Listing.PriceChanged":
                        key = (event["aggregate_id"], event["data"]["price"]["amount"])
                        self.arrivals.setdefault(key, []).append(time.time())

    def start(self, timeout: float = 60) -> None:
        self.thread.start()
        if not self.all_ready.wait(timeout):
            raise RuntimeError(f"only {self.ready} of {self.count} streams opened")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)


def _browser_board(base_url: str, person: dict, shop: str, sizes: Sizes):
    """A signed-in page on the board, with the times of `paints` reloads until all rows show; None without a browser."""
    if not CHROMIUM.exists():
        return None
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        return None
    p = sync_playwright().start()
    browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(base_url)
    for name in ("tenant", "username", "password"):
        page.fill(f"#login-form input[name={name}]", person[name])
    page.click("#login-form button[type=submit]")
    rows = page.locator("#board-body tr")
    expect(rows).to_have_count(sizes.listings, timeout=30_000)
    paints, complete = [], []
    for _ in range(sizes.paints):
        started = time.perf_counter()
        page.goto(f"{base_url}/?{uuid.uuid4().hex[:6]}#/shop/{shop}")  # a fresh load of the page and its data
        expect(rows).to_have_count(sizes.listings, timeout=30_000)  # polled: an upper bound
        complete.append(time.perf_counter() - started)
        # The page's own mark, after the frame that showed the first rows, from the start of the navigation.
        mark = None
        while mark is None:
            mark = page.evaluate("performance.getEntriesByName('board-painted')[0]?.startTime ?? null")
        paints.append(mark / 1000)
    expect(page.locator("#stream-state")).to_have_text("Live: live", timeout=10_000)
    return p, browser, page, expect, paints, complete


def run(sizes: Sizes = Sizes()) -> dict:
    with fresh_database("etsypro_bench_ui") as (url, where):
        secret = secrets.token_urlsafe(32)
        person = _seller(url, secret)
        os.environ.setdefault("ETSYPRO_ANALYZE_EVERY_HOURS", "0")  # no model refresh competing for the CPU
        server = Server(url, 1, secret)
        try:
            server.wait_ready()
            token = httpx.post(f"{server.base_url}/auth/login", json=person).json()["access_token"]
            http = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            note(f"a shop of {sizes.listings} listings ...")
            shop, listings = _shop(http, sizes.listings)
            _wait_projected(http, shop, sizes.listings)
            requests = []
            for _ in range(5):
                started = time.perf_counter()
                http.get(f"/shops/{shop}/board").raise_for_status()
                requests.append(time.perf_counter() - started)
            note("the board in the browser ...")
            browser = _browser_board(server.base_url, person, shop, sizes)
            rss_before = _rss_kb(server.process.pid)
            note(f"{sizes.clients} SSE clients ...")
            clients = Clients(server.base_url, token, shop, sizes.clients)
            clients.start()
            time.sleep(0.5)
            rss_after = _rss_kb(server.process.pid)
            sent, page_latencies = {}, []
            for i in range(sizes.changes):
                listing, price = listings[i % len(listings)], f"{21 + i % 10}.50"
                sent[(listing, price)] = time.time()
                http.put(f"/shops/{shop}/listings/{listing}/price", json={"price": price, "currency": "GBP"}).raise_for_status()
                if browser is not None:
                    page, expect = browser[2], browser[3]
                    expect(page.locator(f"#board-body tr[data-id='{listing}'] td.price")).to_have_text(f"{price} GBP", timeout=10_000)
                    page_latencies.append(time.time() - sent[(listing, price)])
                time.sleep(0.05)
            time.sleep(1.0)
            clients.close()
            latencies = [arrived - sent[key] for key, times in clients.arrivals.items() if key in sent for arrived in times]
            expected = sizes.changes * sizes.clients
            figures = {
                "where": where, "listings": sizes.listings, "clients": sizes.clients, "changes": sizes.changes,
                "board_request_ms_median": round(median(requests) * 1000, 1),
                "board_first_paint_ms_median": round(median(browser[4]) * 1000, 1) if browser else None,
                "board_first_paint_ms_max": round(max(browser[4]) * 1000, 1) if browser else None,
                "board_all_rows_ms_median": round(median(browser[5]) * 1000, 1) if browser else None,
                "event_to_client_ms_p50": round(percentile(latencies, 50) * 1000, 1),
                "event_to_client_ms_p95": round(percentile(latencies, 95) * 1000, 1),
                "event_to_client_ms_max": round(max(latencies) * 1000, 1),
                "events_delivered": len(latencies), "events_expected": expected,
                "event_to_page_ms_p95": round(percentile(page_latencies, 95) * 1000, 1) if page_latencies else None,
                "server_rss_kb_per_client": round((rss_after - rss_before) / sizes.clients, 1),
                "server_rss_mb": round(rss_after / 1024, 1),
            }
            if browser is not None:
                browser[1].close()
                browser[0].stop()
            return figures
        finally:
            server.stop()


def report(f: dict) -> None:
    paint = "no browser" if f["board_first_paint_ms_median"] is None else f"{f['board_first_paint_ms_median']} ms"
    print_table(f"Dashboard ({f['listings']} listings, {f['clients']} SSE clients, {f['changes']} changes; {f['where']})", [
        ("board first paint (median)", paint, "navigation start -> first rows painted, headless Chromium (target <= 1000 ms)"),
        ("board first paint (max)", f"{f['board_first_paint_ms_max']} ms", ""),
        ("board, all rows (median)", f"{f['board_all_rows_ms_median']} ms", "navigation -> all rows in the page (polled from outside)"),
        ("board request (median)", f"{f['board_request_ms_median']} ms", "GET /shops/{id}/board alone"),
        ("event to client p50", f"{f['event_to_client_ms_p50']} ms", "PUT sent -> event read by each SSE client"),
        ("event to client p95", f"{f['event_to_client_ms_p95']} ms", "(target <= 500 ms)"),
        ("event to page p95", f"{f['event_to_page_ms_p95']} ms", "PUT sent -> the browser's row shows the price"),
        ("events delivered", f"{f['events_delivered']}/{f['events_expected']}", "every change to every client"),
        ("server memory per client", f"{f['server_rss_kb_per_client']} KiB", f"RSS delta over the clients (server {f['server_rss_mb']} MiB)"),
    ])


def main(args) -> int:
    return show(run(sizes_from(args, Sizes)), args.json, report)
