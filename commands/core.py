"""The write side's core: the one eventsourcing Application every handler is given.

A handler (commands/listings.py, rules.py, identity.py, rollback.py) loads aggregates through
the core, lets them decide, and hands the decision to `execute`, which saves all resulting events
in one transaction with the command's idempotency record and uniqueness reservations.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from typing import Callable, Iterable, Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.persistence import IntegrityError
from psycopg.conninfo import conninfo_to_dict

import codec
from commands.committed import CommittedListings, PricingRepository, StaleRead, check_written, first_try
from commands.context import CommandContext, Decision, Result
from commands.persistence import IdempotencyRecord, IndexRow, PricingEventStore, Recordings
from commands.serial import Hold, WriterBusy, WriterLocks
from domain.account import Account
from domain.errors import CommandRefused, Conflict, DomainError, IdempotencyKeyReused, NotFound
from domain.listing import Listing
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


class WriteCore(Application):
    """The application core every handler is given: the event store and its recorder, idempotency
    (`execute`), reservations, snapshots, the memory of committed listings, and loading with tenancy."""

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
        """(tenant, currency) of a shop the context may use; NotFound for others' shops. A shop the
        API checked for this request (ctx.checked_shop) is not checked again."""
        if getattr(ctx, "checked_shop", None) == shop_id and shop_id in self._shops:  # the edge asks as a Principal
            return self._shops[shop_id]
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

    def listing_at(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, expected_version: int | None) -> Listing:
        return at_expected_version(self.listing(ctx, shop_id, listing_id), expected_version, "listing")


def at_expected_version(aggregate, expected_version: int | None, what: str):
    """The aggregate, if the client's `expected_version` (when given) is still its version."""
    if expected_version is not None and aggregate.version != expected_version:
        raise Conflict(f"{what} is at version {aggregate.version}, not {expected_version}",
                       field="expected_version", current_version=aggregate.version)
    return aggregate
