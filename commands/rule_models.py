"""Command models for pricing rules, their assignment, automation limits and the emergency stop.

Shapes are checked here (pydantic); meaning is checked by the domain (domain/rules.py), whose
refusals name the same fields, so a client always learns which input was wrong."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from commands.models import Amount, Command, Currency, Reason, Text, Version, integer, text
from domain.listing import MAX_COOLDOWN_MINUTES
from domain.rules import DEFAULT_MAX_AGE_MINUTES, DEFAULT_MAX_RUN_AGE_HOURS, MAX_LIST, MAX_RUN_AGE_HOURS, MAX_STALE_DAYS

MAX_ASSIGN = 1000  # listings per assignment command: each is loaded and saved in one transaction

Competitors = Annotated[list[Text], Field(max_length=MAX_LIST)]
Why = Annotated[text(500, multiline=True, description="Required: who looks next needs to know why"),
                Field(pattern=r"\S")]

RULE_EXAMPLE = {
    "name": "beat-lowest-5pct", "kind": "beat_lowest", "percent": "5", "rounding": ".99",
    "exclude": ["etsy:shop/KnockOffMugs"], "max_age_minutes": 1440,
    "no_competition": "ceiling", "below_floor": "hold_at_floor"}


class RuleSpec(Command):
    """One version of a rule. `amount`, `percent` and `direction` depend on `kind`:
    beat_lowest and offset_from_average take exactly one of amount or percent (offset also a
    direction); cost_plus takes percent (the target margin, as a share of the price); fixed takes
    amount (the price); match_lowest, match_median and optimise_profit take neither.
    optimise_profit follows the listing's latest recommendation model run (no older than
    `max_run_age_hours`), within the same guardrails, limits and stops as every automated change.
    stock_runway (percent: the step up) raises the price while the stock on hand runs out before its
    restock at the forecast rate; stale_listing (percent: the step down, `days`) lowers it after
    `days` days without a sale (domain/velocity.py)."""

    name: Text
    kind: Literal["beat_lowest", "match_lowest", "match_median", "offset_from_average", "cost_plus", "fixed",
                  "optimise_profit", "stock_runway", "stale_listing"]
    amount: Amount | None = None
    percent: Amount | None = None
    direction: Literal["above", "below"] | None = None
    currency: Currency | None = Field(None, description="Of `amount`; defaults to the shop's currency")
    rounding: Literal["none", ".99", ".95", "whole"] = "none"
    include: Competitors = Field(default_factory=list, description="Only these competitors (empty: all)")
    exclude: Competitors = Field(default_factory=list, description="Never these competitors")
    max_age_minutes: integer(ge=1, le=527_040) | None = Field(
        DEFAULT_MAX_AGE_MINUTES, description="Ignore observations older than this; null: any age")
    no_competition: Literal["hold", "ceiling"] = "hold"
    below_floor: Literal["hold_at_floor", "ignore_competitor"] = "hold_at_floor"
    max_run_age_hours: integer(ge=1, le=MAX_RUN_AGE_HOURS) | None = Field(
        None, description=f"optimise_profit only: hold when the latest model run is older than this"
                          f" (default {DEFAULT_MAX_RUN_AGE_HOURS}); stock_runway: the forecast run")
    days: integer(ge=1, le=MAX_STALE_DAYS) | None = Field(
        None, description="stale_listing only: days without a sale before a step down")
    reason: Reason = ""


class DefineRule(RuleSpec):
    model_config = ConfigDict(json_schema_extra={"examples": [RULE_EXAMPLE]})


class ReviseRule(RuleSpec):
    """The whole new version (what was not sent takes its default, as for a new rule)."""

    expected_version: Version | None = Field(
        None, description="Refuse with 409 unless the rule is still at this version")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**RULE_EXAMPLE, "percent": "3", "reason": "5% was too aggressive", "expected_version": 1}]})


class RetireRule(Command):
    reason: Reason = ""
    expected_version: Version | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "season over", "expected_version": 2}]})


class AssignRule(Command):
    """Point listings at a rule (replacing any other), or at none with `rule_id: null`."""

    rule_id: UUID | None
    listing_ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_ASSIGN)]
    reason: Reason = ""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "rule_id": "5b0f1c4e-2d7a-4f43-9b1e-6c2d8f0a7e11",
        "listing_ids": ["0b9d6b9a-4c2b-4c55-9b7e-2f1f4b7e9a10"], "reason": "winter range"}]})


class AssignOne(Command):
    rule_id: UUID
    reason: Reason = ""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"rule_id": "6de5c311-4088-486a-888a-46c048a919bd", "reason": "try beat-lowest on mugs"}]})


class SetAutomationLimits(Command):
    """Limits on automated changes of one listing (all four replaced; null: no limit).
    Floor and ceiling themselves are set with PUT .../guardrails."""

    min_margin: Amount | None = Field(None, description="Percent of the price kept above cost: derives a floor")
    max_step_percent: Amount | None = Field(None, description="Largest move of one automated change, in percent")
    max_daily_changes: integer(ge=1, le=10_000) | None = Field(
        None, description="Automated changes in any 24 hours")
    cooldown_minutes: integer(ge=0, le=MAX_COOLDOWN_MINUTES) | None = Field(
        None, description="Least time between two automated changes")
    reason: Reason = ""
    expected_version: Version | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "min_margin": "35", "max_step_percent": "10", "max_daily_changes": 6, "cooldown_minutes": 30}]})


class StopAutomation(Command):
    reason: Why

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "supplier price error, investigating"}]})


MAX_DRY_RUN = 1000  # listings per dry run: each is loaded and judged; page through a shop with `after`


class DraftRule(RuleSpec):
    """A rule not saved yet: the same fields as a new rule, the name optional."""

    name: Text = "draft"


class DryRun(Command):
    """What a rule would do to listings now, without doing it: exactly one of `rule_id` (a saved
    rule, at `rule_version` or its latest) or `rule` (a draft). Listings: `listing_ids`, or the
    shop's listings in id order, `limit` at a time after `after`."""

    rule_id: UUID | None = None
    rule_version: integer(ge=1, le=2**31) | None = Field(
        None, description="The saved rule's version (v1 = as defined); default: its latest")
    rule: DraftRule | None = None
    listing_ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_DRY_RUN)] | None = None
    after: UUID | None = Field(None, description="Page through the shop's listings: start after this listing id")
    limit: integer(ge=1, le=MAX_DRY_RUN) = 200

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"rule_id": "5b0f1c4e-2d7a-4f43-9b1e-6c2d8f0a7e11", "rule_version": 2},
        {"rule": {"kind": "beat_lowest", "percent": "3", "rounding": ".99"},
         "listing_ids": ["0b9d6b9a-4c2b-4c55-9b7e-2f1f4b7e9a10"]}]})
