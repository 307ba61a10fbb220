"""A seller's pricing rule as an aggregate: every edit appends a new version, so every price a
rule made can name the exact version that made it. A rule is defined once per shop, revised any
number of times and finally retired; listings point at it (Listing.RuleAssigned)."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, InvariantViolated
from domain.meta import EventMeta
from domain.rules import Rule

MAX_NAME = 200


class PricingRule(Aggregate):
    @event("Defined")
    def __init__(self, shop_id: UUID, name: str, rule: Rule, meta: EventMeta):
        self.shop_id = shop_id
        self.name = name
        self.rule = rule
        self.rule_version = 1
        self.retired = False

    @classmethod
    def define(cls, shop_id: UUID, name: str, rule: Rule, meta: EventMeta) -> PricingRule:
        return cls(shop_id=shop_id, name=_name(name), rule=rule, meta=meta)

    def revise(self, rule: Rule, meta: EventMeta, name: str | None = None) -> bool:
        """Append version n+1. Returns False (and records nothing) when nothing would change."""
        self.refuse_if_retired()
        if rule.currency != self.rule.currency:
            raise InvalidValue("currency", f"the rule prices in {self.rule.currency}, not {rule.currency}")
        name = self.name if name is None else _name(name)
        if rule == self.rule and name == self.name:
            return False
        self._revised(rule=rule, name=name, rule_version=self.rule_version + 1, meta=meta)
        return True

    @event("Revised")
    def _revised(self, rule: Rule, name: str, rule_version: int, meta: EventMeta) -> None:
        self.rule = rule
        self.name = name
        self.rule_version = rule_version

    def retire(self, meta: EventMeta) -> bool:
        if self.retired:
            return False
        self._retired(rule_version=self.rule_version, meta=meta)
        return True

    @event("Retired")
    def _retired(self, rule_version: int, meta: EventMeta) -> None:
        self.retired = True

    def refuse_if_retired(self) -> None:
        if self.retired:
            raise InvariantViolated("rule_id", "the rule is retired; define a new one")


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidValue("name", f"must be 1-{MAX_NAME} characters, not blank")
    return name


def describe_rule(rule: PricingRule) -> dict:
    r = rule.rule
    return {
        "rule_id": str(rule.id), "shop_id": str(rule.shop_id), "name": rule.name, "version": rule.version,
        "rule_version": rule.rule_version, "retired": rule.retired, "summary": r.describe(),
        "kind": r.kind, "currency": r.currency,
        "amount": None if r.amount is None else str(r.amount),
        "percent": None if r.percent is None else str(r.percent), "direction": r.direction,
        "rounding": r.rounding, "include": list(r.include), "exclude": list(r.exclude),
        "max_age_minutes": r.max_age_minutes, "no_competition": r.no_competition, "below_floor": r.below_floor,
        "modified_at": rule.modified_on.isoformat(),
        **({} if r.days is None else {"days": r.days}),  # stale_listing only
    }
