"""The Etsy connection's processes and settings: `etsypro etsy push|sync`, `etsypro fake-etsy`,
`etsypro bench etsy`, and the Etsy app from ETSYPRO_ETSY_* variables.

    ETSYPRO_ETSY_KEYSTRING, ETSYPRO_ETSY_SHARED_SECRET   the app registered at Etsy (both required)
    ETSYPRO_ETSY_API_URL        default https://api.etsy.com (the fake's URL in tests and the demo)
    ETSYPRO_ETSY_AUTHORIZE_URL  default https://www.etsy.com/oauth/connect
    ETSYPRO_ETSY_REDIRECT_URI   where Etsy sends the seller back: <this API>/marketplace/etsy/callback
    ETSYPRO_ETSY_SYNC_EVERY_MINUTES  how often `serve` syncs every connected shop (default 15; 0: never)
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from uuid import UUID

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.etsy_client import ETSY_API, ETSY_AUTHORIZE, EtsyApp

log = logging.getLogger(__name__)


class EtsySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ETSYPRO_ETSY_", env_ignore_empty=True, frozen=True, extra="ignore")

    keystring: str | None = None
    shared_secret: str | None = None
    api_url: str = ETSY_API
    authorize_url: str | None = None
    redirect_uri: str = "http://127.0.0.1:8000/marketplace/etsy/callback"
    sync_every_minutes: float = Field(15.0, ge=0, le=10080, allow_inf_nan=False)

    def app(self) -> EtsyApp | None:
        if not (self.keystring and self.shared_secret):
            return None
        authorize = self.authorize_url or (ETSY_AUTHORIZE if self.api_url == ETSY_API else f"{self.api_url}/oauth/connect")
        return EtsyApp(self.keystring, self.shared_secret, self.api_url, authorize, self.redirect_uri)


def _engine():
    """A migrated engine with the server's secret key (the tokens are encrypted under it)."""
    import migrations
    from api.server import database_url, use_server_keys
    from api.settings import Settings
    from commands.engine import PricingEngine

    settings = Settings.from_env()
    url = database_url(settings, lambda *_: None)
    migrations.apply(url, log=lambda *_: None)
    engine = PricingEngine(url, pool_size=2)
    use_server_keys(engine, settings, lambda *_: None)
    return engine


_budgets: dict[tuple[str, str], object] = {}
_budgets_lock = threading.Lock()


def app_client(app: EtsyApp):
    """A client of the app whose calls take from the app's one budget in this process (the pusher,
    the sync and the routes together), shared through Redis by every worker when ETSYPRO_REDIS_URL is set."""
    from api.settings import Settings
    from streams.etsy_client import Budget, EtsyClient, SharedPace

    with _budgets_lock:
        budget = _budgets.get((app.keystring, app.api_url))
        if budget is None:
            redis = Settings.from_env().redis_url
            budget = _budgets[app.keystring, app.api_url] = Budget(
                shared=SharedPace(redis, app.keystring) if redis else None)
    return EtsyClient(app, budget)


def _app_or_exit() -> EtsyApp:
    app = EtsySettings().app()
    if app is None:
        print("set ETSYPRO_ETSY_KEYSTRING and ETSYPRO_ETSY_SHARED_SECRET (and ETSYPRO_ETSY_API_URL for the fake)",
              file=sys.stderr)
        raise SystemExit(2)
    return app


class ScheduledSync:
    """Every connected shop synced every `every_s` seconds until stopped: how `serve` runs the sync."""

    def __init__(self, engine, client, every_s: float):
        from streams.etsy_sync import EtsySync

        self.marketplace, self.client, self.every_s = engine.marketplace, client, every_s
        self.syncer = EtsySync(engine.marketplace, client, engine.core.conninfo)

    def run(self, stop: threading.Event) -> None:
        from domain.marketplace import EtsyRefused, EtsyUnavailable

        while not stop.is_set():
            for shop in self.marketplace.connected_shops():
                try:
                    self.syncer.sync_shop(shop)
                except (EtsyRefused, EtsyUnavailable) as e:  # recorded on the shop (last_error); the next round retries
                    log.warning("etsy sync of %s: %s", shop, e)
            stop.wait(self.every_s)

    def close(self) -> None:
        self.client.close()


def in_serve(engine) -> list:
    """The Etsy connection's followers for `serve`, where the repricing policy runs, when an Etsy app is
    configured (none else): the push queue, the pusher and the scheduled sync, as InBackground, not started."""
    from projections.projector import InBackground
    from streams.etsy_push import EtsyPusher, PushQueue

    settings = EtsySettings()
    app = settings.app()
    if app is None:
        return []
    url = engine.core.conninfo
    workers = [InBackground(PushQueue(url), "etsy-queue"),
               InBackground(EtsyPusher(engine.marketplace, app_client(app), url), "etsy-push")]
    if settings.sync_every_minutes > 0:
        workers.append(InBackground(ScheduledSync(engine, app_client(app), settings.sync_every_minutes * 60), "etsy-sync"))
    return workers


def push(args) -> int:
    """Follow the log into the push queue and drain it to Etsy until stopped (SIGTERM/SIGINT)."""
    from streams.etsy_push import EtsyPusher, PushQueue

    app, engine = _app_or_exit(), _engine()
    queue = PushQueue(engine.core.conninfo)
    pusher = EtsyPusher(engine.marketplace, app_client(app), engine.core.conninfo)
    stop = threading.Event()
    follower = threading.Thread(target=queue.run, args=(stop,), daemon=True, name="etsy-queue")
    follower.start()
    try:
        if args.once:
            queue.catch_up()
            while pusher.step():
                pass
            pusher.record_budget()
            print(json.dumps({"pushed": pusher.stats.pushed, "failed": pusher.stats.failed,
                              "retrying": pusher.stats.retrying, "paused": pusher.stats.paused}))
            return 0
        pusher.run(stop)
        return 0
    finally:
        stop.set()
        follower.join(timeout=5)
        queue.close()
        pusher.close()
        engine.close()


def sync(args) -> int:
    """Sync one shop (--shop) or every connected one, once or every --every seconds."""
    from domain.marketplace import EtsyRefused, EtsyUnavailable
    from streams.etsy_sync import EtsySync

    app, engine = _app_or_exit(), _engine()
    marketplace = engine.marketplace
    client = app_client(app)
    syncer = EtsySync(marketplace, client, engine.core.conninfo)
    failed = 0
    try:
        while True:
            for shop in [args.shop] if args.shop else marketplace.connected_shops():
                try:
                    report = syncer.sync_shop(shop)
                    print(json.dumps({"shop": str(shop), **report.__dict__}), flush=True)
                except (EtsyRefused, EtsyUnavailable) as e:
                    failed += 1
                    print(f"etsy sync of {shop}: {e}", file=sys.stderr, flush=True)
            if not args.every:
                return 1 if failed else 0
            time.sleep(args.every)
    finally:
        client.close()
        engine.close()


def fake(args) -> int:
    """Serve the fake Etsy with a shop of demo listings (for the demo and manual trials)."""
    from decimal import Decimal

    import uvicorn

    from fake_etsy import FakeEtsy, FakeEtsyConfig, create_app

    etsy = FakeEtsy(FakeEtsyConfig(keystring=args.keystring, shared_secret=args.shared_secret,
                                   per_second=args.per_second, error_rate=args.error_rate))
    shop = etsy.add_shop(args.currency)
    for i in range(args.listings):
        etsy.add_listing(shop.shop_id, f"Demo listing {i}", f"DEMO-{i}", Decimal("20.00") + i, variations=2 if i % 3 == 0 else 0)
    print(json.dumps({"url": f"http://{args.host}:{args.port}", "etsy_shop_id": shop.shop_id,
                      "keystring": args.keystring, "shared_secret": args.shared_secret}), flush=True)
    uvicorn.run(create_app(etsy), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def bench(args) -> int:
    from bench.etsy import main as run

    return run(as_json=args.json, seconds=args.seconds, per_second=args.per_second, csv_lines=args.csv_lines)


def add_parsers(sub, benches, as_json) -> None:
    """`etsypro etsy push|sync`, `etsypro fake-etsy`, `etsypro bench etsy` (api/cli.py calls this)."""
    e = sub.add_parser("etsy", help="the Etsy connection's workers (ETSYPRO_ETSY_* settings)")
    workers = e.add_subparsers(dest="etsy", required=True)
    p = workers.add_parser("push", help="push accepted price changes to Etsy (follows the log; one per database)")
    p.add_argument("--once", action="store_true", help="push what is queued now, then exit")
    p.set_defaults(func=push)
    s = workers.add_parser("sync", help="sync listings and receipts from Etsy (resumable)")
    s.add_argument("--shop", type=UUID, help="one shop (default: every connected shop)")
    s.add_argument("--every", type=float, default=0, help="repeat every N seconds (default: once)")
    s.set_defaults(func=sync)
    f = sub.add_parser("fake-etsy", help="serve a fake Etsy Open API v3 (tests, the demo)")
    f.add_argument("--host", default="127.0.0.1")
    f.add_argument("--port", type=int, default=8765)
    f.add_argument("--keystring", default="demokeystring")
    f.add_argument("--shared-secret", default="demosharedsecret")
    f.add_argument("--per-second", type=int, default=10)
    f.add_argument("--error-rate", type=float, default=0.0)
    f.add_argument("--listings", type=int, default=12)
    f.add_argument("--currency", default="GBP")
    f.set_defaults(func=fake)
    b = benches.add_parser("etsy", parents=[as_json], help="push_per_s at the fake Etsy's rate limit, sync_receipts_per_s, csv_import_lines_per_s")
    b.add_argument("--seconds", type=float, default=8.0, help="how long the push runs")
    b.add_argument("--per-second", type=int, default=40, help="the fake's rate limit")
    b.add_argument("--csv-lines", type=int, default=100_000, help="order-item lines of the CSV import (0: skip it)")
    b.set_defaults(func=bench)


def demo(app, engine, http, shop: str) -> dict:
    """`etsypro demo`'s Etsy part: a fake Etsy with a few listings, the demo shop connected to it
    through the real PKCE round trip, synced in, a price pushed out and a price changed at Etsy seen
    as drift. `app` is the engine's FastAPI app, served at http's base URL."""
    from decimal import Decimal

    import httpx

    from api.server import running
    from fake_etsy import FakeEtsy, create_app
    from streams.etsy_push import EtsyPusher, PushQueue

    fake = FakeEtsy()
    etsy_shop = fake.add_shop("GBP")
    listings = [fake.add_listing(etsy_shop.shop_id, title, f"ETSY-{i}", Decimal(price), variations=3 if i == 0 else 0)
                for i, (title, price) in enumerate([("Sized stoneware jug", "36.00"), ("Tea bowl", "19.00"),
                                                    ("Butter dish", "27.50")])]
    with running(create_app(fake)) as fake_url:
        app.state.etsy = EtsyApp(fake.config.keystring, fake.config.shared_secret, fake_url, f"{fake_url}/oauth/connect",
                                 f"{str(http.base_url).rstrip('/')}/marketplace/etsy/callback")
        base = f"/shops/{shop}/marketplace/etsy"
        started = _ok(http.post(f"{base}/connect", json={"etsy_shop_id": etsy_shop.shop_id}))
        consent = httpx.get(started["authorize_url"])  # the fake's consent page answers at once
        connected = _ok(httpx.get(consent.headers["location"]))
        synced = _ok(http.post(f"{base}/sync"))
        with engine.core.recorder.datastore.get_connection() as conn:
            jug = conn.execute("SELECT listing_id FROM marketplace.etsy_listings WHERE etsy_listing_id = %s",
                               [listings[0].listing_id]).fetchone()["listing_id"]
        _ok(http.put(f"/shops/{shop}/listings/{jug}/price", json={"price": "38.00", "currency": "GBP",
                                                                    "reason": "pushed to Etsy by the demo"}))
        PushQueue(engine.core.conninfo).catch_up()
        pusher = EtsyPusher(engine.marketplace, app_client(app.state.etsy), engine.core.conninfo)
        try:
            pusher.step()
        finally:
            pusher.close()
        fake.set_price_at_etsy(listings[1].listing_id, Decimal("17.00"))  # the seller edits a price at Etsy
        _ok(http.post(f"{base}/sync"))
        status = _ok(http.get(base))
        drifts = _ok(http.get(f"{base}/drifts"))
        app.state.etsy = None
        return {"etsy_shop_id": etsy_shop.shop_id, "status": connected["status"], "registered": synced["registered"],
                "pushed": pusher.stats.pushed, "jug_at_etsy": str(fake.price_of(listings[0].listing_id)),
                "variations": len(fake.listings[listings[0].listing_id].inventory["products"]),
                "drifts": drifts, "queue": status["queue"]["waiting"]}


def _ok(response) -> dict:
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}")
    return response.json()


def print_demo(s: dict) -> None:
    drift = s["drifts"][0] if s["drifts"] else None
    print(f"  Etsy (a fake Etsy, etsypro fake-etsy): the shop {s['status']} to Etsy shop {s['etsy_shop_id']} through"
          f" OAuth 2.0 + PKCE; {s['registered']} Etsy listings synced in; a price pushed ({s['pushed']}): the jug is"
          f" {s['jug_at_etsy']} GBP at Etsy with its {s['variations']} sizes kept"
          + (f"; a price changed at Etsy ({drift['engine_price']} -> {drift['etsy_price']}) recorded as drift"
             if drift else ""))
