"""Switchback price experiments: create, list, read, stop, conclude, abandon, and the analysis.

Creating reads the listings' pre-period (read side) for the power calculation, concluding reads
the analysis; the commands (commands/experiments.py) decide with what was read."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import UUID

from fastapi import Response
from fastapi.concurrency import run_in_threadpool

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.routing import resource_router
from api.schemas import LISTING, SHOP, WHEN, Answer, Money, Timestamp, answer, example
from commands import experiment_models as m
from domain.experiment import describe_experiment
from read.experiments import ExperimentReader

router = resource_router(tags=["price experiments"])
READ, WRITE, ANALYTICS = requires("shops:read"), requires("prices:write"), requires("analytics:read")
BASE = "/shops/{shop_id}/experiments"
EXPERIMENT = "0d7c1c9e-2f0b-4a8e-9b1d-6e5f4a3b2c1d"

EXPERIMENT_ANSWER = {
    "experiment_id": EXPERIMENT, "shop_id": SHOP, "name": "mug +10% test", "version": 1, "status": "running",
    "metric": "profit", "mode": "fixed_horizon", "cuped": False,
    "listings": [{"listing_id": LISTING, "base_price": "20.00", "cost": "6.00"}],
    "arms": [{"name": "control", "kind": "relative", "value": "0"}, {"name": "plus-10", "kind": "relative", "value": "10"}],
    "period_hours": 24, "burn_in_hours": 2, "seed": 1234, "schedule": [1, 0, 0, 1], "starts_at": WHEN,
    "ends_at": "2026-12-11T10:00:00+00:00", "period": -1,
    "plan": {"cycles": 2, "baseline": 40.0, "sd_period": 6.1, "mde": 0.15, "alpha": 0.05, "power": 0.8,
             "promised_power": 0.83, "days_observed": 56},
    "paused": None, "ended_at": None, "conclusion": None}


class ListingOfExperiment(Answer):
    listing_id: UUID
    base_price: Money
    cost: Money | None


class ExperimentAnswer(Answer):
    model_config = example(EXPERIMENT_ANSWER)
    experiment_id: UUID
    shop_id: UUID
    name: str
    version: int
    status: str
    metric: str
    mode: str
    listings: list[ListingOfExperiment]
    arms: list[dict]
    period_hours: int
    burn_in_hours: int
    seed: int
    schedule: list[int]
    starts_at: Timestamp
    ends_at: Timestamp
    plan: dict
    paused: dict | None
    conclusion: dict | None


class ExperimentList(Answer):
    model_config = example({"experiments": [EXPERIMENT_ANSWER]})
    experiments: list[ExperimentAnswer]


class ExperimentEnded(ExperimentAnswer):
    model_config = example({**EXPERIMENT_ANSWER, "status": "stopped",
                            "restored": [{"listing_id": LISTING, "price": "20.00"}]})
    restored: list[dict] = []


ANALYSIS_EXAMPLE = {
    "experiment": EXPERIMENT_ANSWER, "mode": "fixed_horizon",
    "peeking": "fixed horizon: the verdict waits for the planned cycles", "verdict_allowed": False,
    "verdict": "no verdict before the planned horizon: 1 of 2 cycles complete", "cycles_complete": 1,
    "cycles_planned": 2, "periods_used": 2, "periods_dropped": [], "control_mean_per_day": 40.0,
    "arms": [{"arm": 1, "name": "plus-10", "effect_per_day": 3.1, "relative": 0.08, "ci95": [None, None],
              "p_value": 1.0, "cycles": 1, "significant": None}],
    "cuped": {"asked": False, "applied": False, "theta": None},
    "randomisation": "exact: all 2 re-randomisations of the arms' places within the 1 cycles", "metric": "profit",
    "plan": EXPERIMENT_ANSWER["plan"],
    "elasticities": [{"listing_id": LISTING, "source": "experiment", "elasticity": None, "ci95": None, "cycles": 1,
                      "refusal": "an arm sold nothing, or too few cycles: no experimental elasticity"}]}


class AnalysisAnswer(Answer):
    model_config = example(ANALYSIS_EXAMPLE)
    mode: str
    peeking: str
    verdict_allowed: bool
    verdict: str
    cycles_complete: int
    cycles_planned: int
    arms: list[dict]
    elasticities: list[dict]


def _reader(reads) -> ExperimentReader:
    return ExperimentReader(reads.pool, reads.shops)


@router.post(BASE, status_code=201, response_model=ExperimentAnswer, dependencies=[WRITE],
             summary="Create a switchback experiment: arms, periods, burn-in, a seeded balanced schedule and a "
                     "horizon from a power calculation on the listings' own history")
async def create_experiment(shop_id: UUID, cmd: m.CreateExperiment, ctx: Context, engine: Engine, reads: Reads,
                            response: Response):
    now = datetime.now(timezone.utc)
    pre_period = await run_in_threadpool(_pre_period, reads, ctx, shop_id, cmd, (cmd.starts_at or now).date())
    return await answer(response, engine.experiments.create, ctx, shop_id, cmd, pre_period, now)


def _pre_period(reads, ctx, shop_id: UUID, cmd: m.CreateExperiment, before) -> list[float]:
    """The listings' metric per day before the start (the power calculation's input); a listing not in
    the shop is left out here and refused by name by the command."""
    listings = reads.aggregates.listings(ctx, shop_id, list(cmd.listing_ids))
    costs = {i: None if x.guardrails.cost is None else x.guardrails.cost.amount for i, x in listings.items()}
    return _reader(reads).pre_period(ctx, shop_id, costs, cmd.metric, before)


@router.get(BASE, response_model=ExperimentList, summary="The shop's experiments", dependencies=[READ])
def list_experiments(shop_id: UUID, ctx: Context, reads: Reads) -> dict:
    return {"experiments": _reader(reads).of_shop(ctx, shop_id)}


@router.get(BASE + "/{experiment_id}", response_model=ExperimentAnswer, summary="An experiment: design, plan, state",
            dependencies=[READ])
def get_experiment(shop_id: UUID, experiment_id: UUID, ctx: Context, reads: Reads) -> dict:
    return describe_experiment(_reader(reads).experiment(ctx, shop_id, experiment_id))


@router.get(BASE + "/{experiment_id}/analysis", response_model=AnalysisAnswer, dependencies=[ANALYTICS],
            summary="The analysis: effect per arm with a 95% interval, a randomisation-inference (or mSPRT) p-value, "
                    "the verdict when the design allows one, and the experimental elasticities")
def analysis(shop_id: UUID, experiment_id: UUID, ctx: Context, reads: Reads) -> dict:
    return _reader(reads).analysis(ctx, shop_id, experiment_id)


@router.post(BASE + "/{experiment_id}/stop", response_model=ExperimentEnded, dependencies=[WRITE],
             summary="Stop switching: the listings still at an arm's price go back to their base price")
async def stop_experiment(shop_id: UUID, experiment_id: UUID, cmd: m.EndExperiment, ctx: Context, engine: Engine,
                          response: Response):
    return await answer(response, engine.experiments.stop, ctx, shop_id, experiment_id, cmd)


@router.post(BASE + "/{experiment_id}/abandon", response_model=ExperimentEnded, dependencies=[WRITE],
             summary="Abandon: end it and conclude nothing")
async def abandon_experiment(shop_id: UUID, experiment_id: UUID, cmd: m.EndExperiment, ctx: Context, engine: Engine,
                             response: Response):
    return await answer(response, engine.experiments.abandon, ctx, shop_id, experiment_id, cmd)


@router.post(BASE + "/{experiment_id}/conclude", response_model=ExperimentEnded, dependencies=[WRITE],
             summary="Conclude: record the analysis and the experimental elasticities (refused before the fixed horizon)")
async def conclude_experiment(shop_id: UUID, experiment_id: UUID, cmd: m.Conclude, ctx: Context, engine: Engine,
                              reads: Reads, response: Response):
    found = await run_in_threadpool(_reader(reads).analysis, ctx, shop_id, experiment_id)
    conclusion = {k: found[k] for k in ("mode", "verdict", "cycles_complete", "cycles_planned", "arms",
                                        "elasticities", "randomisation", "metric")}
    return await answer(response, engine.experiments.conclude, ctx, shop_id, experiment_id, cmd, conclusion,
                        found["verdict_allowed"])
