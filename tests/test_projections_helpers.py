"""Helpers shared by the projection tests (no tests here): a realistic mix of events through the real command
handlers, snapshots of the analytics tables, and the invariants every projection must satisfy."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import psycopg

from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands.marketplace_facts import MarketplaceFacts, RecordOrders
from domain.meta import Actor
from projections.registry import ALL

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
VIEW_TABLES = tuple(t for p in ALL for t in p.tables)


@dataclass
class Shop:
    shop_id: UUID
    listings: list[UUID]
    ctx: CommandContext
    sales_seq: int = 0
    orders_seq: int = 0


@dataclass
class Written:
    """What a test wrote, to compare the views with."""
    shops: list[Shop] = field(default_factory=list)
    observations: int = 0
    sale_lines: int = 0
    units: int = 0
    revenue: Decimal = Decimal(0)
    orders: int = 0


def context(tenant: str, actor: str = "pytest") -> CommandContext:
    return CommandContext(actor=Actor(actor), tenant_id=tenant)


def open_shop(engine: PricingEngine, tenant: str, listings: int, written: Written) -> Shop:
    ctx = context(tenant)
    shop_id = UUID(engine.listings.open_shop(ctx, models.OpenShop(name=f"Shop {tenant}", currency="GBP")).body["shop_id"])
    specs = [{"external_id": f"x{i}", "sku": f"S{i}", "title": f"Mug {i}", "price": "20.00", "currency": "GBP",
              "floor": "5.00", "ceiling": "90.00", "cost": "4.00"} for i in range(listings)]
    body = engine.listings.register_listings(ctx, shop_id, models.RegisterListings.model_validate({"listings": specs})).body
    shop = Shop(shop_id, [UUID(x["listing_id"]) for x in body["listings"]], ctx)
    written.shops.append(shop)
    return shop


def observe(engine: PricingEngine, shop: Shop, n: int, rng: random.Random, written: Written) -> None:
    observations = [{"listing_id": str(rng.choice(shop.listings)), "competitor": f"rival-{rng.randrange(5)}",
                     "price": f"{rng.randrange(1500, 2600) / 100:.2f}", "currency": "GBP",
                     "observed_at": (START + timedelta(minutes=rng.randrange(60 * 24 * 21))).isoformat(),
                     "source": "test"} for _ in range(n)]
    engine.listings.record_observations(shop.ctx, shop.shop_id,
                               models.RecordObservations.model_validate({"observations": observations}))
    written.observations += n


def sell(engine: PricingEngine, shop: Shop, n: int, rng: random.Random, written: Written) -> None:
    lines = []
    for _ in range(n):
        shop.sales_seq += 1
        quantity = rng.choice([1, 1, 2, 3, -1])  # some returns
        price = Decimal(rng.randrange(1000, 3000)) / 100
        lines.append({"listing_id": str(rng.choice(shop.listings)), "quantity": quantity, "unit_price": str(price),
                      "currency": "GBP", "order_id": f"o{shop.sales_seq // 2}", "transaction_id": f"t{shop.sales_seq}",
                      "sold_at": (START + timedelta(minutes=rng.randrange(60 * 24 * 21))).isoformat()})
        written.units += quantity
        written.revenue += quantity * price
    engine.listings.record_sales(shop.ctx, shop.shop_id, models.RecordSales.model_validate({"sales": lines}))
    written.sale_lines += n


def order(engine: PricingEngine, shop: Shop, n: int, rng: random.Random, written: Written) -> None:
    """Marketplace orders from a few buyers (pseudonyms), so that some buyers come back."""
    orders = []
    for _ in range(n):
        shop.orders_seq += 1
        orders.append({"order_id": f"r{shop.orders_seq}", "buyer": f"{rng.randrange(8):032x}", "items": rng.randint(1, 3),
                       "placed_at": (START + timedelta(minutes=rng.randrange(60 * 24 * 21))).isoformat(),
                       "currency": "GBP", "order_total": f"{rng.randrange(1000, 9000) / 100:.2f}"})
    MarketplaceFacts(engine.core, engine.listings).record_orders(shop.ctx, shop.shop_id, RecordOrders.model_validate(
        {"orders": orders}))
    written.orders += n


def reprice(engine: PricingEngine, shop: Shop, rng: random.Random) -> None:
    listing = rng.choice(shop.listings)
    engine.listings.set_price(shop.ctx, shop.shop_id, listing, models.SetPrice(
        price=Decimal(rng.randrange(1000, 8000)) / 100, currency="GBP", reason="test", source=rng.choice(
            ["manual", "experiment", "import"]), rule=rng.choice([None, "beat-lowest"])))


def populate(engine: PricingEngine, tenant: str, rng: random.Random, written: Written, listings: int = 12,
             rounds: int = 6, observations: int = 400, sales: int = 60) -> Shop:
    """A shop with listings, price changes (manual, rule, rollbacks), guardrail changes,
    competitor observations and sales with returns, interleaved."""
    shop = open_shop(engine, tenant, listings, written)
    for r in range(rounds):
        observe(engine, shop, observations, rng, written)
        sell(engine, shop, sales, rng, written)
        order(engine, shop, 5, rng, written)
        for _ in range(3):
            reprice(engine, shop, rng)
        engine.listings.bulk_set_prices(shop.ctx, shop.shop_id, models.BulkSetPrices.model_validate({
            "changes": [{"listing_id": str(x), "price": f"{21 + r}.50"} for x in shop.listings[:4]],
            "currency": "GBP", "source": "experiment", "reason": f"round {r}"}))
        engine.listings.set_guardrails(shop.ctx, shop.shop_id, shop.listings[r % listings], models.SetGuardrails(
            floor=Decimal("5.00"), ceiling=Decimal("95.00"), cost=Decimal(4 + r), currency="GBP"))
        if r % 2:
            engine.rollbacks.rollback_listing(shop.ctx, shop.shop_id, shop.listings[0], models.RollbackListing(
                to_version=1, reason="undo"))
    return shop


# -- reading the views ----------------------------------------------------------------------
def snapshot(url: str, tables=VIEW_TABLES) -> dict[str, list[tuple]]:
    """Every row of every view table, in a stable order (all columns, so any difference shows)."""
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM analytics.{t} ORDER BY 1, 2, 3").fetchall() for t in tables}


def wait_caught_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            head = conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]
            positions = [r[0] for r in conn.execute(
                "SELECT log_position FROM analytics.projection_tracking WHERE projection = ANY(%s)",
                [[p.name for p in ALL]])]
            if len(positions) == len(ALL) and min(positions) >= head:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"projections at {positions}, log head {head}")
            time.sleep(0.02)


def _differences(left: str, right: str) -> str:
    """SQL counting the rows in one query's answer and not in the other's, both ways."""
    return f"SELECT count(*) FROM (({left} EXCEPT {right}) UNION ALL ({right} EXCEPT {left})) d"


def _events(*topics: str) -> str:
    return f"SELECT notification_id FROM pricing_events WHERE topic IN ({', '.join(repr(t) for t in topics)})"


_SALES_PER_HOUR = "analytics.bucket('1 hour', sold_at), sum(quantity), sum(revenue), count(*)"

INVARIANTS = {
    # Each fact is one event: the set of positions equals the set of events of that kind.
    "observation facts are exactly the observation events": _differences(
        "SELECT log_position FROM analytics.competitor_observations",
        _events("domain.facts:ObservationBatch.CompetitorPriceObserved")),
    "sale facts are exactly the sale and return events": _differences(
        "SELECT log_position FROM analytics.sales", _events("domain.facts:SalesBatch.Sold", "domain.facts:SalesBatch.Returned")),
    "order rows are exactly the order events": _differences(
        "SELECT log_position FROM analytics.shop_orders", _events("domain.orders:OrderBatch.OrderRecorded")),
    "price change rows are exactly the listing price events": _differences(
        "SELECT log_position FROM analytics.price_changes",
        _events("domain.listing:Listing.Registered", "domain.listing:Listing.PriceChanged")),
    # Rollups count each fact once: they equal the same aggregate computed from the facts.
    "histogram = observation facts counted per listing, hour and price": _differences(
        "SELECT listing_id, bucket, price, shop_id, currency, observations FROM analytics.competitor_price_histogram",
        "SELECT listing_id, analytics.bucket('1 hour', observed_at), price, shop_id, currency, count(*)"
        " FROM analytics.competitor_observations GROUP BY 1, 2, 3, 4, 5"),
    "listing sales rollup = sale facts summed per listing and hour": _differences(
        "SELECT listing_id, bucket, units, revenue, lines FROM analytics.sales_by_listing_hour",
        f"SELECT listing_id, {_SALES_PER_HOUR} FROM analytics.sales GROUP BY 1, 2"),
    "shop sales rollup = sale facts summed per shop and hour": _differences(
        "SELECT shop_id, bucket, units, revenue, lines, units_returned FROM analytics.sales_by_shop_hour",
        f"SELECT shop_id, {_SALES_PER_HOUR}, coalesce(-sum(quantity) FILTER (WHERE quantity < 0), 0)"
        " FROM analytics.sales GROUP BY 1, 2"),
    "every listing is on the price board": """
        SELECT count(*) FROM pricing_events e WHERE e.topic = 'domain.listing:Listing.Registered'
        AND NOT EXISTS (SELECT 1 FROM analytics.current_prices c WHERE c.listing_id = e.originator_id)""",
    "the price board holds each listing's last price event": """
        SELECT count(*) FROM analytics.current_prices c
        WHERE c.price_version <> (SELECT max(p.version) FROM analytics.price_changes p
                                  WHERE p.listing_id = c.listing_id)
           OR c.price <> (SELECT p.price FROM analytics.price_changes p
                          WHERE p.listing_id = c.listing_id ORDER BY p.version DESC LIMIT 1)""",
}


def broken_invariants(url: str) -> dict[str, int]:
    """Invariant -> number of offending rows, for each invariant that does not hold."""
    with psycopg.connect(url) as conn:
        counts = {name: conn.execute(q).fetchone()[0] for name, q in INVARIANTS.items()}
    return {name: n for name, n in counts.items() if n}
