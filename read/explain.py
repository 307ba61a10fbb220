"""Explain: why a listing's price is what it is — the chain of events behind the current price.

    current price <- the event that set it (who, when, why, source)
                     automated: the rule version that made it (as it was then), the event that
                     caused it, the observations it used (their events) or the model run it
                     followed (optimise profit: as recorded in the change), what the rule
                     proposed, the guardrails that clamped it and the guardrails in force then
                     a rollback: the changes it compensated (each explained the same way), then
                     the change that had set the price it restored, and so on back
    and, for every change shown, the rollbacks that later compensated it.

Everything is read from the event store (replay, not a view), confined to the caller's shop.
`as_text` renders the same report for people (`etsypro explain LISTING`).
"""

from __future__ import annotations

from uuid import UUID

from codec.plain import describe_event
from domain.errors import NotFound
from domain.pricing_rule import describe_rule
from domain.facts import ObservationBatch, parse_observation_ref
from domain.listing import Guardrails, Listing
from domain.personal import KeyRing
from domain.rollback_guard import RollbackGuard, guard_id
from read.aggregates import AggregateReader
from read.shops import Viewer

GUARD_CAUSE = "rollback_guard:"  # the causation id of the rollback guard's commands (commands/rollback_guard.py)
MAX_CHAIN = 50  # rollbacks of rollbacks...: a readable report stops somewhere


def explain(aggregates: AggregateReader, viewer: Viewer, shop_id: UUID, listing_id: UUID,
            personal: KeyRing | None = None) -> dict:
    """`personal` (AuditHistory.personal) opens reasons people wrote, or shows them erased."""
    listing = aggregates.listing(viewer, shop_id, listing_id)  # tenancy: others' listings are not found
    history = _History(aggregates, viewer, shop_id, listing_id)
    chain, version = [], listing.last_price_change or 1
    while version and len(chain) < MAX_CHAIN:
        step = history.change(version)
        chain.append(step)
        version = step.pop("_restores_from", None)
    report = {
        "listing_id": str(listing.id), "shop_id": str(shop_id), "sku": listing.sku, "title": listing.title,
        "status": listing.status, "version": listing.version, "price": str(listing.price.amount),
        "currency": listing.currency, "rule_id": None if listing.rule_id is None else str(listing.rule_id),
        "chain": chain, "positions": history.positions_note,
    }
    return personal.reveal(report) if personal is not None else report


class _History:
    """One listing's events, and the look-ups an explanation needs, each done once."""

    def __init__(self, aggregates: AggregateReader, viewer: Viewer, shop_id: UUID, listing_id: UUID):
        self.aggregates, self.viewer, self.shop_id, self.listing_id = aggregates, viewer, shop_id, listing_id
        self.events = {e.originator_version: e for e in aggregates.events(listing_id)}
        self.guardrails = self._guardrails_by_version()
        self.compensated_by: dict[int, list[int]] = {}
        for v, e in self.events.items():
            for c in getattr(e, "compensates", None) or ():
                self.compensated_by.setdefault(c, []).append(v)
        self.positions_note = "position: the event's place in the global log (GET /audit/log)"
        self._positions = _positions(aggregates, [(listing_id, v) for v in self.events])

    def change(self, version: int) -> dict:
        e = self.events[version]
        step = {"version": version, "kind": _kind(e), "price": str(e.price.amount),
                "previous": None if getattr(e, "previous", None) is None else str(e.previous.amount),
                "source": e.meta.source, "by": {"actor_id": e.meta.actor_id, "actor_kind": e.meta.actor_kind},
                "reason": e.meta.reason, "occurred_at": e.meta.occurred_at.isoformat(),
                "recorded_at": e.timestamp.isoformat(), "causation_id": e.meta.causation_id,
                "correlation_id": e.meta.correlation_id, "rule_label": getattr(e, "rule", None),
                "compensated_by": self.compensated_by.get(version, []),
                "event": describe_event(e, self._positions.get((self.listing_id, version)))}
        automation = getattr(e, "automation", None)
        if automation is not None:
            step["automation"] = self._automation(automation, version)
        if e.meta.causation_id.startswith(GUARD_CAUSE):
            step["guard"] = self._guard_trip(e.meta.causation_id[len(GUARD_CAUSE):])
        compensates = list(getattr(e, "compensates", None) or ())
        if compensates:
            step["compensates"] = [_without_link(self.change(v)) for v in compensates if v in self.events]
            step["_restores_from"] = self._price_setter_before(min(compensates))
        return step

    def _automation(self, automation, version: int) -> dict:
        return {
            "rule": None if automation.rule_id is None else self._rule(automation.rule_id, automation.rule_version),
            "experiment": _experiment(getattr(automation, "experiment", None)),
            "cause": self._cause(automation.cause),
            "proposed": None if automation.proposed is None else str(automation.proposed.amount),
            "clamps": list(automation.clamps),
            "reasons": list(automation.reasons),
            "observations": [self._observation(ref) for ref in automation.observations],
            "model_run": None if automation.model_run is None else automation.model_run.describe(),
            "inputs": getattr(automation, "inputs", None),  # a velocity rule's stock, forecast run, last sale
            "guardrails_then": _guardrails(self.guardrails.get(version - 1)),
        }

    def _rule(self, rule_id: UUID, rule_version: int) -> dict:
        try:
            rule = self.aggregates.rule_version(self.viewer, self.shop_id, rule_id, rule_version)
        except NotFound:
            return {"rule_id": str(rule_id), "rule_version": rule_version, "found": False}
        return {**describe_rule(rule), "found": True}

    def _cause(self, cause: str) -> dict:
        kind, _, ref = cause.partition(":")
        found: dict = {"cause": cause, "kind": kind}
        if kind == "observation":
            found["observation"] = self._observation(ref)
        elif kind == "rule":
            rule_id, _, version = ref.partition("/v")
            try:
                found["rule"] = self._rule(UUID(rule_id), int(version))
            except ValueError:
                pass
        elif kind == "model_run":
            found["run_id"] = ref
        elif kind == "experiment":
            found["experiment"] = _experiment(ref)
        elif kind == "assignment":
            listing, _, version = ref.partition("/v")
            if listing == str(self.listing_id) and version.isdigit() and int(version) in self.events:
                e = self.events[int(version)]
                found["event"] = describe_event(e, self._positions.get((self.listing_id, int(version))))
        return found

    def _observation(self, ref: str) -> dict:
        parsed = parse_observation_ref(ref)
        if parsed is None:
            return {"ref": ref, "found": False}
        batch_id, version = parsed
        [e] = self.aggregates.events(batch_id, after=version - 1, upto=version) or [None]
        # Only this shop's observations of this listing: a forged ref never reveals another's.
        if (not isinstance(e, ObservationBatch.CompetitorPriceObserved) or e.meta.shop_id != str(self.shop_id)
                or e.listing_id != self.listing_id):
            return {"ref": ref, "found": False}
        position = _positions(self.aggregates, [(batch_id, version)]).get((batch_id, version))
        return {"ref": ref, "found": True, "competitor": e.competitor, "price": str(e.price.amount),
                "currency": e.price.currency, "observed_at": e.meta.occurred_at.isoformat(),
                "source": e.source, "event": describe_event(e, position)}

    def _guard_trip(self, key: str) -> dict:
        """The rollback guard's trip behind a rollback: its evidence (forecast, observed days, model run)."""
        for e in self.aggregates.events(guard_id(self.shop_id)):
            if isinstance(e, RollbackGuard.Tripped) and e.evidence.get("key") == key and e.listing_id == self.listing_id:
                return {"found": True, "evidence": e.evidence, "recorded_at": e.timestamp.isoformat()}
        return {"found": False, "key": key}

    def _price_setter_before(self, version: int) -> int | None:
        setters = [v for v, e in self.events.items()
                   if v < version and isinstance(e, (Listing.Registered, Listing.PriceChanged))]
        return max(setters) if setters else None

    def _guardrails_by_version(self) -> dict[int, Guardrails]:
        """The listing's guardrails after each version."""
        found, current = {}, None
        for v in sorted(self.events):
            current = getattr(self.events[v], "guardrails", current)
            found[v] = current
        return found


def _without_link(step: dict) -> dict:
    step.pop("_restores_from", None)  # the chain follows the outermost rollback only
    return step


def _kind(e) -> str:
    if isinstance(e, Listing.Registered):
        return "registered"
    if e.compensates:
        return "rollback"
    return "automated" if e.automation is not None else e.meta.source


def _guardrails(g: Guardrails | None) -> dict | None:
    if g is None:
        return None
    money = lambda v: None if v is None else str(v.amount)  # noqa: E731
    return {"floor": money(g.floor), "ceiling": money(g.ceiling), "cost": money(g.cost),
            "min_margin": None if g.min_margin is None else str(g.min_margin),
            "max_step_percent": None if g.max_step_percent is None else str(g.max_step_percent),
            "max_daily_changes": g.max_daily_changes, "cooldown_minutes": g.cooldown_minutes}


def _positions(aggregates: AggregateReader, keys: list[tuple[UUID, int]]) -> dict[tuple[UUID, int], int]:
    if not keys:
        return {}
    rows = aggregates.pool.rows(
        "SELECT e.originator_id, e.originator_version, e.notification_id"
        " FROM unnest(%s::uuid[], %s::int8[]) AS k(id, version)"
        " JOIN pricing_events e ON e.originator_id = k.id AND e.originator_version = k.version",
        [[k for k, _ in keys], [v for _, v in keys]])
    return {(aggregate_id, version): position for aggregate_id, version, position in rows}


# -- for people ---------------------------------------------------------------------------------
def as_text(report: dict) -> str:
    lines = [f"Listing {report['listing_id']} \"{report['title']}\" (SKU {report['sku']}, {report['status']})",
             f"Price now: {report['price']} {report['currency']} (listing version {report['version']})"]
    for i, step in enumerate(report["chain"]):
        if i:
            lines.append(f"That price, {step['price']} {report['currency']}, had been set earlier:")
        lines.extend(_step_text(step, report["currency"], "  "))
    return "\n".join(lines)


def _step_text(step: dict, currency: str, pad: str) -> list[str]:
    by = f"{step['by']['actor_id']} ({step['by']['actor_kind']})"
    head = {"registered": f"registered at {step['price']} {currency}",
            "rollback": f"rolled back to {step['price']} {currency}",
            "automated": f"changed automatically from {step['previous']} to {step['price']} {currency}"}.get(
        step["kind"], f"set from {step['previous']} to {step['price']} {currency} ({step['source']})")
    lines = [f"{pad}v{step['version']}: {head} by {by} at {step['occurred_at']}"
             + (f" — \"{step['reason']}\"" if step["reason"] else "")]
    if step["rule_label"] and "automation" not in step:
        lines.append(f"{pad}  labelled rule {step['rule_label']!r}")
    if "automation" in step:
        lines.extend(_automation_text(step["automation"], currency, pad + "  "))
    for compensated in step.get("compensates", []):
        lines.append(f"{pad}  compensating v{compensated['version']}:")
        lines.extend(_step_text(compensated, currency, pad + "    "))
    if step["compensated_by"]:
        lines.append(f"{pad}  later compensated by rollback(s) at version(s) "
                     + ", ".join(f"v{v}" for v in step["compensated_by"]))
    return lines


def _automation_text(a: dict, currency: str, pad: str) -> list[str]:
    rule = a["rule"]
    if rule.get("found"):
        lines = [f"{pad}rule {rule['name']!r} v{rule['rule_version']} ({rule['rule_id']}): {rule['summary']}"]
    else:
        lines = [f"{pad}rule {rule['rule_id']} v{rule['rule_version']} (not found)"]
    run = a.get("model_run")
    if run:
        named = f"{rule['name']!r}" if rule.get("found") else f"{rule['rule_id']}"
        label = rule.get("kind", "optimise_profit").replace("_", " ")
        lines.append(f"{pad}rule {named} v{rule['rule_version']} ({label}) used {run['cited']} "
                     f"(run at {run['created_at']})")
    cause = a["cause"]
    observation = cause.get("observation")
    if observation and observation.get("found"):
        lines.append(f"{pad}caused by observation {observation['ref']}: {observation['competitor']} at "
                     f"{observation['price']} {currency}, seen {observation['observed_at']}")
    elif cause["kind"] == "model_run":
        lines.append(f"{pad}caused by the new model run {cause['run_id']}")
    else:
        lines.append(f"{pad}caused by {cause['cause']}")
    if a["observations"]:
        lines.append(f"{pad}observations used:")
        for o in a["observations"]:
            lines.append(f"{pad}  {o['competitor']} at {o['price']} {currency}, seen {o['observed_at']} "
                         f"(event {o['ref']})" if o.get("found") else f"{pad}  {o['ref']} (not found)")
    if a.get("inputs"):
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in a["inputs"].items() if v is not None)
        lines.append(f"{pad}read: {shown}")
    if a["reasons"]:
        lines.append(f"{pad}the rule's steps:")
        lines.extend(f"{pad}  - {r}" for r in a["reasons"])
    proposed = "nothing" if a["proposed"] is None else f"{a['proposed']} {currency}"
    lines.append(f"{pad}proposed {proposed}; " + ("clamped by guardrails:" if a["clamps"] else "no guardrail clamped it"))
    lines.extend(f"{pad}  - {c}" for c in a["clamps"])
    g = a["guardrails_then"]
    if g:
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in g.items() if v is not None)
        lines.append(f"{pad}guardrails then: {shown or 'none'}")
    return lines


def _experiment(ref: str | None) -> dict | None:
    """'<experiment id>/<period>' of an experiment's price change, as explain shows it (periods count from 1)."""
    if not ref:
        return None
    experiment_id, _, period = ref.partition("/")
    return {"experiment_id": experiment_id, "period": int(period) + 1 if period.isdigit() else None}
