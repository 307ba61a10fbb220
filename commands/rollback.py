"""Rollback: a compensating price change that names the changes it compensates. History is
never edited; what was true then is read by replay (read/history.py)."""

from __future__ import annotations

from uuid import UUID

from commands import models
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.listings import listing_answer
from domain.errors import Conflict, DomainError
from domain.history import PriceChange, price_at, price_changes, version_at
from domain.meta import Source


class Rollbacks:
    """Rolling one listing, or many, back to an earlier price by a compensating change."""

    def __init__(self, core: WriteCore):
        self.core = core

    # -- one listing ------------------------------------------------------------------------
    def rollback_listing(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, cmd: models.RollbackListing) -> Result:
        given = [n for n in ("to_version", "to_time", "undo_version") if getattr(cmd, n) is not None]
        if len(given) != 1:
            raise DomainError(given[1] if given else "to_version",
                              "give exactly one of to_version, to_time, undo_version")

        def decide():
            listing = self.core.listing_at(ctx, shop_id, listing_id, cmd.expected_version)
            meta = ctx.meta(shop_id, Source.ROLLBACK, cmd.reason)
            history = list(self.core.events.get(listing_id))  # read once: changes, versions and prices
            changes = price_changes(history)
            if cmd.undo_version is not None:
                undone = next((c for c in changes if c.version == cmd.undo_version), None)
                if undone is None:
                    raise DomainError("undo_version", f"version {cmd.undo_version} is not a price change of this listing")
                if listing.last_price_change != undone.version:
                    raise Conflict(f"the price changed since, at version {listing.last_price_change}; "
                                   "roll back to a version instead", field="undo_version",
                                   current_version=listing.version)
                target, compensated = undone.previous, [undone.version]
            else:
                version = cmd.to_version if cmd.to_version is not None else version_at(history, cmd.to_time)
                field = "to_version" if cmd.to_version is not None else "to_time"
                if version < 1:
                    raise DomainError(field, "the listing did not exist then")
                if version > listing.version:
                    raise DomainError(field, f"the listing is only at version {listing.version}")
                target = price_at(history, version)
                compensated = [c.version for c in changes if c.version > version]
            try:
                changed = listing.restore_price(target, compensated, meta)
            except DomainError as e:
                raise Conflict(f"cannot restore {target}: {e.detail}", field=e.field) from None
            answer = {**listing_answer(listing, changed), "compensates": compensated if changed else []}
            return Decision([listing], answer, strict=cmd.expected_version is not None)

        return self.core.execute(ctx, "rollback_listing", {"listing": str(listing_id), **cmd.model_dump(mode="json")}, decide,
                            serial=[listing_id])

    # -- many listings ----------------------------------------------------------------------
    def bulk_rollback(self, ctx: CommandContext, shop_id: UUID, cmd: models.BulkRollback) -> Result:
        self.core.shop_facts(ctx, shop_id)
        if cmd.rule_version is not None and cmd.rule is None:
            raise DomainError("rule_version", "a rule version needs the rule's id in `rule`")
        if not any(getattr(cmd, f) is not None for f in ("source", "rule", "actor", "since", "until")):
            raise DomainError("source", "give at least one filter: source, rule, actor, since or until")
        rule = _rule_reference(cmd.rule)

        def matches(c: PriceChange) -> bool:
            return ((cmd.source is None or c.meta.source == cmd.source)
                    and (rule is None or c.rule == rule)
                    and (cmd.rule_version is None
                         or (c.automation is not None and c.automation.rule_version == cmd.rule_version))
                    and (cmd.actor is None or c.meta.actor_id == cmd.actor)
                    and (cmd.since is None or c.recorded_at >= cmd.since)
                    and (cmd.until is None or c.recorded_at < cmd.until))

        def decide():
            meta = ctx.meta(shop_id, Source.ROLLBACK, cmd.reason)
            listing_ids = sorted(self.core.recorder.reserved_all(shop_id, "listing").values())
            touched, compensated, skipped = [], [], []
            for listing_id in listing_ids:
                changes = price_changes(self.core.events.get(listing_id))
                already = {v for c in changes for v in c.compensates}
                hits = [c for c in changes if matches(c) and c.version not in already]
                if not hits:
                    continue
                first = hits[0]
                later_others = [c for c in changes if c.version > first.version and not matches(c)]
                if later_others:
                    other = later_others[-1]
                    skipped.append({"listing_id": str(listing_id), "reason": "changed since by someone else",
                                    "changed_by": other.meta.actor_id, "source": other.meta.source,
                                    "version": other.version, "at": other.recorded_at.isoformat()})
                    continue
                listing = self.core.repository.get(listing_id)
                try:
                    changed = listing.restore_price(first.previous, [c.version for c in hits], meta)
                except DomainError as e:
                    skipped.append({"listing_id": str(listing_id), "reason": f"restoring {first.previous} "
                                    f"is outside the current guardrails: {e.detail}"})
                    continue
                touched.append(listing)
                # Changes that cancelled out leave the price as it was: nothing is appended, and we say so.
                compensated.append({**listing_answer(listing, changed),
                                    "compensates": [c.version for c in hits] if changed else []})
            return Decision(touched, {"compensated": compensated, "skipped": skipped})

        return self.core.execute(ctx, "bulk_rollback", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)


def _rule_reference(rule: str | None) -> str | None:
    """Automated changes name their rule by id (str(UUID)); accept any spelling of a UUID."""
    if rule is None:
        return None
    try:
        return str(UUID(rule))
    except ValueError:
        return rule  # the label a manual or experiment change gave
