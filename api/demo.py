"""`etsypro demo`: a demo shop created through the real HTTP API, then a summary of what happened."""

from __future__ import annotations

import os
import random
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from decimal import Decimal

from api.etsy import demo as etsy_demo, print_demo as print_etsy_demo
from api.server import build, running
from api.settings import Settings
from commands.context import CommandContext
from domain.errors import Conflict
from domain.meta import Actor

DEMO_TENANT = "demo-tenant"
DEMO_ADMIN = "demo-admin"


def run_demo(settings: Settings) -> int:
    started = time.monotonic()
    engine, app = build(settings)
    with running(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        print(f"engine serving at {base_url}")
        http.headers.update(demo_login(engine, http, "demo-seller", shops=[]))
        summary = populate(http, partner=lambda shop: demo_login(engine, http, "demo-partner", shops=[shop]))
        etsy = etsy_demo(app, engine, http, summary["shop"])  # the demo shop connected to a fake Etsy
        admin_file = demo_admin(engine, http, settings.data_dir / "demo-admin.txt")
    engine.close()
    print_summary(summary, time.monotonic() - started)
    print_etsy_demo(etsy)
    print_sign_in(admin_file)
    return 0


def demo_admin(engine, http: httpx.Client, path: Path) -> Path:
    """An admin of the demo tenant for the newcomer, made once per data directory; its
    credentials are kept in `path`, which only its owner may read."""
    known = read_credentials(path)
    if known and http.post("/auth/login", json=known).status_code == 200:
        return path
    password = secrets.token_urlsafe(24)
    ctx = CommandContext(actor=Actor("demo"), tenant_id=DEMO_TENANT)
    username = DEMO_ADMIN
    try:
        engine.identity.create_account(ctx, username, "user", password, {"admin": None})
    except Conflict:  # the database has one whose password file is gone: make another
        username = f"{DEMO_ADMIN}-{uuid.uuid4().hex[:6]}"
        engine.identity.create_account(ctx, username, "user", password, {"admin": None})
    write_credentials(path, {"tenant": DEMO_TENANT, "username": username, "password": password})
    return path


def read_credentials(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    return dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)


def write_credentials(path: Path, credentials: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{name}: {value}\n" for name, value in credentials.items())


def demo_login(engine, http: httpx.Client, name: str, shops: list[str]) -> dict[str, str]:
    """A seller of the demo tenant, created as an admin would, logged in through the API."""
    username, password = f"{name}-{uuid.uuid4().hex[:6]}", f"demo passphrase {uuid.uuid4().hex}"
    ctx = CommandContext(actor=Actor("demo"), tenant_id=DEMO_TENANT)
    engine.identity.create_account(ctx, username, "user", password, {"seller": shops})
    tokens = call(http, "POST", "/auth/login", json={"tenant": DEMO_TENANT, "username": username, "password": password})
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def call(http: httpx.Client, method: str, path: str, **kwargs) -> dict:
    response = http.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise SystemExit(f"{method} {path} -> {response.status_code}: {response.text}")
    return response.json()


def populate(http: httpx.Client, partner) -> dict:
    rng = random.Random(7)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    shop = call(http, "POST", "/shops", json={"name": f"Hedgerow Ceramics {now:%H%M%S}", "currency": "GBP"})["shop_id"]
    products = [("Blue speckled mug", "24.00"), ("Bud vase", "18.50"), ("Serving bowl", "42.00"),
                ("Espresso cup", "14.00"), ("Planter", "29.00")]
    specs = [{"external_id": f"{1_000_000 + i}", "sku": f"HC-{i:03d}", "title": title, "price": price,
              "currency": "GBP", "floor": pct(price, 70), "ceiling": pct(price, 150), "cost": pct(price, 35)} for i, (title, price) in enumerate(products)]
    listings = [x["listing_id"] for x in call(http, "POST", f"/shops/{shop}/listings", json={"listings": specs})["listings"]]

    # A manual price change, then an "experiment" that lowers every price by 5%.
    call(http, "PUT", f"/shops/{shop}/listings/{listings[0]}/price",
         json={"price": "25.00", "currency": "GBP", "reason": "new glaze"})
    experiment = [{"listing_id": lid, "price": pct(spec["price"], 95)} for lid, spec in zip(listings, specs)]
    call(http, "POST", f"/shops/{shop}/price-changes",
         json={"changes": experiment, "currency": "GBP", "source": "experiment", "reason": "5% off test"})

    # Someone else reprices the bowl after the experiment started: the bulk rollback must skip it.
    call(http, "PUT", f"/shops/{shop}/listings/{listings[2]}/price", headers=partner(shop),
         json={"price": "44.00", "currency": "GBP", "reason": "supplier price rise"})

    observations = [{"listing_id": rng.choice(listings), "competitor": f"etsy:shop/rival{rng.randrange(4)}",
                     "price": f"{rng.uniform(12, 45):.2f}", "currency": "GBP",
                     "observed_at": (now - timedelta(minutes=rng.randrange(600))).isoformat(), "source": "demo"}
                    for _ in range(500)]
    call(http, "POST", f"/shops/{shop}/observations", json={"observations": observations},
         headers={"Idempotency-Key": f"demo-observations-{shop}"})
    sales = [{"listing_id": listings[i % len(listings)], "quantity": 1 + i % 3, "unit_price": specs[i % len(specs)]["price"],
              "currency": "GBP", "order_id": f"order-{i // 2}", "transaction_id": f"txn-{i}",
              "sold_at": (now - timedelta(hours=i)).isoformat()} for i in range(40)]
    sales.append({**sales[0], "quantity": -1, "transaction_id": "txn-0-return"})  # a return
    call(http, "POST", f"/shops/{shop}/sales", json={"sales": sales})

    # Undo the experiment everywhere; then roll the mug back to its very first price.
    bulk = call(http, "POST", f"/shops/{shop}/rollbacks", json={"source": "experiment", "reason": "experiment over"})
    single = call(http, "POST", f"/shops/{shop}/listings/{listings[0]}/rollback",
                  json={"to_version": 1, "reason": "back to launch price"})
    first = call(http, "GET", f"/shops/{shop}/listings/{listings[0]}", params={"version": 1})

    # Automated repricing: the espresso cup follows the cheapest rival minus 5%, within its guardrails.
    rule = call(http, "POST", f"/shops/{shop}/rules",
                json={"name": "beat the cheapest by 5%", "kind": "beat_lowest", "percent": "5", "rounding": ".95"})
    call(http, "PUT", f"/shops/{shop}/listings/{listings[3]}/rule", json={"rule_id": rule["rule_id"]})
    call(http, "POST", f"/shops/{shop}/observations", json={"observations": [{
        "listing_id": listings[3], "competitor": "etsy:shop/KilnCorner", "price": "13.40", "currency": "GBP",
        "observed_at": datetime.now(timezone.utc).isoformat(), "source": "demo"}]})
    explained = wait_for(lambda: call(http, "GET", f"/shops/{shop}/listings/{listings[3]}/explain"),
                         lambda e: Decimal(e["price"]) < Decimal("13.40"))

    wait_for(lambda: call(http, "GET", "/analytics/lag"), lambda lag: _caught_up(lag))
    board = call(http, "GET", f"/shops/{shop}/analytics/prices")
    bands = call(http, "GET", f"/shops/{shop}/analytics/competitor-bands", params={"bucket": "day"})
    revenue = call(http, "GET", f"/shops/{shop}/analytics/sales-by-shop", params={"bucket": "week"})
    verify = call(http, "GET", "/audit/verify")
    return {"shop": shop, "listings": [call(http, "GET", f"/shops/{shop}/listings/{lid}") for lid in listings],
            "observations": len(observations), "sales": len(sales), "bulk": bulk, "single": single,
            "first": first, "explained": explained, "board": board, "bands": bands, "revenue": revenue,
            "verify": verify}


def wait_for(fetch, done, seconds: float = 20.0):
    """The read side and the repricing policy follow the log a moment behind the write."""
    deadline = time.monotonic() + seconds
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _caught_up(lag: dict) -> bool:
    return all(p["events_behind"] == 0 for p in lag["projections"])


def pct(amount: str, percent: int) -> str:
    return str((Decimal(amount) * percent / 100).quantize(Decimal("0.01")))


def print_summary(s: dict, seconds: float) -> None:
    print(f"\nDemo shop {s['shop']} created through the HTTP API in {seconds:.1f}s:")
    print(f"  {len(s['listings'])} listings registered; 1 manual price change; a 5% 'experiment' on all of them")
    print(f"  {s['observations']} competitor observations and {s['sales']} sale lines (one of them a return) recorded")
    print(f"  bulk rollback of the experiment: {len(s['bulk']['compensated'])} compensated, "
          f"{len(s['bulk']['skipped'])} skipped (changed since by someone else)")
    print(f"  '{s['listings'][0]['title']}' rolled back to version 1 (compensating versions {s['single']['compensates']})")
    e = s["explained"]
    print(f"  automated repricing: '{e['title']}' now {e['price']} {e['currency']} by rule "
          f"'beat the cheapest by 5%' after a competitor was seen at 13.40 (GET .../explain has the chain)")
    revenue = sum(Decimal(row["revenue"]) for row in s["revenue"]["items"])
    print(f"  read side: {len(s['board']['items'])} listings on the price board, {len(s['bands']['items'])} daily "
          f"competitor price bands, net revenue {revenue} GBP in {len(s['revenue']['items'])} weekly bucket(s)")
    v = s["verify"]
    state = "intact" if v["ok"] else f"TAMPERED at {v['first_bad_position']}"
    print(f"  audit: hash chain verified up to position {v['last_position']}"
          f" ({v['checked_own']} of its events the demo's): {state}")
    print("\n  price board now:")
    for listing in s["listings"]:
        print(f"    {listing['sku']:8} {listing['title']:20} {listing['price']:>7} {listing['currency']}"
              f"  (v{listing['version']}, floor {listing['floor']}, ceiling {listing['ceiling']})")


def print_sign_in(admin_file: Path) -> None:
    admin = read_credentials(admin_file)
    print("\nSign in to the demo shop as its admin: `./dev serve` (same ETSYPRO_DATA_DIR / ETSYPRO_DATABASE_URL),")
    print(f"  then POST /auth/login {{\"tenant\": \"{admin['tenant']}\", \"username\": \"{admin['username']}\","
          f" \"password\": <the password in {admin_file}>}}")
    print("  and send the access_token it answers as `Authorization: Bearer <token>` (http://127.0.0.1:8000/docs);"
          " or open the dashboard at http://127.0.0.1:8000/ and sign in there with the same three")
