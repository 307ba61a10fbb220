"""Response models: what the API answers, for OpenAPI and for clients.

Every route's answer is built as its response_model (commands through `answer()`, which sets the
status); tests/test_openapi_contract.py checks real answers of every route against the document."""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal
from uuid import UUID

from fastapi import Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from commands.context import Result
from commands.models import MONEY_SCHEMA

# Answers carry money as the decimal string the domain holds, never a float.
Money = Annotated[str, WithJsonSchema(MONEY_SCHEMA)]
# Times are ISO 8601 with an offset, as the engine writes them (kept as text: no re-formatting).
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time",
                                           "examples": ["2026-12-07T10:00:00+00:00"]})]

SHOP, LISTING, RULE, ACCOUNT = ("4c540e6c-a306-493d-8f2e-c4ffdfae895b", "55d95577-b375-455a-8c80-879603d12831",
                                "6de5c311-4088-486a-888a-46c048a919bd", "79b0eeb5-4d40-46fd-a8d3-538124b3d3bd")
WHEN = "2026-12-07T10:00:00+00:00"


class Answer(BaseModel):
    # Fields may be added to an answer without breaking clients (and extra ones are passed through).
    model_config = ConfigDict(extra="allow")


def example(*examples: dict) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


# -- shops and listings ---------------------------------------------------------------------------
class ShopOpened(Answer):
    model_config = example({"shop_id": SHOP, "version": 1})
    shop_id: str
    version: int


class ShopList(Answer):
    model_config = example({"shops": [SHOP]})
    shops: list[UUID]


class Shop(Answer):
    model_config = example({"shop_id": SHOP, "name": "Hedgerow Ceramics", "currency": "GBP", "marketplace": "etsy",
                            "version": 1})
    shop_id: UUID
    name: str
    currency: str
    marketplace: str
    version: int


class ListingRegistered(Answer):
    listing_id: str
    external_id: str
    version: int


class ListingsRegistered(Answer):
    model_config = example({"listings": [{"listing_id": LISTING, "external_id": "etsy-1234", "version": 1}]})
    listings: list[ListingRegistered]


class ListingState(Answer):
    """A listing as of now, a version or a moment (replayed)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "listing_id": LISTING, "shop_id": SHOP, "version": 4, "external_id": "etsy-1234", "sku": "MUG-BLUE",
        "title": "Blue mug", "status": "active", "price": "23.00", "currency": "GBP", "floor": "9.00",
        "ceiling": "41.00", "cost": "5.00", "last_price_change_version": 4, "modified_at": WHEN}]})
    listing_id: UUID
    shop_id: UUID
    version: int
    external_id: str
    sku: str | None
    title: str
    status: str
    price: Money
    currency: str
    floor: Money | None
    ceiling: Money | None
    cost: Money | None


class ListingChanged(Answer):
    model_config = example({"listing_id": LISTING, "version": 2, "changed": True, "price": "21.00", "currency": "GBP"})
    listing_id: str
    version: int
    changed: bool = Field(description="False when the listing already had this value: nothing was appended")
    price: Money
    currency: str


class PricesChanged(Answer):
    model_config = example({"changes": [{"listing_id": LISTING, "version": 2, "changed": True, "price": "21.00",
                                         "currency": "GBP"}]})
    changes: list[ListingChanged]


class BatchRecorded(Answer):
    model_config = example({"batch_id": "c8d2aa3a-1e29-431c-b927-7aff030272e3", "recorded": 250})
    batch_id: str
    recorded: int


# -- rollback -------------------------------------------------------------------------------------
class ListingRolledBack(ListingChanged):
    model_config = example({"listing_id": LISTING, "version": 5, "changed": True, "price": "20.00",
                            "currency": "GBP", "compensates": [2, 4]})
    compensates: list[int] = Field(description="The versions whose changes this undoes")


class SkippedListing(Answer):
    listing_id: UUID
    reason: str


class BulkRolledBack(Answer):
    model_config = example({"compensated": [{"listing_id": LISTING, "version": 5, "changed": True, "price": "20.00",
                                             "currency": "GBP", "compensates": [4]}],
                            "skipped": [{"listing_id": RULE, "reason": "changed since by someone else",
                                         "changed_by": ACCOUNT, "source": "manual", "version": 7, "at": WHEN}]})
    compensated: list[ListingRolledBack]
    skipped: list[SkippedListing] = Field(description="Listings changed since by someone else, or whose earlier price"
                                                      " is outside the current guardrails: never overwritten")


# -- rules and automation -------------------------------------------------------------------------
RULE_ANSWER = {"rule_id": RULE, "shop_id": SHOP, "name": "beat-lowest-5pct", "version": 1, "rule_version": 1,
               "retired": False, "summary": "beat the lowest competitor by 5%", "kind": "beat_lowest",
               "currency": "GBP", "amount": None, "percent": "5", "direction": None, "rounding": ".99",
               "include": [], "exclude": ["etsy:shop/KnockOffMugs"], "max_age_minutes": 1440,
               "no_competition": "ceiling", "below_floor": "hold_at_floor", "modified_at": WHEN}


class Rule(Answer):
    model_config = example(RULE_ANSWER)
    rule_id: UUID
    shop_id: UUID
    name: str
    version: int = Field(description="The aggregate's version (retiring a rule moves it too)")
    rule_version: int = Field(description="The version of the rule's definition")
    retired: bool
    summary: str
    kind: str
    currency: str
    amount: Money | None
    percent: Money | None
    direction: str | None
    rounding: str
    include: list[str]
    exclude: list[str]
    max_age_minutes: int | None
    no_competition: str
    below_floor: str
    modified_at: Timestamp | None


class RuleChanged(Rule):
    model_config = example({**RULE_ANSWER, "version": 2, "rule_version": 2, "changed": True})
    changed: bool


class RuleList(Answer):
    model_config = example({"rules": [RULE_ANSWER]})
    rules: list[Rule]


class AssignedListing(Answer):
    listing_id: UUID
    version: int
    changed: bool


class RuleAssigned(Answer):
    model_config = example({"rule_id": RULE, "listings": [{"listing_id": LISTING, "version": 6, "changed": True}]})
    rule_id: UUID | None = Field(description="null: the listings have no rule now")
    listings: list[AssignedListing]


AUTOMATION_ANSWER = {"listing_id": LISTING, "version": 7, "price": "20.00", "currency": "GBP", "rule_id": RULE,
                     "floor": "9.00", "ceiling": "41.00", "cost": "5.00", "min_margin": None,
                     "max_step_percent": "10", "max_daily_changes": 6, "cooldown_minutes": None,
                     "automated_floor": "9.00", "last_automated_change_at": None}


class ListingAutomation(Answer):
    model_config = example(AUTOMATION_ANSWER)
    listing_id: UUID
    version: int
    price: Money
    currency: str
    rule_id: UUID | None
    floor: Money | None
    ceiling: Money | None
    cost: Money | None
    min_margin: Money | None
    max_step_percent: Money | None
    max_daily_changes: int | None
    cooldown_minutes: int | None
    automated_floor: Money | None
    last_automated_change_at: Timestamp | None


class ListingAutomationChanged(ListingAutomation):
    model_config = example({**AUTOMATION_ANSWER, "changed": True})
    changed: bool


class StopState(Answer):
    stopped: bool
    by: str | None = Field(None, description="Who stopped it (while stopped)")
    reason: str | None = None
    at: Timestamp | None = None


STOPPED = {"stopped": True, "by": ACCOUNT, "reason": "supplier price error", "at": WHEN}


class ShopAutomation(Answer):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [
        {"shop_id": SHOP, "shop": STOPPED, "global": {"stopped": False}, "running": False}]})
    shop_id: UUID
    shop: StopState
    global_: StopState = Field(alias="global")
    running: bool = Field(description="Whether automated repricing acts in this shop now (neither stop is on)")


class ShopAutomationChanged(ShopAutomation):
    model_config = example({"shop_id": SHOP, "shop": STOPPED, "global": {"stopped": False}, "running": False,
                            "changed": True})
    changed: bool


class TenantAutomation(Answer):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [
        {"global": {"stopped": False}, "scope": "tenant", "tenant_id": "acme"}]})
    global_: StopState = Field(alias="global")
    scope: Literal["tenant"]
    tenant_id: str


class TenantAutomationChanged(TenantAutomation):
    model_config = example({"global": STOPPED, "scope": "tenant", "tenant_id": "acme", "changed": True})
    changed: bool


class DryRunListing(Answer):
    listing_id: UUID
    currency: str
    price: Money
    proposed: Money | None
    outcome: str
    price_after: Money | None
    reasons: list[str]


class DryRunReport(Answer):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "rule": {**RULE_ANSWER, "draft": False}, "evaluated_at": WHEN, "automation": {"running": True, "stopped": None},
        "summary": {"changed": 1}, "listings": [{
            "listing_id": LISTING, "sku": "MUG-BLUE", "title": "Blue mug", "status": "active", "currency": "GBP",
            "price": "20.00", "assigned_rule_id": RULE, "uses_this_rule": True, "proposed": "18.99",
            "reasons": ["lowest competitor 19.95"], "observations": [], "outcome": "changed", "price_after": "18.99",
            "clamps": [], "refusal": None, "guardrails": {"floor": "9.00", "ceiling": "41.00"}}],
        "next_after": None}]})
    rule: dict[str, Any]
    evaluated_at: Timestamp
    automation: dict[str, Any]
    summary: dict[str, int] = Field(description="How many listings had each outcome")
    listings: list[DryRunListing]
    next_after: UUID | None


class PriceStep(Answer):
    version: int
    kind: str
    price: Money
    previous: Money | None
    source: str
    reason: str


class Explanation(Answer):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "listing_id": LISTING, "shop_id": SHOP, "sku": "MUG-BLUE", "title": "Blue mug", "status": "active",
        "version": 6, "price": "20.00", "currency": "GBP", "rule_id": RULE, "chain": [{
            "version": 5, "kind": "rollback", "price": "20.00", "previous": "23.00", "source": "rollback",
            "by": {"actor_id": ACCOUNT, "actor_kind": "user"}, "reason": "undo", "compensates": []}]}]})
    listing_id: UUID
    shop_id: UUID
    version: int
    price: Money
    currency: str
    rule_id: UUID | None
    chain: list[PriceStep] = Field(description="The price changes behind the current price, newest first")


# -- analytics ------------------------------------------------------------------------------------
class AnalyticsPage(Answer):
    """A page of a view: its columns (and their PostgreSQL types) and rows keyed by column."""

    model_config = example({"view": "prices", "columns": ["listing_id", "price", "currency"],
                            "types": ["uuid", "numeric", "text"],
                            "items": [{"listing_id": LISTING, "price": "20.00", "currency": "GBP"}],
                            "next_cursor": None})
    view: str
    columns: list[str]
    types: list[str]
    items: list[dict[str, Any]] = Field(description="Numerics (money) as decimal strings, times in ISO 8601")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one")


class FollowerLag(Answer):
    projection: str
    events_behind: int
    seconds_behind: float
    updated_at: Timestamp | None
    parked: int


class Lag(Answer):
    model_config = example({"scope": "your shops", "projector": "inprocess", "repricing": "inprocess",
                            "projections": [{"projection": "prices", "events_behind": 0, "seconds_behind": 0.0,
                                             "updated_at": WHEN, "parked": 0}],
                            "policies": [], "parked": []})
    scope: str
    projector: str = Field(description="inprocess, retrying after an error, or external or off")
    repricing: str
    projections: list[FollowerLag]
    policies: list[FollowerLag]
    parked: list[dict[str, Any]] = Field(description="Your events a follower could not process, with the error")


# -- audit ----------------------------------------------------------------------------------------
EVENT = {"position": 5, "aggregate_id": LISTING, "version": 2, "type": "Listing.PriceChanged",
         "topic": "domain.listing:Listing.PriceChanged", "recorded_at": WHEN,
         "meta": {"shop_id": SHOP, "actor_id": ACCOUNT, "actor_kind": "user", "source": "manual", "reason": "",
                  "command_id": "13cbcdee068148c4bf28cf60ab8a08ad", "correlation_id": "13cbcdee068148c4bf28cf60ab8a08ad",
                  "causation_id": "13cbcdee068148c4bf28cf60ab8a08ad", "occurred_at": WHEN},
         "data": {"price": {"amount": "21.00", "currency": "GBP"}, "previous": {"amount": "20.00", "currency": "GBP"}}}


class AuditEvent(Answer):
    """One stored event: where it is in the log, who and why (meta), and what (data)."""

    model_config = example(EVENT)
    position: int = Field(description="Its place in the global log (commit order)")
    aggregate_id: UUID
    version: int
    type: str
    topic: str
    recorded_at: Timestamp
    meta: dict[str, Any]
    data: dict[str, Any]


class History(Answer):
    events: list[AuditEvent] = Field(description="Oldest first")
    next_after_version: int | None = Field(description="Pass as `after_version` for the next page")
    more: bool


class AggregateHistory(History):
    model_config = example({"aggregate_id": LISTING, "events": [EVENT], "next_after_version": 2, "more": True})
    aggregate_id: UUID


class AccountHistory(History):
    model_config = example({"account_id": ACCOUNT, "events": [{**EVENT, "aggregate_id": ACCOUNT}],
                            "next_after_version": 2, "more": False})
    account_id: UUID


class AuditLog(Answer):
    model_config = example({"events": [EVENT], "next_after": 5, "more": True})
    events: list[AuditEvent]
    next_after: int = Field(description="Pass as `after` for the next page")
    more: bool


class ChainVerified(Answer):
    model_config = example({"ok": True, "first_bad_position": None, "problem": None,
                            "head": "18497ced16fc6b39f9e26ff3e27e6cb74570b79433abc2d70307edc21bb70893",
                            "last_position": 28, "checked_own": 25})
    ok: bool
    first_bad_position: int | None
    problem: str | None
    head: str | None = Field(description="The chain's head hash after the last position checked")
    last_position: int | None
    checked_own: int = Field(description="How many of the events checked the caller may read")


# -- accounts and identity -------------------------------------------------------------------------
ACCOUNT_ANSWER = {"account_id": ACCOUNT, "tenant_id": "acme", "username": "bea", "kind": "user",
                  "roles": {"seller": [SHOP]}, "mfa": "none", "locked_until": None, "api_keys": [], "version": 2}


class Account(Answer):
    model_config = example(ACCOUNT_ANSWER)
    account_id: UUID
    tenant_id: str
    username: str
    kind: Literal["user", "service"]
    roles: dict[str, list[UUID] | None] = Field(description="Role -> the shops it covers; null: the whole tenant")
    mfa: str
    locked_until: Timestamp | None
    api_keys: list[str]
    version: int


class Me(Account):
    model_config = example({**ACCOUNT_ANSWER, "via": "token"})
    via: Literal["token", "api_key"]


class AccountSummary(Answer):
    account_id: UUID
    username: str
    kind: Literal["user", "service"]
    created_at: Timestamp


class AccountList(Answer):
    model_config = example({"accounts": [{"account_id": ACCOUNT, "username": "bea", "kind": "user",
                                          "created_at": WHEN}]})
    accounts: list[AccountSummary]


class ApiKeyIssued(Answer):
    model_config = example({"key_id": RULE, "api_key": "ek_7adLOZGp0csIdOu0GVzFXOOiew8xgPESlS7NAbyDkAg",
                            "prefix": "ek_7adLOZG", "scopes": ["shops:read"], "shops": None})
    key_id: UUID
    api_key: str = Field(description="Shown this once; only a digest is stored")
    prefix: str
    scopes: list[str]
    shops: list[UUID] | None


class ApiKey(Answer):
    key_id: UUID
    prefix: str
    scopes: list[str]
    shops: list[UUID] | None
    created_at: Timestamp
    revoked_at: Timestamp | None


class ApiKeyList(Answer):
    model_config = example({"api_keys": [{"key_id": RULE, "prefix": "ek_7adLOZG", "scopes": ["shops:read"],
                                          "shops": None, "created_at": WHEN, "revoked_at": None}]})
    api_keys: list[ApiKey]


class ApiKeyRevoked(Answer):
    model_config = example({"key_id": RULE, "revoked": True})
    key_id: UUID
    revoked: bool


class SecurityReport(Answer):
    model_config = example({"since": WHEN, "failed_logins": [
        {"account_id": ACCOUNT, "username": "bea", "day": "2026-12-07", "failed": 3, "reasons": {"password": 3}}],
        "lockouts": [{"account_id": ACCOUNT, "username": "bea", "locked_at": WHEN, "failures": 10, "until": WHEN,
                      "still_locked": False}]})
    since: Timestamp
    failed_logins: list[dict[str, Any]] = Field(description="Per account and day: failures and their reasons")
    lockouts: list[dict[str, Any]]


class Tokens(Answer):
    model_config = example({"access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9…", "token_type": "Bearer",
                            "expires_in": 600, "refresh_token": "rt_ddONZc_1WNR71F5VfTScoayFci7_tIdyN_9obfZ_E84"})
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds the access token is valid")
    refresh_token: str = Field(description="Spent by POST /auth/token, which answers a new one")


class MfaRequired(Answer):
    model_config = example({"mfa_required": True, "challenge": "c_4f1d…", "expires_in": 300})
    mfa_required: Literal[True]
    challenge: str = Field(description="Send with a code to POST /auth/login/mfa")
    expires_in: int


class MfaEnrollment(Answer):
    model_config = example({"secret": "QD34EYZOPKETCTGPZXOHWRCIDUSYYNI4",
                            "otpauth_uri": "otpauth://totp/EtsyPro%20Pricing:bea?secret=QD34EYZOPKETCTGPZXOHWRCIDUSYYNI4",
                            "qr_svg": "data:image/svg+xml;charset=utf-8,…", "next": "POST /auth/mfa/confirm with a current code"})
    secret: str
    otpauth_uri: str
    qr_svg: str = Field(description="The otpauth URI as a QR code (an SVG data URI)")
    next: str


class MfaConfirmed(Answer):
    model_config = example({"mfa": "confirmed", "recovery_codes": ["55me-9hfd-eh67", "4mqq-72gz-2rh9"]})
    mfa: Literal["confirmed"]
    recovery_codes: list[str] = Field(description="Single-use; shown this once")


class MfaState(Answer):
    model_config = example({"mfa": "none"})
    mfa: str


class PasswordChanged(Answer):
    model_config = example({"changed": True})
    changed: bool


class LoggedOut(Answer):
    model_config = example({"logged_out": True})
    logged_out: Literal[True]


async def answer(response: Response, handler: Callable[..., Result], *args) -> dict:
    """Run a command's handler (blocking: the database) in the threadpool; its result answers 201
    when it created something, and a replayed answer says so. FastAPI then builds the body as the
    route's response_model, on the event loop (a `def` route would pay a second thread hop)."""
    result = await run_in_threadpool(handler, *args)
    response.status_code = 201 if result.created else 200
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result.body


# -- demand models (read/model_runs.py) -------------------------------------------------------------
MODEL_RUN, ELASTICITY_RUN = "9b2f0d4e-6c1a-4f3e-8a57-2d1c0b9e7f36", "2f6c1d3b-8e4a-4b7f-9c05-1a2b3c4d5e6f"
Day = Annotated[str, WithJsonSchema({"type": "string", "format": "date", "examples": ["2026-12-06"]})]
CAVEAT_EXAMPLE = ("Observational estimate: it reads demand off the prices this listing happened to have, so prices "
                  "that reacted to demand (raised when busy, cut when slow) bias it. Confirm it with a price "
                  "experiment: alternate prices over time (switchbacks) and compare sales.")
RUN_COMMON = {"run_id": MODEL_RUN, "shop_id": SHOP, "listing_id": LISTING, "created_at": WHEN,
              "window": {"first_day": "2026-09-27", "last_day": "2026-12-05"}, "refused": False, "refusal": None,
              "caveat": CAVEAT_EXAMPLE}
REFUSED_ELASTICITY = {**RUN_COMMON, "kind": "elasticity", "method": "refused", "refused": True,
                      "refusal": {"reason": "1 distinct price(s) held 2+ days", "field": "price",
                                  "needs": "at least 3 distinct prices held 2+ days each; this listing has 1"},
                      "estimate": None, "diagnostics": None, "params": {"window_days": 365}}


class ModelWindow(Answer):
    first_day: Day | None = Field(description="The first day of data the model saw (null: none)")
    last_day: Day | None


class ModelRefusal(Answer):
    reason: str = Field(description="Why there is no answer")
    needs: str = Field(description="What data would make an answer possible")
    field: str | None = Field(description="The input the refusal is about (e.g. price), if one")


class ModelRun(Answer):
    """One stored model run: fitted by a refresh (`etsypro analyze refresh`, or `serve` on its
    schedule), never on the request. A refusal is an answer too: `refused` true, with why and what
    data would fix it."""

    run_id: UUID
    shop_id: UUID
    listing_id: UUID | None = Field(description="null: the shop level")
    kind: Literal["elasticity", "forecast", "recommendation"]
    created_at: Timestamp = Field(description="When the refresh that wrote it committed its runs")
    window: ModelWindow
    method: str = Field(description="The model (method, family or forecaster chosen); `refused` when none")
    refused: bool
    refusal: ModelRefusal | None
    diagnostics: dict[str, Any] | None = Field(description="Fit diagnostics or backtest figures; null when refused")
    params: dict[str, Any] = Field(description="The thresholds, horizon and inputs (price, guardrails) it ran with")
    caveat: str = Field(description="What the answer can and cannot tell")


class ElasticityBaseline(Answer):
    reference_price: Money
    units_per_day: float = Field(description="Expected units per day at the reference price")
    units_per_day_ci95: list[float | None] = Field(description="95% interval of that expectation")


class ElasticityEstimate(Answer):
    elasticity: float = Field(description="% change in units for a 1% change in price")
    ci95: list[float] = Field(min_length=2, max_length=2, description="95% interval [low, high]")
    se: float
    label: Literal["own", "partially pooled", "shop pooled", "experiment"] = Field(
        description="own data alone; shrunk toward the shop's pooled estimate (thin listing); the shop's one slope; "
                    "measured by a concluded switchback experiment (preferred to the observational estimate)")
    method: str
    family: str
    n_days: int
    distinct_prices: int
    price_range: list[Money]
    total_units: float
    controls: list[str]
    own_elasticity: float | None = Field(description="Partial pooling: the listing's own estimate before shrinking")
    own_weight: float | None = Field(description="Partial pooling: the share of the answer from its own data")
    baseline: ElasticityBaseline | None
    price_from_sales_days: int = Field(0, description="Days priced at the day's mean paid unit price because no price "
                                                      "change was known then (an imported history): such prices mix "
                                                      "quantity breaks and discounts into the price")


ELASTICITY_ESTIMATE = {"elasticity": -2.27, "ci95": [-2.77, -1.77], "se": 0.25, "label": "own",
                       "method": "count GLM on log price, weekday and trend controls", "family": "Poisson",
                       "n_days": 70, "distinct_prices": 3, "price_range": ["16.00", "24.00"], "total_units": 625.0,
                       "controls": ["weekday_tue", "trend"], "own_elasticity": None, "own_weight": None,
                       "baseline": {"reference_price": "20.00", "units_per_day": 7.6,
                                    "units_per_day_ci95": [6.61, 8.74]}, "price_from_sales_days": 0}


class ElasticityModelRun(ModelRun):
    model_config = example({**RUN_COMMON, "run_id": ELASTICITY_RUN, "kind": "elasticity",
                            "method": "count GLM on log price, weekday and trend controls [Poisson]",
                            "estimate": ELASTICITY_ESTIMATE,
                            "diagnostics": {"pearson_dispersion": 0.82, "converged": True},
                            "params": {"window_days": 365}}, REFUSED_ELASTICITY)
    estimate: ElasticityEstimate | None = Field(description="null when refused")


class UnitsBand(Answer):
    lower: float
    upper: float


class MoneyBand(Answer):
    lower: Money
    upper: Money


class ForecastDay(Answer):
    day: Day
    closed: bool = Field(description="A weekday without activity lately: forecast as 0 units")
    units: float
    units_80: UnitsBand
    units_95: UnitsBand
    revenue: Money
    revenue_80: MoneyBand
    revenue_95: MoneyBand


class ForecastAnswer(Answer):
    model: str = Field(description="The forecaster served: the lowest backtest MASE (seasonal_naive when it wins)")
    tier: str
    mase: float = Field(description="Its rolling-origin backtest MASE")
    mase_ratio_vs_snaive: float | None = Field(description="Its MASE over seasonal-naive's (below 1: better)")
    horizon: int = Field(description="Days in `points` (the `horizon` asked for)")
    backtest_horizon: int
    n_days: int
    n_active_days: int
    unit_price: Money = Field(description="The price revenue is computed at")
    revenue_method: str
    currency: str | None
    notes: list[str]
    points: list[ForecastDay]


class ForecastModelRun(ModelRun):
    model_config = example({**RUN_COMMON, "kind": "forecast", "method": "ets_fixed (light tier)", "forecast": {
        "model": "ets_fixed", "tier": "light", "mase": 0.83, "mase_ratio_vs_snaive": 0.93, "horizon": 1,
        "backtest_horizon": 28, "n_days": 70, "n_active_days": 70, "unit_price": "20.00",
        "revenue_method": "units x the current price", "currency": "GBP", "notes": [],
        "points": [{"day": "2026-12-06", "closed": False, "units": 7.86, "units_80": {"lower": 1.81, "upper": 13.92},
                    "units_95": {"lower": 0.0, "upper": 17.12}, "revenue": "157.23",
                    "revenue_80": {"lower": "36.16", "upper": "278.31"},
                    "revenue_95": {"lower": "0.00", "upper": "342.40"}}]},
        "diagnostics": {"candidates": [{"model": "seasonal_naive", "mase": 0.9, "ratio_vs_snaive": 1.0, "failure": None}]},
        "params": {"horizon": 90}})
    forecast: ForecastAnswer | None = Field(description="null when refused")


class UnitsRange(Answer):
    mean: float
    low: float
    high: float


class MoneyRange(Answer):
    mean: Money
    low: Money
    high: Money


class PriceOutlook(Answer):
    price: Money
    units_per_day: UnitsRange
    revenue_per_day: MoneyRange
    profit_per_day: MoneyRange | None = Field(description="null when the listing's cost is unknown")


class RecommendationAnswer(Answer):
    price: Money = Field(description="The recommended price (the current one when holding)")
    currency: str
    moved: bool
    objective: str = Field(description="profit, or revenue when no cost is known")
    current_price: Money
    current: PriceOutlook
    recommended: PriceOutlook
    gain_per_day: Money = Field(description="At the elasticity's point estimate")
    pessimistic_gain_per_day: Money = Field(description="At the worse end of its 95% interval")
    reasons: list[str]
    elasticity: float
    ci95: list[float] = Field(min_length=2, max_length=2)
    elasticity_run_id: UUID = Field(description="The elasticity run the recommendation stands on")


OUTLOOK = {"price": "20.00", "units_per_day": {"mean": 7.6, "low": 6.61, "high": 8.74},
           "revenue_per_day": {"mean": "152.07", "low": "132.30", "high": "174.79"},
           "profit_per_day": {"mean": "106.45", "low": "92.61", "high": "122.35"}}


class RecommendationModelRun(ModelRun):
    model_config = example({**RUN_COMMON, "kind": "recommendation",
                            "method": "constant-elasticity profit optimum within guardrails", "recommendation": {
                                "price": "18.00", "currency": "GBP", "moved": True, "objective": "profit",
                                "current_price": "20.00", "current": OUTLOOK,
                                "recommended": {**OUTLOOK, "price": "18.00"}, "gain_per_day": "9.39",
                                "pessimistic_gain_per_day": "4.12",
                                "reasons": ["gains at both ends of the interval (-2.77, -1.77)"],
                                "elasticity": -2.27, "ci95": [-2.77, -1.77], "elasticity_run_id": ELASTICITY_RUN},
                            "diagnostics": None, "params": {"current_price": "20.00"}})
    recommendation: RecommendationAnswer | None = Field(description="null when refused")


class ElasticitiesPage(AnalyticsPage):
    model_config = example({"view": "elasticities",
                            "columns": ["listing_id", "run_id", "refused", "elasticity", "ci95_low", "ci95_high"],
                            "types": ["uuid", "uuid", "bool", "float8", "float8", "float8"],
                            "items": [{"listing_id": LISTING, "run_id": ELASTICITY_RUN, "refused": False,
                                       "elasticity": -2.27, "ci95_low": -2.77, "ci95_high": -1.77}],
                            "next_cursor": None})
