"""The write side: an eventsourcing Application whose methods are the command handlers.

Every handler loads aggregates, lets them decide, and saves all resulting events in one
transaction, together with the command's idempotency record and uniqueness reservations.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import replace
from functools import lru_cache
from typing import Callable, Iterable, Sequence
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.persistence import IntegrityError
from psycopg.conninfo import conninfo_to_dict

import codec
from commands import models
from commands.committed import CommittedListings, PricingRepository, StaleRead, check_written, first_try
from commands.context import CommandContext, Decision, Result
from domain.errors import CommandRefused, Conflict, IdempotencyKeyReused, NotFound
from commands.identity import IdentityHandlers
from commands.repricing import Repricing
from commands.serial import Hold, WriterBusy, WriterLocks
from commands.rollback import TimeTravel
from commands.persistence import LIST_SHOP, IdempotencyRecord, IndexRow, PricingEventStore, Recordings, Reservation
from domain.errors import DomainError
from domain.account import Account
from domain.facts import Observation, ObservationBatch, SaleLine, SalesBatch
from domain.listing import Guardrails, Listing
from domain.money import Money
from domain.shop import Shop

SNAPSHOT_EVERY = 50
CONFLICT_RETRIES = 30  # each lost race means another writer landed: N racing writers need up to N tries


def library_env(conninfo: str, pool_size: int = 10) -> dict[str, str]:
    """The eventsourcing library's settings for a PostgreSQL URL or conninfo string."""
    params = conninfo_to_dict(conninfo)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "commands.persistence:PricingRecorder",
        "POSTGRES_DBNAME": params.get("dbname", "postgres"),
        "POSTGRES_HOST": params.get("host", "127.0.0.1"),
        "POSTGRES_PORT": str(params.get("port", "5432")),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_LOCK_TIMEOUT": "10",
        "CREATE_TABLE": "n",  # tables come from migrations/
        "IS_SNAPSHOTTING_ENABLED": "y",
        # Loaded aggregates stay in memory (LRU): a load then reads only the events after the
        # cached version (the library's fast-forward) instead of the last snapshot and all since.
        "AGGREGATE_CACHE_MAXSIZE": "5000",
    }


def _request_hash(name: str, command: dict) -> str:
    """Fingerprint of a command, to tell a retry from another command reusing its key."""
    return hashlib.sha256(json.dumps({"command": name, **command}, sort_keys=True, default=str).encode()).hexdigest()


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


class PricingEngine(Repricing, IdentityHandlers, TimeTravel, Application):
    name = "pricing"
    snapshotting_intervals = {Listing: SNAPSHOT_EVERY, Shop: SNAPSHOT_EVERY, Account: SNAPSHOT_EVERY}

    def __init__(self, conninfo: str, pool_size: int = 10):
        super().__init__(env=library_env(conninfo, pool_size))
        self.conninfo = conninfo  # the database the API's read side opens its own pool on
        self._shops: dict[UUID, tuple[str, str]] = {}  # id -> (tenant, currency): never change
        self.on_commit: list[Callable[[Sequence], None]] = []  # told each save's domain events once committed
        self.writers = WriterLocks()  # one writer at a time per aggregate in this process

    def _notify(self, recordings: Recordings) -> None:
        for listener in self.on_commit:
            listener(recordings.domain_events)

    def construct_event_store(self) -> PricingEventStore:
        return PricingEventStore(mapper=self.mapper, recorder=self.recorder)

    def construct_repository(self) -> PricingRepository:
        size = int(self.env[self.AGGREGATE_CACHE_MAXSIZE])
        return PricingRepository(event_store=self.events, snapshot_store=self.snapshots, cache_maxsize=size,
                                 committed=CommittedListings(size))

    def construct_mapper(self) -> codec.PricingMapper:
        return codec.new_mapper()  # the one codec every reader decodes with

    def _record(self, processing_event):
        # One audit index row per event, in the same transaction (see PricingRecorder).
        processing_event.saved_kwargs["index"] = [
            IndexRow(e.meta.shop_id, e.meta.actor_id, e.meta.occurred_at, e.timestamp)
            for e in processing_event.events
        ]
        recordings = super()._record(processing_event)
        self.repository.committed.remember(processing_event.aggregates, processing_event.events)
        return recordings

    def take_snapshot(self, aggregate_id, version: int | None = None, projector_func=project_aggregate) -> None:
        """A listing's snapshot is taken from the listing as just committed when it is at that version
        (commands/committed.py); the library replays it from the database: up to 50 events read and
        applied inside every 50th change of a listing, a latency spike for one command in 50."""
        listing = self.repository.committed.recall(aggregate_id, copy=False)
        if version is None or listing is None or listing.version != version:
            return super().take_snapshot(aggregate_id, version, projector_func)
        self.snapshots.put([Listing.Snapshot.take(listing)])

    # -- running a command ----------------------------------------------------------------
    def execute(self, ctx: CommandContext, name: str, command: dict | Callable[[], dict],
                decide: Callable[[], Decision], serial: Iterable[UUID] = ()) -> Result:
        """Decide and save atomically, honouring the Idempotency-Key and retrying lost races.

        `command` is the request as the idempotency fingerprint sees it; a batch passes a function
        making it, so that 10,000 lines are dumped only when a key asks for the fingerprint.
        `serial`: the aggregates it writes, known before deciding; this process's other writers of
        them wait (commands/serial.py), so its lost races are only to other processes."""
        if ctx.idempotency_key:
            request_hash = _request_hash(name, command() if callable(command) else command)
        else:
            request_hash = ""
        if ctx.idempotency_key and (prior := self.recorder.find_command(ctx.idempotency_scope, ctx.idempotency_key)):
            return self._replay(prior, request_hash)
        try:
            with self.writers.hold(serial) as hold:
                return self._tries(ctx, decide, request_hash, hold)
        except WriterBusy:
            raise Conflict("too much concurrent activity on this aggregate; retry") from None

    def _tries(self, ctx: CommandContext, decide: Callable[[], Decision], request_hash: str, hold: Hold) -> Result:
        for attempt in range(CONFLICT_RETRIES):
            try:
                decision = self._decide(decide, first=attempt == 0)
            except StaleRead:
                continue
            except (DomainError, CommandRefused):
                # A duplicate of this very command may have committed since we looked: the value it
                # reserved or the version it moved to now refuses us. Its retry gets its answer.
                if ctx.idempotency_key and (prior := self.recorder.find_command(ctx.idempotency_scope, ctx.idempotency_key)):
                    return self._replay(prior, request_hash)
                raise
            record = None
            if ctx.idempotency_key:  # kept even when nothing changed: a retry must not act later
                record = IdempotencyRecord(ctx.idempotency_scope, ctx.idempotency_key, request_hash,
                                           decision.created, decision.response)
            try:
                self.save(*decision.aggregates, idempotency=record, reservations=decision.reservations,
                          statements=decision.statements)
            except IntegrityError as e:
                constraint = getattr(getattr(e.__cause__, "diag", None), "constraint_name", None)
                if constraint == "command_log_pkey":  # the same key won a race with us
                    return self._replay(self.recorder.find_command(ctx.idempotency_scope, ctx.idempotency_key), request_hash)
                if decision.strict and constraint != "reservations_pkey":
                    aggregate = decision.aggregates[0]
                    raise Conflict("changed concurrently", field="expected_version",
                                   current_version=self._current_version(aggregate.id)) from None
                # Someone else's event took our version, or a unique value we wanted: decide again on
                # fresh state (which names the taken value, or lands after theirs), holding what we
                # write from now on, for commands that could not name it before deciding. Jitter
                # spreads racers; a first try's loss is mostly its own stale memory, retried at once.
                hold.extend(a.id for a in decision.aggregates)
                if attempt:
                    time.sleep(random.uniform(0, min(0.05, 0.002 * 2 ** attempt)))
                continue
            return Result(decision.response, decision.created)
        raise Conflict("too much concurrent activity on this aggregate; retry")

    @staticmethod
    def _decide(decide: Callable[[], Decision], first: bool) -> Decision:
        """The first try decides on listings as this process committed them (commands/committed.py):
        only a decision that writes each of them at its next version stands; StaleRead otherwise."""
        if not first:
            return decide()
        with first_try() as reads:
            try:
                decision = decide()
            except (DomainError, CommandRefused):
                if reads:
                    raise StaleRead from None
                raise
        check_written(reads, decision.aggregates)
        return decision

    @staticmethod
    def _replay(prior: tuple[str, bool, dict], request_hash: str) -> Result:
        prior_hash, created, body = prior
        if prior_hash != request_hash:
            raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request",
                                       field="Idempotency-Key")
        return Result(body, created, replayed=True)

    def _current_version(self, aggregate_id) -> int:
        last = self.recorder.select_events(aggregate_id, desc=True, limit=1)
        return last[0].originator_version if last else 0

    # -- loading with tenancy checks ------------------------------------------------------
    def knows_shop(self, shop_id: UUID) -> bool:
        """Whether shop_facts can answer for this shop from memory, without a query."""
        return shop_id in self._shops

    def shop_facts(self, ctx: CommandContext, shop_id: UUID) -> tuple[str, str]:
        """(tenant, currency) of a shop the context may use; NotFound for others' shops."""
        if shop_id not in self._shops:
            try:
                shop = self.repository.get(shop_id)
            except AggregateNotFoundError:
                raise NotFound("shop not found") from None
            if not isinstance(shop, Shop):
                raise NotFound("shop not found")
            self._shops[shop_id] = (shop.tenant_id, shop.currency)
        tenant, currency = self._shops[shop_id]
        if tenant != ctx.tenant_id or not ctx.may_see(shop_id):
            raise NotFound("shop not found")
        return tenant, currency

    def listing(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, version: int | None = None) -> Listing:
        return self.in_shop(ctx, shop_id, listing_id, Listing, "listing", version)

    def in_shop(self, ctx: CommandContext, shop_id: UUID, aggregate_id: UUID, kind: type, what: str,
                version: int | None = None):
        """The shop's aggregate of this kind, as of `version`; NotFound for any other kind, shop or
        tenant alike, so that others' ids tell nothing."""
        self.shop_facts(ctx, shop_id)
        try:
            aggregate = self.repository.get(aggregate_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(f"{what} not found") from None
        if not isinstance(aggregate, kind) or aggregate.shop_id != shop_id:
            raise NotFound(f"{what} not found")
        return aggregate

    # -- shops and listings ---------------------------------------------------------------
    def open_shop(self, ctx: CommandContext, cmd: models.OpenShop) -> Result:
        shop_id = uuid4()

        def decide() -> Decision:
            shop = Shop.open(ctx.tenant_id, cmd.name, cmd.currency, cmd.marketplace, ctx.meta(shop_id))
            opener, grant_rows = self.grant_opener(ctx, shop.id)  # the seller who opens a shop gets it
            return Decision([shop, *opener], {"shop_id": str(shop.id), "version": shop.version}, created=True,
                            reservations=[Reservation(shop.id, "tenant", ctx.tenant_id, shop.id)],
                            statements=[*grant_rows, (LIST_SHOP, [shop.id, ctx.tenant_id, shop.currency])])

        return self.execute(ctx, "open_shop", cmd.model_dump(mode="json"), decide)

    def register_listings(self, ctx: CommandContext, shop_id: UUID, cmd: models.RegisterListings) -> Result:
        _, currency = self.shop_facts(ctx, shop_id)

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
            return Decision(listings, body, created=True, reservations=reservations)

        return self.execute(ctx, "register_listings", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def _refuse_taken(self, shop_id: UUID, kind: str, keys: list[str], field: str) -> None:
        taken = self.recorder.reserved(shop_id, kind, keys)
        for i, key in enumerate(keys):
            if key in taken:
                raise Conflict(f"{key!r} is already used in this shop", field=field.format(i))

    def set_price(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, cmd: models.SetPrice) -> Result:
        def decide() -> Decision:
            listing = self._listing_at(ctx, shop_id, listing_id, cmd.expected_version)
            price = Money.price(cmd.price, cmd.currency, "price")
            if price.currency != listing.currency:
                raise DomainError("currency", f"{price.currency} does not match the listing's {listing.currency}")
            changed = listing.change_price(price, ctx.meta(shop_id, cmd.source, cmd.reason), rule=cmd.rule)
            return Decision([listing], self.listing_answer(listing, changed), strict=cmd.expected_version is not None)

        return self.execute(ctx, "set_price", {"listing": str(listing_id), **cmd.model_dump(mode="json")}, decide,
                            serial=[listing_id])

    def set_guardrails(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, cmd: models.SetGuardrails) -> Result:
        def decide() -> Decision:
            listing = self._listing_at(ctx, shop_id, listing_id, cmd.expected_version)
            if cmd.currency != listing.currency:
                raise DomainError("currency", f"{cmd.currency} does not match the listing's {listing.currency}")
            # Floor, ceiling and cost are replaced; automation limits (their own route) are kept.
            guardrails = replace(listing.guardrails, floor=_money(cmd.floor, cmd.currency, "floor", positive=True),
                                 ceiling=_money(cmd.ceiling, cmd.currency, "ceiling", positive=True),
                                 cost=_money(cmd.cost, cmd.currency, "cost"))
            changed = listing.set_guardrails(guardrails, ctx.meta(shop_id, reason=cmd.reason))
            return Decision([listing], self.listing_answer(listing, changed), strict=cmd.expected_version is not None)

        return self.execute(ctx, "set_guardrails", {"listing": str(listing_id), **cmd.model_dump(mode="json")}, decide,
                            serial=[listing_id])

    def bulk_set_prices(self, ctx: CommandContext, shop_id: UUID, cmd: models.BulkSetPrices) -> Result:
        _, currency = self.shop_facts(ctx, shop_id)  # unknown or others' shop: NotFound before any item is looked at
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
                    listing = self._listing_at(ctx, shop_id, item.listing_id, item.expected_version)
                except NotFound:
                    raise DomainError(f"{where}.listing_id", "no such listing in this shop") from None
                except Conflict as e:
                    raise Conflict(e.detail, field=f"{where}.expected_version", **e.extra) from None
                try:
                    changed = listing.change_price(Money.price(item.price, cmd.currency, "price"), meta, rule=cmd.rule)
                except DomainError as e:
                    raise _prefixed(e, where) from None
                listings.append(listing)
                answers.append(self.listing_answer(listing, changed))
            strict = any(item.expected_version for item in cmd.changes)
            return Decision(listings, {"changes": answers}, strict=strict)

        return self.execute(ctx, "bulk_set_prices", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide,
                            serial=[item.listing_id for item in cmd.changes])

    def _listing_at(self, ctx, shop_id: UUID, listing_id: UUID, expected_version: int | None) -> Listing:
        listing = self.listing(ctx, shop_id, listing_id)
        if expected_version is not None and listing.version != expected_version:
            raise Conflict(f"listing is at version {listing.version}, not {expected_version}",
                           field="expected_version", current_version=listing.version)
        return listing

    @staticmethod
    def listing_answer(listing: Listing, changed: bool = True) -> dict:
        return {"listing_id": str(listing.id), "version": listing.version, "changed": changed,
                "price": str(listing.price.amount), "currency": listing.currency}

    # -- facts ----------------------------------------------------------------------------
    def record_observations(self, ctx: CommandContext, shop_id: UUID, cmd: models.RecordObservations) -> Result:
        _, currency = self.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            self._refuse_unknown_listings(shop_id, [o.listing_id for o in cmd.observations], "observations[{}].listing_id")
            prices = _amounts(cmd.observations, "price", "observations", positive=True)
            observations = [Observation(o.listing_id, o.competitor, price, o.observed_at, o.source)
                            for o, price in zip(cmd.observations, prices)]
            batch = ObservationBatch.record(shop_id, currency, observations, ctx.meta(shop_id, cmd.source, cmd.reason))
            return Decision([batch], {"batch_id": str(batch.id), "recorded": len(observations)}, created=True)

        return self.execute(ctx, "record_observations", lambda: {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def record_sales(self, ctx: CommandContext, shop_id: UUID, cmd: models.RecordSales) -> Result:
        _, currency = self.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            self._refuse_unknown_listings(shop_id, [s.listing_id for s in cmd.sales], "sales[{}].listing_id")
            seen: dict[str, int] = {}
            for i, s in enumerate(cmd.sales):
                if s.transaction_id in seen:
                    raise DomainError(f"sales[{i}].transaction_id", f"also appears at sales[{seen[s.transaction_id]}]")
                seen[s.transaction_id] = i
            self._refuse_taken(shop_id, "sale_transaction", [s.transaction_id for s in cmd.sales], "sales[{}].transaction_id")
            lines = sale_lines(cmd.sales)
            batch = SalesBatch.record(shop_id, currency, lines, ctx.meta(shop_id, cmd.source, cmd.reason))
            reservations = [Reservation(shop_id, "sale_transaction", s.transaction_id, batch.id) for s in cmd.sales]
            return Decision([batch], {"batch_id": str(batch.id), "recorded": len(lines)}, created=True,
                            reservations=reservations)

        return self.execute(ctx, "record_sales", lambda: {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def _refuse_unknown_listings(self, shop_id: UUID, listing_ids: list[UUID], field: str) -> None:
        distinct = set(listing_ids)  # a batch names few listings many times: format each once
        known = {UUID(x) for x in self.recorder.reserved(shop_id, "listing", [str(x) for x in distinct])}
        for i, listing_id in enumerate(listing_ids):
            if listing_id not in known:
                raise DomainError(field.format(i), "no such listing in this shop")
