"""Facts that arrive from a marketplace or a third party in bulk, with their own identity:
orders (one per order id) and competitor prices from feeds (one per observation). Each is
recorded at most once per shop, whatever delivers it again (a re-exported file, a Kafka record
redelivered): the identity is reserved with the batch, in its transaction."""

from __future__ import annotations

import hashlib
from typing import Annotated, Iterable
from uuid import UUID

from pydantic import Field

from commands import models
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.credentials import Secrets
from commands.listings import Listings, _amounts
from commands.persistence import Reservation
from commands.personal import Vault, buyer_name
from domain.errors import DomainError
from domain.facts import Observation, ObservationBatch
from domain.money import Money
from domain.orders import TOTALS, Order, OrderBatch

ORDER = "marketplace_order"  # reservation kinds
OBSERVATION = "feed_observation"


class Pseudonyms:
    """A buyer's pseudonym: the random id of the buyer's data subject in the shop's tenant
    (commands/personal.py), found again by a keyed hash of (shop, name), so the log can tell a
    returning customer without holding who it is, and nothing links across shops. Erasing the
    buyer (`etsypro erase buyer`) deletes the subject: the id in the events then links to nobody."""

    def __init__(self, secrets: Secrets):
        self._secrets, self._vault = secrets, None

    def of_many(self, core: WriteCore, tenant_id: str, shop_id: UUID, buyers: Iterable[str]) -> dict[str, str | None]:
        """Each buyer (as the file writes it) -> its pseudonym (None for a blank one): one query
        for the lot, and one more to add the buyers not seen before."""
        names = {buyer: buyer_name(buyer) for buyer in set(buyers)}
        if self._vault is None or self._vault.core is not core:  # one vault: its tenant lookup keys are cached
            self._vault = Vault(core, lambda: self._secrets)
        ids = self._vault.buyers(tenant_id, shop_id, {n for n in names.values() if n})
        return {buyer: ids[name] if name else None for buyer, name in names.items()}


@models.line
class OrderIn:
    order_id: models.Text
    buyer: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None
    items: models.integer(ge=1, le=100_000) | None = None
    placed_at: models.BusinessTime
    status: models.text(50) | None = None
    currency: models.Currency
    order_value: models.Amount | None = None
    discount: models.Amount | None = None
    shipping: models.Amount | None = None
    shipping_discount: models.Amount | None = None
    sales_tax: models.Amount | None = None
    order_total: models.Amount | None = None


class RecordOrders(models.Command):
    orders: Annotated[list[OrderIn], Field(min_length=1, max_length=models.MAX_BATCH)]
    source: models.ImportOrManual = "import"
    reason: models.Reason = ""


def order_facts(orders: list[OrderIn]) -> list[Order]:
    """The domain's orders for a command's; a refused amount names its order (`orders[3].shipping`)."""
    facts = []
    for i, o in enumerate(orders):
        totals = {}
        for name in TOTALS:
            if (value := getattr(o, name)) is not None:
                try:
                    totals[name] = Money.of(value, o.currency, name)
                except DomainError as e:
                    raise type(e)(f"orders[{i}].{name}", e.detail) from None
        facts.append(Order(o.order_id, o.buyer, o.items, o.placed_at, o.status, totals))
    return facts


def observation_key(o: models.ObservationIn) -> str:
    """One observation's identity: the same listing, competitor, moment, price and source."""
    text = f"{o.listing_id}|{o.competitor}|{o.observed_at.isoformat()}|{o.price.normalize()}|{o.currency}|{o.source}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class MarketplaceFacts:
    """record_orders, and record_feed_observations: record_observations' validation, plus each
    observation's identity reserved so that a feed delivered twice records it once."""

    def __init__(self, core: WriteCore, listings: Listings):
        self.core, self.listings = core, listings

    def record_orders(self, ctx: CommandContext, shop_id: UUID, cmd: RecordOrders) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            ids = [o.order_id for o in cmd.orders]
            _refuse_repeats(ids, "orders[{}].order_id")
            self.listings._refuse_taken(shop_id, ORDER, ids, "orders[{}].order_id")
            batch = OrderBatch.record(shop_id, currency, order_facts(cmd.orders), ctx.meta(shop_id, cmd.source, cmd.reason))
            return Decision([batch], {"batch_id": str(batch.id), "recorded": len(ids)}, created=True,
                            reservations=[Reservation(shop_id, ORDER, i, batch.id) for i in ids])

        return self.core.execute(ctx, "record_orders", lambda: {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def record_feed_observations(self, ctx: CommandContext, shop_id: UUID, cmd: models.RecordObservations) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            self.listings._refuse_unknown_listings(shop_id, [o.listing_id for o in cmd.observations],
                                                   "observations[{}].listing_id")
            keys = [observation_key(o) for o in cmd.observations]
            _refuse_repeats(keys, "observations[{}]")
            self.listings._refuse_taken(shop_id, OBSERVATION, keys, "observations[{}]")
            prices = _amounts(cmd.observations, "price", "observations", positive=True)
            observations = [Observation(o.listing_id, o.competitor, price, o.observed_at, o.source)
                            for o, price in zip(cmd.observations, prices)]
            batch = ObservationBatch.record(shop_id, currency, observations, ctx.meta(shop_id, cmd.source, cmd.reason))
            return Decision([batch], {"batch_id": str(batch.id), "recorded": len(observations)}, created=True,
                            reservations=[Reservation(shop_id, OBSERVATION, k, batch.id) for k in keys])

        return self.core.execute(ctx, "record_feed_observations",
                                 lambda: {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def recorded(self, shop_id: UUID, kind: str, keys: list[str]) -> set[str]:
        """Which of these identities the shop already holds (recorded by an earlier file or record)."""
        return set(self.core.recorder.reserved(shop_id, kind, keys)) if keys else set()


def _refuse_repeats(keys: list[str], field: str) -> None:
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            raise DomainError(field.format(i), f"repeats {field.format(seen[key])}")
        seen[key] = i
