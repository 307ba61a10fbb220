"""The market simulator (`etsypro simulate`, issue 17 item 5): strategies driven through the real
engine on a simulated clock, scored against the oracle.

The market (drawn from one seed, so a seed is one market): each listing's expected daily units are
    mu_t = base * (price_t / reference)^elasticity * weekday_t * trend_t * (rivals' median_t / reference)^CROSS * shock_t
(constant elasticity, bench/demand_shops.py's weekday shape, a linear trend, log AR(1) shocks), the
units sold are a negative-binomial draw at mu_t (the same uniform per listing and day for every
strategy: common random numbers, so strategies differ by their prices, not their luck), capped by
the stock on hand (restocked to capacity every `RESTOCK_DAYS`). Two rivals per listing: a steady one
(an exogenous random walk around the reference) and a price warrior that undercuts any lower price
of ours by 2 % down to its own floor, and drifts back up when we are dearer.

Every strategy gets its own shop in one fresh database, with the same history (HISTORY_DAYS of
sales at three price levels, so the demand models have something to fit). Each simulated day:
rivals react to our prices in force and are observed (record_observations), the projector and the
repricing policy catch up (its clock is the simulated one), the day's sales are recorded
(record_sales, sold_at in simulated time), and every seventh day the optimisers' shops are refreshed
(`read.model_runs.refresh` with today = the simulated day) and repriced on its new runs
(`act_on_new_runs`). Prices in force are read back from the engine's projection, never assumed.
Optimiser plus experiments first runs a switchback (-10 %, 0, +10 %, a day per arm, 4 balanced
cycles) that the policy's `tend_experiments` applies at the simulated time, concludes it from the
read side's analysis, then hands the shop to the optimise-profit rule, whose refreshes prefer the
experimental elasticities. The scratch database runs with synchronous_commit off (relax_durability).

Business time cannot run ahead of the server's clock (commands/models.py), so the simulated days
are the last `history + days` days before today. Commands take their business time from a
`ClockedContext` (commands/clocked.py), whose `meta()` defaults `occurred_at` to the simulated clock.

The oracle: per listing, the best fixed price in its guardrails knowing the true curve (rivals'
reactions, trend, shocks and stock included, in expectation), then its realised profit on the same
draws. Regret = oracle profit - strategy profit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Callable, Sequence
from uuid import UUID

import numpy as np
import psycopg
import psycopg.conninfo
import psycopg.sql
from scipy.stats import nbinom

import codec
from bench.demand_shops import WEEKDAY_SHAPE
from bench.options import (ALL_STRATEGIES, BEAT_LOWEST, HOLD, OPTIMISER,  # noqa: F401 - the names tests use
                           OPTIMISER_EXPERIMENTS, STRATEGIES)
from commands import models
from commands import experiment_models as em
from commands import rule_models as rm
from commands.clocked import ClockedContext
from commands.engine import PricingEngine
from commands.rollback_guard import ConfigureGuard
from domain.experiment import COMPLETED
from domain.rollback_guard import GuardSettings
from domain.meta import Actor
from projections.projector import Projector
from read import model_runs
from read.experiments import ExperimentReader
from read.side import ReadSide
from streams.repricing import RepricingPolicy, act_on_new_runs, tend_experiments
from streams.rollback_guard import RollbackGuardFollower

OPTIMISERS = (OPTIMISER, OPTIMISER_EXPERIMENTS)
EXPERIMENT_ARMS = (("control", "0"), ("minus-10", "-10"), ("plus-10", "10"))
EXPERIMENT_CYCLES = 4                # cycles of one day per arm: 12 days of switchbacks
HISTORY_DAYS = 56
HISTORY_LEVELS = (0.85, 1.0, 1.15)   # the history's price levels, times the reference
HISTORY_BLOCK_DAYS = 7
CROSS = 0.3                          # demand's response to the rivals' median price
RESTOCK_DAYS = 7
REFRESH_EVERY_DAYS = 7
UNDERCUT = 0.02                      # the price warrior's cut below a lower price of ours
CURRENCY = "GBP"
CENT = Decimal("0.01")
ORACLE_GRID = 121


def money(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(CENT, ROUND_HALF_EVEN)


class Clock:
    """The simulated clock: set by the simulation, read by the commands and the policy."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, day: date, hour: int) -> datetime:
        self.now = datetime.combine(day, time(hour), timezone.utc)
        return self.now


# -- the market: what only the simulation knows ----------------------------------------------------
@dataclass(frozen=True)
class Market:
    seed: int
    days: int
    reference: np.ndarray     # (M,) the reference price, where the listings start
    elasticity: np.ndarray    # (M,) constant own-price elasticity (all elastic: < -1)
    cost: np.ndarray          # (M,) unit cost (Decimal-rounded when it enters the engine)
    base: np.ndarray          # (M,) expected units per day at the reference price
    alpha: np.ndarray         # (M,) NB2 dispersion
    capacity: np.ndarray      # (M,) stock after each restock
    floor: np.ndarray         # (M,) guardrails, the oracle's range too
    ceiling: np.ndarray
    rival_floor: np.ndarray   # (M,) the price warrior's own floor
    demand: np.ndarray        # (M, H+N) weekday x trend x shock: everything but price and rivals
    steady: np.ndarray        # (M, H+N) the steady rival's price
    uniforms: np.ndarray      # (M, H+N) the common random numbers of the units drawn
    history_prices: np.ndarray  # (M, H)

    @property
    def listings(self) -> int:
        return len(self.reference)

    def expected(self, prices: np.ndarray, t: int, rivals: np.ndarray) -> np.ndarray:
        """Expected units on day t (0 = the history's first) at `prices`, with rivals' median `rivals`."""
        own = (prices / self.reference) ** self.elasticity
        return self.base * own * self.demand[:, t] * (rivals / self.reference) ** CROSS

    def units(self, prices: np.ndarray, t: int, rivals: np.ndarray) -> np.ndarray:
        mu = np.maximum(self.expected(prices, t, rivals), 1e-9)
        n = 1.0 / self.alpha
        return nbinom.ppf(self.uniforms[:, t], n, n / (n + mu)).astype(np.int64)


def draw_market(seed: int, listings: int, days: int) -> Market:
    rng = np.random.default_rng(seed)
    m, total = listings, HISTORY_DAYS + days
    reference = np.round(rng.uniform(15, 40, m), 2)
    elasticity = rng.uniform(-3.2, -1.4, m)
    optimum = reference * rng.uniform(0.65, 1.5, m)          # where the true profit peaks
    cost = np.round(optimum * (1 + elasticity) / elasticity, 2)
    base = rng.uniform(4, 20, m)
    shocks = np.zeros((m, total))
    for t in range(1, total):
        shocks[:, t] = 0.4 * shocks[:, t - 1] + rng.normal(0, 0.12, m)
    weekday = np.array([WEEKDAY_SHAPE[t % 7] for t in range(total)])
    trend = 1 + np.outer(rng.uniform(-0.1, 0.1, m), np.linspace(0, 1, total))
    steady = reference[:, None] * np.exp(np.cumsum(rng.normal(0, 0.01, (m, total)), axis=1)) * rng.uniform(0.95, 1.1, (m, 1))
    levels = np.array(HISTORY_LEVELS)
    order = np.array([rng.permutation(len(levels)) for _ in range(m)])
    blocks = np.arange(HISTORY_DAYS) // HISTORY_BLOCK_DAYS
    history = np.round(reference[:, None] * levels[order[:, blocks % len(levels)]], 2)
    floor, ceiling = np.round(cost * 1.05, 2), np.round(reference * 2, 2)
    history = np.clip(history, floor[:, None], ceiling[:, None])
    return Market(seed, days, reference, elasticity, cost, base, rng.uniform(0.05, 0.25, m),
                  np.ceil(base * RESTOCK_DAYS * 1.8).astype(np.int64), floor, ceiling, np.round(cost * 1.1, 2),
                  np.exp(shocks) * weekday * trend, np.round(steady, 2), rng.uniform(0, 1, (m, total)), history)


def warrior_reacts(warrior: np.ndarray, ours: np.ndarray, market: Market) -> np.ndarray:
    """The price warrior: undercut a lower price of ours, drift back towards the reference when dearer."""
    undercut = np.maximum(np.round(ours * (1 - UNDERCUT), 2), market.rival_floor)
    recover = np.minimum(np.round(warrior * 1.03, 2), np.maximum(market.reference, warrior))
    return np.where(ours < warrior, undercut, np.where(ours > warrior * 1.05, recover, warrior))


def rivals_median(warrior: np.ndarray, t: int, market: Market) -> np.ndarray:
    return (warrior + market.steady[:, t]) / 2


# -- the oracle ------------------------------------------------------------------------------------
def oracle_prices(market: Market) -> np.ndarray:
    """Per listing, the fixed price in [floor, ceiling] with the best expected profit over the days."""
    grid = np.round(np.linspace(market.floor, market.ceiling, ORACLE_GRID).T, 2)  # (M, G)
    return grid[np.arange(market.listings), expected_profits(market, grid).argmax(axis=1)]


def expected_profits(market: Market, grid: np.ndarray) -> np.ndarray:
    """Expected profit over the simulated days of each fixed price in `grid` (M, G), the price
    warrior's reactions and the stock included."""
    columns = grid.shape[1]
    profit = np.zeros_like(grid, dtype=float)
    warrior = np.repeat(market.reference[:, None] * 1.02, columns, axis=1)
    stock = np.zeros_like(profit)
    for d in range(market.days):
        t = HISTORY_DAYS + d
        if d % RESTOCK_DAYS == 0:
            stock = np.repeat(market.capacity[:, None].astype(float), columns, axis=1)
        for g in range(columns):
            warrior[:, g] = warrior_reacts(warrior[:, g], grid[:, g], market)
        rivals = (warrior + market.steady[:, t][:, None]) / 2
        mu = (market.base[:, None] * (grid / market.reference[:, None]) ** market.elasticity[:, None]
              * market.demand[:, t][:, None] * (rivals / market.reference[:, None]) ** CROSS)
        sold = np.minimum(mu, stock)
        stock -= sold
        profit += (grid - market.cost[:, None]) * sold
    return profit


# -- what a strategy's shop did --------------------------------------------------------------------
@dataclass
class Ledger:
    """A shop's days: prices in force, units sold, revenue and profit (Decimal)."""

    strategy: str
    prices: list[list[Decimal]] = field(default_factory=list)
    units: list[list[int]] = field(default_factory=list)
    revenue: Decimal = Decimal(0)
    profit: Decimal = Decimal(0)

    def book(self, prices: Sequence[Decimal], units: Sequence[int], costs: Sequence[Decimal]) -> None:
        self.prices.append(list(prices))
        self.units.append([int(u) for u in units])
        for price, sold, cost in zip(prices, units, costs):
            self.revenue += price * sold
            self.profit += (price - cost) * sold


def simulate_fixed(market: Market, prices: np.ndarray, name: str = "oracle") -> Ledger:
    """A fixed price per listing on the market's draws (the oracle's realised profit): no engine."""
    ledger, warrior, costs = Ledger(name), market.reference * 1.02, [money(c) for c in market.cost]
    stock = market.capacity.copy()
    fixed = [money(p) for p in prices]
    for d in range(market.days):
        t = HISTORY_DAYS + d
        if d % RESTOCK_DAYS == 0:
            stock = market.capacity.copy()
        warrior = warrior_reacts(warrior, prices, market)
        sold = np.minimum(market.units(prices, t, rivals_median(warrior, t, market)), stock)
        stock = stock - sold
        ledger.book(fixed, sold, costs)
    return ledger


# -- the engine's side -----------------------------------------------------------------------------
@dataclass
class Shop:
    strategy: str
    shop_id: UUID
    listing_ids: list[UUID]
    ledger: Ledger
    warrior: np.ndarray
    stock: np.ndarray


def relax_durability(url: str) -> None:
    """A simulation's scratch database need not survive a power cut: commits stop waiting for the
    disk (synchronous_commit off), which the engine's one-commit-per-automated-change pays for."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET synchronous_commit TO off").format(psycopg.sql.Identifier(name)))


class Simulation:
    """One market, one shop per strategy, one fresh database (`url`), stepped day by day."""

    def __init__(self, url: str, market: Market, strategies: Sequence[str] = STRATEGIES,
                 progress: Callable[[int, int], None] | None = None, guard: GuardSettings | None = None):
        unknown = [s for s in strategies if s not in ALL_STRATEGIES]
        if unknown or not strategies:
            raise ValueError(f"strategies must be some of {', '.join(ALL_STRATEGIES)}; not {unknown}")
        self.url, self.market, self.strategies, self.progress = url, market, tuple(strategies), progress
        today = datetime.now(timezone.utc).date()
        self.first_day = today - timedelta(days=HISTORY_DAYS + market.days)
        self.clock = Clock(datetime.combine(self.first_day, time(6), timezone.utc))
        relax_durability(url)
        self.engine = PricingEngine(url, pool_size=2)
        self.projector = Projector(url, codec.to_domain_event)
        self.policy = RepricingPolicy(self.engine.rules, url, clock=self.clock)
        self.reads = ReadSide(url, pool_size=1)
        self._reader = psycopg.connect(url, autocommit=True)  # the prices in force, twice a simulated day
        self.experiments: dict[UUID, UUID] = {}  # shop -> its running experiment (optimiser_experiments)
        self.guard = guard  # the rollback guard's settings on every automated shop (None: no guard)
        self.guards = self.engine.guards
        self.follower = RollbackGuardFollower(self.guards, url, self.clock, business_clock=True)
        self.trips: dict[str, int] = {}
        self.ctx = ClockedContext(actor=Actor("simulator"), tenant_id=f"sim-{market.seed}", clock=self.clock)
        self.costs = [money(c) for c in market.cost]
        self.shops: list[Shop] = []
        self.refreshes = 0

    def close(self) -> None:
        self._reader.close()
        self.reads.close()
        self.policy.close()
        self.projector.close()
        self.engine.close()

    def day(self, t: int) -> date:
        return self.first_day + timedelta(days=t)

    # -- set up ------------------------------------------------------------------------------
    def open_shops(self) -> None:
        for strategy in self.strategies:
            shop_id = UUID(self.engine.listings.open_shop(self.ctx, models.OpenShop(
                name=f"simulated {strategy}", currency=CURRENCY)).body["shop_id"])
            specs = [{"external_id": f"sim-{i}", "sku": f"SKU-{i}", "title": f"simulated listing {i}",
                      "price": str(money(self.market.history_prices[i, 0])), "currency": CURRENCY,
                      "floor": str(money(self.market.floor[i])), "ceiling": str(money(self.market.ceiling[i])),
                      "cost": str(self.costs[i])} for i in range(self.market.listings)]
            body = self.engine.listings.register_listings(self.ctx, shop_id, models.RegisterListings.model_validate(
                {"listings": specs})).body
            ids = [UUID(x["listing_id"]) for x in body["listings"]]
            self.shops.append(Shop(strategy, shop_id, ids, Ledger(strategy), self.market.reference * 1.02,
                                   self.market.capacity.copy()))

    def record_history(self) -> None:
        """The same history in every shop: price blocks at three levels, their sales and rivals."""
        m = self.market
        for t in range(HISTORY_DAYS):
            prices = m.history_prices[:, t]
            rivals = (m.reference * 1.02 + m.steady[:, t]) / 2
            units = m.units(prices, t, rivals)
            for shop in self.shops:
                if t > 0 and t % HISTORY_BLOCK_DAYS == 0:
                    self.clock.at(self.day(t), 0)
                    self._set_prices(shop, prices)
                self.clock.at(self.day(t), 8)
                self._observe(shop, t, m.reference * 1.02)
                self.clock.at(self.day(t), 20)
                self._sell(shop, t, [money(p) for p in prices], units)

    def start_strategies(self) -> None:
        # The first refresh comes before any automated change: the guard judges changes by the forecast made before them.
        self._refresh(HISTORY_DAYS)
        self.clock.at(self.day(HISTORY_DAYS), 0)
        self.projector.catch_up()  # the prices in force, for the experiments' arms
        for shop in self.shops:
            if shop.strategy == BEAT_LOWEST:
                self._assign(shop, rm.DefineRule(name="beat the lowest by 1%", kind="beat_lowest", percent="1"))
            elif shop.strategy == OPTIMISER:
                self._assign(shop, rm.DefineRule(name="optimise profit", kind="optimise_profit"))
            elif shop.strategy == OPTIMISER_EXPERIMENTS:
                self._start_experiment(shop)
            if self.guard is not None and shop.strategy != HOLD:
                g = self.guard
                self.guards.configure(self.ctx, shop.shop_id, ConfigureGuard(metric=g.metric, level=g.level,
                                                                             periods=g.periods))
                self.trips[shop.strategy] = 0
        self.projector.catch_up()
        self.policy.catch_up()

    # -- one simulated day ---------------------------------------------------------------------
    def run(self) -> dict:
        self.open_shops()
        self.record_history()
        self.start_strategies()
        for d in range(self.market.days):
            self.step(d)
            if self.progress:
                self.progress(d + 1, self.market.days)
        self.projector.catch_up()
        return self.result()

    def step(self, d: int) -> None:
        t, m = HISTORY_DAYS + d, self.market
        if self.experiments:
            self.clock.at(self.day(t), 0)
            self._tend_experiments()
        self.projector.catch_up()
        before = self._prices_in_force()
        self.clock.at(self.day(t), 8)
        for shop in self.shops:
            shop.warrior = warrior_reacts(shop.warrior, np.array([float(p) for p in before[shop.shop_id]]), m)
            self._observe(shop, t, shop.warrior)
        self.projector.catch_up()
        self.policy.catch_up()
        self.projector.catch_up()
        in_force = self._prices_in_force()
        self.clock.at(self.day(t), 20)
        for shop in self.shops:
            if d % RESTOCK_DAYS == 0:
                shop.stock = m.capacity.copy()
            prices = in_force[shop.shop_id]
            units = np.minimum(m.units(np.array([float(p) for p in prices]), t, rivals_median(shop.warrior, t, m)),
                               shop.stock)
            shop.stock = shop.stock - units
            self._sell(shop, t, prices, units)
            shop.ledger.book(prices, units, self.costs)
        if (d + 1) % REFRESH_EVERY_DAYS == 0:
            self._refresh(t + 1)
        if self.guard is not None:
            self._guard(t)

    def _refresh(self, t: int) -> None:
        """The week's refresh of the optimisers' shops (and, with the guard, every automated shop: the
        guard reads their forecasts): refit on the days before day t, then reprice on the new runs."""
        refreshed = OPTIMISERS if self.guard is None else (BEAT_LOWEST, *OPTIMISERS)
        shops = [s for s in self.shops if s.strategy in refreshed]
        if not shops:
            return
        self.projector.catch_up()
        for shop in shops:
            model_runs.refresh(self.url, shop.shop_id, today=self.day(t))
            self.clock.at(self.day(t - 1), 23)
            act_on_new_runs(self.engine.rules, self.url, shop.shop_id, now=self.clock())
        self.refreshes += 1

    def _guard(self, t: int) -> None:
        """The rollback guard's check the next night (day t complete), at the simulated time."""
        self.projector.catch_up()
        self.clock.at(self.day(t + 1), 1)
        strategy_of = {listing: s.strategy for s in self.shops for listing in s.listing_ids}
        for trip in self.follower.check():
            strategy = strategy_of[UUID(trip["evidence"]["listing_id"])]
            self.trips[strategy] += 1

    # -- optimiser plus experiments -----------------------------------------------------------
    def _start_experiment(self, shop: Shop) -> None:
        """A switchback on every listing whose arms stay in its guardrails: -10 %, 0, +10 % a day each,
        randomised in balanced cycles; the optimiser takes over once it is concluded."""
        prices = self._prices_in_force()[shop.shop_id]
        listings = [i for i, p in zip(shop.listing_ids, prices) if self._arms_fit(shop, i, p)]
        if not listings:
            self._assign(shop, rm.DefineRule(name="optimise profit", kind="optimise_profit"))
            return
        costs = {i: self.costs[shop.listing_ids.index(i)] for i in listings}
        starts = self.clock()
        pre = ExperimentReader(self.reads.pool, self.reads.shops).pre_period(self.ctx, shop.shop_id, costs, "profit",
                                                                           starts.date())
        cmd = em.CreateExperiment(name="simulated switchback", listing_ids=listings, period_hours=24, burn_in_hours=0,
                                  arms=[em.ArmSpec(name=n, kind="relative", value=v) for n, v in EXPERIMENT_ARMS],
                                  metric="profit", mde="0.1", horizon_cycles=EXPERIMENT_CYCLES, seed=self.market.seed,
                                  starts_at=starts)
        created = self.policy.experiments.create(self.ctx, shop.shop_id, cmd, pre, starts)
        self.experiments[shop.shop_id] = UUID(created.body["experiment_id"])

    def _arms_fit(self, shop: Shop, listing_id: UUID, price: Decimal) -> bool:
        i = shop.listing_ids.index(listing_id)
        return price * Decimal("0.9") >= money(self.market.floor[i]) and price * Decimal("1.1") <= money(self.market.ceiling[i])

    def _tend_experiments(self) -> None:
        """The policy's experiment step at the simulated time; a completed experiment is concluded and
        its shop handed to the optimiser (whose next refresh prefers the experimental elasticities)."""
        tend_experiments(self.policy.experiments, self.clock())
        for shop in [s for s in self.shops if s.shop_id in self.experiments]:
            experiment_id = self.experiments[shop.shop_id]
            if self.policy.experiments.experiment(self.ctx, shop.shop_id, experiment_id).status != COMPLETED:
                continue
            self.projector.catch_up()
            found = ExperimentReader(self.reads.pool, self.reads.shops).analysis(self.ctx, shop.shop_id, experiment_id,
                                                                               self.clock())
            conclusion = {k: found[k] for k in ("mode", "verdict", "cycles_complete", "cycles_planned", "arms",
                                                "elasticities", "randomisation", "metric")}
            self.policy.experiments.conclude(self.ctx, shop.shop_id, experiment_id, em.Conclude(), conclusion,
                                             found["verdict_allowed"])
            del self.experiments[shop.shop_id]
            self._assign(shop, rm.DefineRule(name="optimise profit", kind="optimise_profit"))
            self.projector.catch_up()
            self.policy.catch_up()

    # -- commands ------------------------------------------------------------------------------
    def _assign(self, shop: Shop, rule: rm.DefineRule) -> None:
        rule_id = UUID(self.engine.rules.define_rule(self.ctx, shop.shop_id, rule).body["rule_id"])
        self.engine.rules.assign_rule(self.ctx, shop.shop_id, rm.AssignRule(rule_id=rule_id, listing_ids=shop.listing_ids))

    def _set_prices(self, shop: Shop, prices: np.ndarray) -> None:
        changes = [{"listing_id": str(i), "price": str(money(p))} for i, p in zip(shop.listing_ids, prices)]
        self.engine.listings.bulk_set_prices(self.ctx, shop.shop_id, models.BulkSetPrices.model_validate(
            {"changes": changes, "currency": CURRENCY, "reason": "simulated history"}))

    def _observe(self, shop: Shop, t: int, warrior: np.ndarray) -> None:
        at = self.clock()
        observations = [models.ObservationIn(listing_id=listing, competitor=name, price=money(price), currency=CURRENCY,
                                             observed_at=at, source="simulator")
                        for i, listing in enumerate(shop.listing_ids)
                        for name, price in (("warrior", warrior[i]), ("steady", self.market.steady[i, t]))]
        self.engine.listings.record_observations(self.ctx, shop.shop_id, models.RecordObservations(observations=observations))

    def _sell(self, shop: Shop, t: int, prices: Sequence[Decimal], units: np.ndarray) -> None:
        at = self.clock()
        sales = [models.SaleIn(listing_id=listing, quantity=int(units[i]), unit_price=prices[i], currency=CURRENCY,
                               order_id=f"{shop.strategy}-{t}-{i}", transaction_id=f"{shop.strategy}-{t}-{i}", sold_at=at)
                 for i, listing in enumerate(shop.listing_ids) if units[i] > 0]
        if sales:
            self.engine.listings.record_sales(self.ctx, shop.shop_id, models.RecordSales(sales=sales))

    def _prices_in_force(self) -> dict[UUID, list[Decimal]]:
        """Each shop's prices as the engine's projection has them, in the market's listing order."""
        rows = self._reader.execute("SELECT listing_id, price FROM analytics.current_prices WHERE shop_id = ANY(%s)",
                                    [[s.shop_id for s in self.shops]]).fetchall()
        price = dict(rows)
        return {s.shop_id: [price[i] for i in s.listing_ids] for s in self.shops}

    # -- the score -----------------------------------------------------------------------------
    def result(self) -> dict:
        oracle = simulate_fixed(self.market, oracle_prices(self.market))
        return score(self.market, oracle, [s.ledger for s in self.shops]) | {
            "shops": {s.strategy: str(s.shop_id) for s in self.shops}, "refreshes": self.refreshes,
            **({} if self.guard is None else {"guard": self.guard.as_dict(), "guard_trips": self.trips})}


def score(market: Market, oracle: Ledger, ledgers: Sequence[Ledger]) -> dict:
    def ratio(a: Decimal, b: Decimal) -> float | None:
        return None if b <= 0 else round(float(a / b), 4)

    strategies = {}
    for ledger in ledgers:
        strategies[ledger.strategy] = {
            "profit": str(ledger.profit), "revenue": str(ledger.revenue),
            "oracle_profit_ratio": ratio(ledger.profit, oracle.profit),
            "oracle_revenue_ratio": ratio(ledger.revenue, oracle.revenue),
            "regret": str(oracle.profit - ledger.profit),
            "units": sum(map(sum, ledger.units)),
        }
    return {"seed": market.seed, "days": market.days, "listings": market.listings,
            "oracle": {"profit": str(oracle.profit), "revenue": str(oracle.revenue), "units": sum(map(sum, oracle.units))},
            "strategies": strategies}


def simulate(url: str, days: int, listings: int, seed: int, strategies: Sequence[str] = STRATEGIES,
             progress: Callable[[int, int], None] | None = None, guard: GuardSettings | None = None) -> dict:
    """Run the market of `seed` through the engine in the database at `url` (fresh and migrated)."""
    market = draw_market(seed, listings, days)
    simulation = Simulation(url, market, strategies, progress, guard)
    try:
        return simulation.run()
    finally:
        simulation.close()


def lines(result: dict, seconds: float | None = None) -> list[str]:
    out = [f"market seed {result['seed']}: {result['listings']} listings x {result['days']} days"
           + (f" in {seconds:.1f}s ({result['days'] / seconds:.2f} simulated days/s)" if seconds else ""),
           f"  {'oracle':<14} profit {result['oracle']['profit']:>12}  revenue {result['oracle']['revenue']:>12}"]
    for name, s in result["strategies"].items():
        pct = "n/a" if s["oracle_profit_ratio"] is None else f"{100 * s['oracle_profit_ratio']:.1f}%"
        trips = result.get("guard_trips", {}).get(name)
        out.append(f"  {name:<14} profit {s['profit']:>12}  revenue {s['revenue']:>12}  {pct:>6} of oracle profit,"
                   f" regret {s['regret']}" + ("" if trips is None else f", rollback guard tripped {trips}x"))
    return out


__all__ = ["simulate", "draw_market", "oracle_prices", "simulate_fixed", "Simulation", "lines"]
