"""Command models of switchback price experiments: shapes checked here (pydantic), meaning by the
domain (domain/experiment.py), whose refusals name the same fields."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from commands.models import Amount, BusinessTime, Command, Reason, Text, integer
from domain.experiment import MAX_ARMS, MAX_LISTINGS
from domain.experiment_analysis import FIXED, MAX_CYCLES

EXAMPLE = {"name": "mug +10% test", "listing_ids": ["3f1c2b9e-5d4a-4e6f-8a7b-1c2d3e4f5a6b"],
           "arms": [{"name": "control", "kind": "relative", "value": "0"},
                    {"name": "plus-10", "kind": "relative", "value": "10"}],
           "period_hours": 24, "burn_in_hours": 2, "metric": "profit", "mde": "0.15", "alpha": "0.05",
           "power": "0.8", "mode": "fixed_horizon"}


class ArmSpec(Command):
    name: Annotated[Text, Field(description="The first arm is the control")]
    kind: Literal["absolute", "relative"] = Field(description="absolute: value is the price; relative: a percent change")
    value: Amount


class CreateExperiment(Command):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    name: Text
    listing_ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_LISTINGS)]
    arms: Annotated[list[ArmSpec], Field(min_length=2, max_length=MAX_ARMS)]
    period_hours: integer(ge=1, le=24 * 28)
    burn_in_hours: integer(ge=0, le=24 * 28) = 0
    metric: Literal["profit", "revenue", "units"] = "revenue"
    mode: Literal["fixed_horizon", "msprt"] = Field(FIXED, description="fixed_horizon: no verdict before the "
                                                    "planned horizon; msprt: a sequential test, valid at every look")
    cuped: bool = Field(False, description="Adjust each period by the pre-period's same weekdays (CUPED)")
    mde: Amount = Field(description="Minimum detectable effect, relative to the baseline metric (0.1 = 10 %)")
    alpha: Amount = Decimal("0.05")
    power: Amount = Decimal("0.8")
    horizon_cycles: integer(ge=1, le=MAX_CYCLES) | None = Field(
        None, description="Override the power calculation's horizon (cycles of one period per arm); at least 2")
    seed: integer(ge=0, le=2**31 - 1) | None = Field(None, description="The schedule's seed (default: drawn, then recorded)")
    starts_at: BusinessTime | None = Field(None, description="When the first period starts (default now)")
    reason: Reason = ""


class EndExperiment(Command):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "the seller needs the price back"}]})
    reason: Reason = ""


class Conclude(Command):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "horizon reached"}]})
    reason: Reason = ""

