"""Shops, listings, prices and facts: the handlers of the catalogue's commands.

Each handler turns a validated command (commands/models.py) into a decision the aggregates make,
and lets the core (commands/core.py) save it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from uuid import UUID, uuid4

from commands import models
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.identity import Identity
from commands.persistence import LIST_LISTINGS, LIST_SHOP, Reservation
from domain.errors import Conflict, DomainError, NotFound
from domain.facts import Observation, ObservationBatch, SaleLine, SalesBatch
from domain.listing import Guardrails, Listing
from domain.money import Money
from domain.shop import Shop


def _prefixed(error: DomainError, prefix: str) -> DomainError:
    return type(error)(f"{prefix}.{error.field}" if prefix else error.field, error.detail)


@lru_cache(maxsize=4096)  # Money is immutable; a 10,000-line batch holds a few hundred distinct prices
def _money(amount, currency: str, field: str, positive: bool = False) -> Money | None:
    if amount is None:
        return None
    return Money.price(amount, currency, field) if positive else Money.of(amount, currency, field)


def _amounts(items, field: str, prefix: str, positive: bool = False) -> list[Money]:
    """Each item's `field` as Money in the item's currency; an error names the item, as in
    `observations[3].price`. The field name stays constant so that `_money`'s cache hits."""
    amounts: list[Money] = []
    try:
        for item in items:
            amounts.append(_money(getattr(item, field), item.currency, field, positive))
    except DomainError as e:
        raise _prefixed(e, f"{prefix}[{len(amounts)}]") from None
    return amounts


def sale_lines(sales: list[models.SaleIn]) -> list[SaleLine]:
    """The domain's sale lines for a command's; a refused amount names its line (`sales[12].unit_price`)."""
    unit_prices = _amounts(sales, "unit_price", "sales")
    return [SaleLine(s.listing_id, s.quantity, unit_price, s.order_id, s.transaction_id, s.sold_at)
            for s, unit_price in zip(sales, unit_prices)]


def listing_answer(listing: Listing, changed: bool = True) -> dict:
    return {"listing_id": str(listing.id), "version": listing.version, "changed": changed,
            "price": str(listing.price.amount), "currency": listing.currency}


class Listings:
    """Opening shops, registering listings, setting prices and guardrails, recording facts."""

    def __init__(self, core: WriteCore, identity: Identity):
        self.core, self.identity = core, identity

    # -- shops and listings ---------------------------------------------------------------
    def open_shop(self, ctx: CommandContext, cmd: models.OpenShop) -> Result:
        shop_id = uuid4()

        def decide() -> Decision:
            shop = Shop.open(ctx.tenant_id, cmd.name, cmd.currency, cmd.marketplace, ctx.meta(shop_id))
            opener, grant_rows = self.identity.grant_opener(ctx, shop.id)  # the seller who opens a shop gets it
            return Decision([shop, *opener], {"shop_id": str(shop.id), "version": shop.version}, created=True,
                            reservations=[Reservation(shop.id, "tenant", ctx.tenant_id, shop.id)],
                            statements=[*grant_rows, (LIST_SHOP, [shop.id, ctx.tenant_id, shop.currency])])

        return self.core.execute(ctx, "open_shop", cmd.model_dump(mode="json"), decide)

    def register_listings(self, ctx: CommandContext, shop_id: UUID, cmd: models.RegisterListings) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            listings, seen = [], {}
            meta = ctx.meta(shop_id, cmd.source, cmd.reason)
            for i, spec in enumerate(cmd.listings):
                where = f"listings[{i}]"
                for key in ("external_id", "sku"):
                    value = getattr(spec, key)
                    if (key, value) in seen:
                        raise DomainError(f"{where}.{key}", f"{value!r} also appears at listings[{seen[key, value]}]")
                    seen[key, value] = i
                if spec.currency != currency:
                    raise DomainError(f"{where}.currency", f"{spec.currency} does not match the shop's {currency}")
                try:
                    guardrails = Guardrails(_money(spec.floor, currency, "floor", positive=True),
                                            _money(spec.ceiling, currency, "ceiling", positive=True),
                                            _money(spec.cost, currency, "cost"))
                    listings.append(Listing.register(
                        shop_id, spec.external_id, spec.sku, spec.title, spec.status,
                        Money.price(spec.price, currency, "price"), guardrails, meta))
                except DomainError as e:
                    raise _prefixed(e, where) from None
            self._refuse_taken(shop_id, "external_id", [s.external_id for s in cmd.listings], "listings[{}].external_id")
            self._refuse_taken(shop_id, "sku", [s.sku for s in cmd.listings], "listings[{}].sku")
            reservations = [Reservation(shop_id, kind, key, listing.id)
                            for listing in listings
                            for kind, key in (("listing", str(listing.id)), ("external_id", listing.external_id),
                                              ("sku", listing.sku))]
            body = {"listings": [{"listing_id": str(x.id), "external_id": x.external_id, "version": x.version}
                                 for x in listings]}
            return Decision(listings, body, created=True, reservations=reservations,
                            statements=[(LIST_LISTINGS, [shop_id, [x.id for x in listings]])])

        return self.core.execute(ctx, "register_listings", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def _refuse_taken(self, shop_id: UUID, kind: str, keys: list[str], field: str) -> None:
        taken = self.core.recorder.reserved(shop_id, kind, keys)
        for i, key in enumerate(keys):
            if key in taken:
                raise Conflict(f"{key!r} is already used in this shop", field=field.format(i))

    def set_price(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, cmd: models.SetPrice) -> Result:
        def decide() -> Decision:
            listing = self.core.listing_at(ctx, shop_id, listing_id, cmd.expected_version)
            price = Money.price(cmd.price, cmd.currency, "price")
            if price.currency != listing.currency:
                raise DomainError("currency", f"{price.currency} does not match the listing's {listing.currency}")
            changed = listing.change_price(price, ctx.meta(shop_id, cmd.source, cmd.reason), rule=cmd.rule)
            return Decision([listing], listing_answer(listing, changed), strict=cmd.expected_version is not None)

        return self.core.execute(ctx, "set_price", {"listing": str(listing_id), **cmd.model_dump(mode="json")}, decide,
                            serial=[listing_id])

    def set_guardrails(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, cmd: models.SetGuardrails) -> Result:
        def decide() -> Decision:
            listing = self.core.listing_at(ctx, shop_id, listing_id, cmd.expected_version)
            if cmd.currency != listing.currency:
                raise DomainError("currency", f"{cmd.currency} does not match the listing's {listing.currency}")
            # Floor, ceiling and cost are replaced; automation limits (their own route) are kept.
            guardrails = replace(listing.guardrails, floor=_money(cmd.floor, cmd.currency, "floor", positive=True),
                                 ceiling=_money(cmd.ceiling, cmd.currency, "ceiling", positive=True),
                                 cost=_money(cmd.cost, cmd.currency, "cost"))
            changed = listing.set_guardrails(guardrails, ctx.meta(shop_id, reason=cmd.reason))
            return Decision([listing], listing_answer(listing, changed), strict=cmd.expected_version is not None)

        return self.core.execute(ctx, "set_guardrails", {"listing": str(listing_id), **cmd.model_dump(mode="json")}, decide,
                            serial=[listing_id])

    def bulk_set_prices(self, ctx: CommandContext, shop_id: UUID, cmd: models.BulkSetPrices) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)  # unknown or others' shop: NotFound before any item is looked at
        if cmd.currency != currency:  # every listing is in its shop's currency
            raise DomainError("currency", f"{cmd.currency} does not match the shop's {currency}")

        def decide() -> Decision:
            meta = ctx.meta(shop_id, cmd.source, cmd.reason)
            listings, answers, seen = [], [], set()
            for i, item in enumerate(cmd.changes):
                where = f"changes[{i}]"
                if item.listing_id in seen:
                    raise DomainError(f"{where}.listing_id", "appears more than once")
                seen.add(item.listing_id)
                try:
                    listing = self.core.listing_at(ctx, shop_id, item.listing_id, item.expected_version)
                except NotFound:
                    raise DomainError(f"{where}.listing_id", "no such listing in this shop") from None
                except Conflict as e:
                    raise Conflict(e.detail, field=f"{where}.expected_version", **e.extra) from None
                try:
                    changed = listing.change_price(Money.price(item.price, cmd.currency, "price"), meta, rule=cmd.rule)
                except DomainError as e:
                    raise _prefixed(e, where) from None
                listings.append(listing)
                answers.append(listing_answer(listing, changed))
            strict = any(item.expected_version for item in cmd.changes)
            return Decision(listings, {"changes": answers}, strict=strict)

        return self.core.execute(ctx, "bulk_set_prices", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide,
                            serial=[item.listing_id for item in cmd.changes])

    # -- facts ----------------------------------------------------------------------------
    def record_observations(self, ctx: CommandContext, shop_id: UUID, cmd: models.RecordObservations) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            self._refuse_unknown_listings(shop_id, [o.listing_id for o in cmd.observations], "observations[{}].listing_id")
            prices = _amounts(cmd.observations, "price", "observations", positive=True)
            observations = [Observation(o.listing_id, o.competitor, price, o.observed_at, o.source)
                            for o, price in zip(cmd.observations, prices)]
            batch = ObservationBatch.record(shop_id, currency, observations, ctx.meta(shop_id, cmd.source, cmd.reason))
            return Decision([batch], {"batch_id": str(batch.id), "recorded": len(observations)}, created=True)

        return self.core.execute(ctx, "record_observations", lambda: {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def record_sales(self, ctx: CommandContext, shop_id: UUID, cmd: models.RecordSales) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)
        tries = 0

        def decide() -> Decision:
            nonlocal tries
            self._refuse_unknown_listings(shop_id, [s.listing_id for s in cmd.sales], "sales[{}].listing_id")
            transactions = [s.transaction_id for s in cmd.sales]
            if len(set(transactions)) < len(transactions):  # named only when there is one: a batch has 10,000
                seen: dict[str, int] = {}
                for i, transaction in enumerate(transactions):
                    if transaction in seen:
                        raise DomainError(f"sales[{i}].transaction_id", f"also appears at sales[{seen[transaction]}]")
                    seen[transaction] = i
            # A taken id is first left to its reservation, which refuses the save (looking up 10,000
            # ids before every batch cost more than the rare refusal); the retry looks and names it.
            if tries:
                self._refuse_taken(shop_id, "sale_transaction", transactions, "sales[{}].transaction_id")
            tries += 1
            lines = sale_lines(cmd.sales)
            batch = SalesBatch.record(shop_id, currency, lines, ctx.meta(shop_id, cmd.source, cmd.reason))
            reservations = [Reservation(shop_id, "sale_transaction", t, batch.id) for t in transactions]
            return Decision([batch], {"batch_id": str(batch.id), "recorded": len(lines)}, created=True,
                            reservations=reservations)

        return self.core.execute(ctx, "record_sales", lambda: {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def _refuse_unknown_listings(self, shop_id: UUID, listing_ids: list[UUID], field: str) -> None:
        distinct = set(listing_ids)  # a batch names few listings many times: format each once
        known = {UUID(x) for x in self.core.recorder.reserved(shop_id, "listing", [str(x) for x in distinct])}
        for i, listing_id in enumerate(listing_ids):
            if listing_id not in known:
                raise DomainError(field.format(i), "no such listing in this shop")
