"""`etsypro bench pricing`: how fast rules decide, and how soon an observation moves a price.

- rule_evals_per_s: `evaluate()` (domain/rules.py) on one core, over listings with a dozen
  competitor observations each, cycling through every rule kind with charm rounding and
  exclusions: the pure decision, no I/O. decisions_per_s adds the listing's own judgement
  (guardrails, step, caps: Listing.judge), i.e. everything an automated change decides.
- reprice_p95_ms: on a fresh database, with the in-process projector and repricing policy
  running as `etsypro serve` runs them: from the start of the command that appends a competitor
  observation (engine.listings.record_observations) to the moment the automated price change it causes is
  committed (the policy's result callback, called after the commit). One observation at a time,
  so the figure is latency, not queueing.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import codec
from bench.common import (fresh_database, median, note, percentile, print_table, rate,
                          server_version, show, sizes_from)
from commands import models
from commands import rule_models as m
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.listing import Guardrails, Listing
from domain.meta import Actor, EventMeta
from domain.money import Money
from domain.rules import CompetitorPrice, Rule, evaluate
from api.progress import Progress
from api.settings import Settings
from projections.projector import InBackground, Projector
from streams.repricing import RepricingPolicy


@dataclass(frozen=True)
class Sizes:
    evaluations: int = 200_000  # rule evaluations measured
    competitors: int = 12       # observations per listing in the evaluation bench
    reprices: int = 300         # observations measured end to end
    listings: int = 20          # the observations go round robin over these listings


# -- rule evaluations -------------------------------------------------------------------------
RULES = [
    Rule.define(kind="beat_lowest", currency="GBP", percent="5", rounding=".99", exclude=["rival-3"]),
    Rule.define(kind="beat_lowest", currency="GBP", amount="0.50"),
    Rule.define(kind="match_lowest", currency="GBP", below_floor="ignore_competitor"),
    Rule.define(kind="match_median", currency="GBP", rounding=".95"),
    Rule.define(kind="offset_from_average", currency="GBP", percent="3", direction="below", rounding="whole"),
    Rule.define(kind="cost_plus", currency="GBP", percent="40"),
]


def _market(rng: random.Random, now: datetime, competitors: int) -> list[CompetitorPrice]:
    return [CompetitorPrice(f"{uuid4()}/{i + 2}", f"rival-{i}", Money(Decimal(rng.randrange(1200, 3500)) / 100, "GBP"),
                            now - timedelta(minutes=rng.randrange(1, 3000)))
            for i in range(competitors)]


def _listing(meta: EventMeta) -> Listing:
    guardrails = Guardrails(Money(Decimal("10.00"), "GBP"), Money(Decimal("40.00"), "GBP"), Money(Decimal("8.00"), "GBP"),
                            min_margin=Decimal("20"), max_step_percent=Decimal("10"), max_daily_changes=24,
                            cooldown_minutes=15)
    return Listing.register(uuid4(), "e", "s", "t", "active", Money(Decimal("24.00"), "GBP"), guardrails, meta)


def measure_evaluations(sizes: Sizes) -> dict:
    rng, now = random.Random(7), datetime.now(timezone.utc)
    meta = EventMeta(None, "bench", "user", "manual", "", "c", "c", "c", now)
    listing = _listing(meta)
    facts = listing.pricing_facts()
    markets = [_market(rng, now, sizes.competitors) for _ in range(500)]
    cases = [(RULES[i % len(RULES)], markets[i % len(markets)]) for i in range(sizes.evaluations)]
    started = time.perf_counter()
    for rule, market in cases:
        evaluate(rule, facts, market, now)
    evaluations = time.perf_counter() - started
    started = time.perf_counter()
    for rule, market in cases:
        listing.judge(evaluate(rule, listing.pricing_facts(), market, now), now)
    decisions = time.perf_counter() - started
    return {"rule_evals_per_s": round(rate(sizes.evaluations, evaluations)),
            "decisions_per_s": round(rate(sizes.evaluations, decisions))}


# -- observation -> committed price change ----------------------------------------------------
def measure_reprice(sizes: Sizes, url: str) -> dict:
    engine = PricingEngine(url, pool_size=Settings.from_env().pool_size)  # as a server process's
    try:
        ctx = CommandContext(actor=Actor("bench"), tenant_id=f"bench-pricing-{uuid4().hex[:8]}")
        shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Bench", currency="GBP")).body["shop_id"])
        listings = _listings(engine, ctx, shop, sizes.listings)
        committed: dict[tuple[UUID, str], float] = {}
        arrived = threading.Condition()

        def on_result(trigger, result) -> None:
            with arrived:
                committed[trigger.listing_id, result.outcome] = time.perf_counter()
                arrived.notify_all()

        # Paced as `etsypro serve` runs them (ETSYPRO_FOLLOW_PAUSE_MS, projections.projector.follow_log).
        pause = Settings.from_env().follow_pause_s
        projector = InBackground.projector(Projector(url, codec.to_domain_event, pause=pause)).start()
        policy = RepricingPolicy(engine.rules, url, on_result=on_result, pause=pause)
        repricing = InBackground(policy, "repricing").start()
        try:
            _wait_for(lambda: policy.stats.position > 0 and policy.stats.waiting_for is None, 30)
            latencies, missed = _observe(engine, ctx, shop, listings, sizes, committed, arrived)
        finally:
            repricing.stop()
            projector.stop()
        return {"reprice_p50_ms": round(median(latencies) * 1000, 1),
                "reprice_p95_ms": round(percentile(latencies, 95) * 1000, 1),
                "reprice_p99_ms": round(percentile(latencies, 99) * 1000, 1),
                "reprice_max_ms": round(max(latencies) * 1000, 1),
                "reprices_measured": len(latencies), "reprices_missed": missed, "follow_pause_ms": pause * 1000}
    finally:
        engine.close()


def _listings(engine: PricingEngine, ctx: CommandContext, shop: UUID, count: int) -> list[UUID]:
    specs = [{"external_id": f"b{i}", "sku": f"B{i}", "title": f"Bench {i}", "price": "20.00", "currency": "GBP",
              "floor": "5.00", "ceiling": "60.00"} for i in range(count)]
    registered = engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate({"listings": specs}))
    ids = [UUID(x["listing_id"]) for x in registered.body["listings"]]
    rule = engine.rules.define_rule(ctx, shop, m.DefineRule(name="bench", kind="match_lowest"))
    engine.rules.assign_rule(ctx, shop, m.AssignRule(rule_id=UUID(rule.body["rule_id"]), listing_ids=ids))
    return ids


def _observe(engine, ctx, shop, listings, sizes: Sizes, committed, arrived) -> tuple[list[float], int]:
    """One observation at a time; each moves its listing's price (match_lowest follows it)."""
    latencies, missed = [], 0
    progress = Progress("observation -> price change", sizes.reprices)
    for i in range(sizes.reprices):
        listing = listings[i % len(listings)]
        price = f"{20 + (i % 7) + 1}.{i % 100:02d}"  # never the listing's current price
        command = models.RecordObservations.model_validate({"observations": [{
            "listing_id": str(listing), "competitor": "rival", "price": price, "currency": "GBP",
            "observed_at": datetime.now(timezone.utc).isoformat(), "source": "bench"}]})
        with arrived:
            committed.pop((listing, "changed"), None)
        started = time.perf_counter()
        engine.listings.record_observations(ctx, shop, command)
        with arrived:
            if not arrived.wait_for(lambda: (listing, "changed") in committed, timeout=5.0):
                missed += 1
                continue
            latencies.append(committed[listing, "changed"] - started)
        progress.update(i + 1)
    return latencies, missed


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the repricing policy did not start")
        time.sleep(0.01)


# -- running ----------------------------------------------------------------------------------
def run(sizes: Sizes) -> dict:
    note("measuring rule evaluations...")
    figures = {"sizes": asdict(sizes), **measure_evaluations(sizes)}
    with fresh_database("etsypro_bench_pricing") as (url, where):
        note(f"measuring observation -> price change on {where}...")
        figures.update(measure_reprice(sizes, url))
        figures["database"] = f"{where}, PostgreSQL {server_version(url)}"
    figures["targets"] = {"rule_evals_per_s": ">= 10000", "reprice_p95_ms": "<= 100"}
    return figures


def report(f: dict) -> None:
    print_table("etsypro bench pricing", [
        ("rule_evals_per_s", f"{f['rule_evals_per_s']:,}", f"evaluate() on one core, {f['sizes']['competitors']} "
                                                            "observations per listing (target >= 10,000)"),
        ("decisions_per_s", f"{f['decisions_per_s']:,}", "evaluate() + the listing's guardrails (Listing.judge)"),
        ("reprice_p50_ms", f"{f['reprice_p50_ms']}", "observation command start -> automated change committed"),
        ("reprice_p95_ms", f"{f['reprice_p95_ms']}", "the same, 95th percentile (target <= 100)"),
        ("reprice_p99_ms", f"{f['reprice_p99_ms']}", "the same, 99th percentile"),
        ("reprices_measured", f"{f['reprices_measured']}", f"missed (no change within 5 s): {f['reprices_missed']}"),
        ("database", f["database"], ""),
    ])


def main(args) -> int:
    return show(run(sizes_from(args, Sizes)), args.json, report)
