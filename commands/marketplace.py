"""The Etsy connection's commands: connect (PKCE), tokens kept encrypted and rotated, disconnect,
a revoked grant, push outcomes, listings and sales synced in, and drift.

HTTP to Etsy is not done here: the callers (api/routers/marketplace.py, streams/etsy_*.py) pass
what Etsy answered, or a function that asks it (`exchange`). Tokens and verifiers are encrypted
with the identity's Secrets (the TOTP secrets' key), bound to the shop; they never enter an event.
"""

from __future__ import annotations

import secrets as random_source
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import urlencode
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from psycopg.rows import dict_row

from commands import models
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.credentials import Secrets
from commands.listings import Listings
from domain.errors import Conflict, DomainError, InvalidValue, NotFound
from domain.marketplace import (FAILED, PUSHED, RETRYING, SCOPES, EtsyConnection, EtsyPush, EtsyRefused,
                                connection_id, push_id, s256)
from domain.listing import MAX_TITLE
from domain.meta import Actor, ActorKind, Source
from domain.money import Money

PKCE_TTL = timedelta(minutes=10)
SYNC_ACTOR = Actor("etsy-connection", ActorKind.SERVICE)
SALES_PER_COMMAND = 500


@dataclass(frozen=True)
class TokenAnswer:
    """What Etsy's token endpoint answered."""

    access_token: str
    refresh_token: str
    expires_in: float

    @property
    def etsy_user_id(self) -> int:
        """Etsy prefixes its tokens with the seller's user id ("12345678.abc...")."""
        prefix = self.access_token.partition(".")[0]
        if not prefix.isdigit():
            raise EtsyRefused(None, "the access token does not start with the seller's user id")
        return int(prefix)


@dataclass(frozen=True)
class Grant:
    """A shop's live grant, decrypted."""

    shop_id: UUID
    tenant_id: str
    etsy_shop_id: int
    status: str
    access_token: str | None
    refresh_token: str | None
    access_expires_at: datetime | None
    generation: int


Exchange = Callable[[str, str, str], TokenAnswer]  # (code, verifier, redirect_uri) -> tokens
OwnerOf = Callable[[str, int], int]  # (access token, Etsy shop id) -> the shop owner's Etsy user id


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _bound(shop_id: UUID, what: str) -> bytes:
    return b"etsy " + what.encode() + b" " + shop_id.bytes


class Marketplace:
    def __init__(self, core: WriteCore, listings: Listings, secrets: Callable[[], Secrets]):
        self.core, self.listings = core, listings
        self._secrets = secrets  # the identity's, read at use: the server may set its key after start

    @property
    def secrets(self) -> Secrets:
        return self._secrets()

    # -- connect ----------------------------------------------------------------------------
    def start_connect(self, ctx: CommandContext, shop_id: UUID, etsy_shop_id: int, client_id: str,
                      redirect_uri: str, authorize_url: str) -> dict:
        """A PKCE start: the verifier and state stay here (single use, PKCE_TTL); the seller's browser
        goes to the answered URL and comes back to the callback with a code and the state."""
        tenant, _ = self.core.shop_facts(ctx, shop_id)
        verifier, state = random_source.token_urlsafe(64), random_source.token_urlsafe(32)
        expires = _now() + PKCE_TTL
        self._run([("INSERT INTO marketplace.etsy_pkce (state_digest, shop_id, tenant_id, actor_id, verifier_encrypted,"
                    " redirect_uri, expires_at, etsy_shop_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [self.secrets.digest(state), shop_id, tenant, ctx.actor.id,
                     self.secrets.encrypt(verifier.encode(), _bound(shop_id, "verifier")), redirect_uri, expires,
                     etsy_shop_id])])
        query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                 "scope": " ".join(SCOPES), "state": state, "code_challenge": s256(verifier),
                 "code_challenge_method": "S256"}
        return {"authorize_url": f"{authorize_url}?{urlencode(query)}", "state": state,
                "expires_at": expires.isoformat()}

    def finish_connect(self, state: str, code: str, exchange: Exchange, owner_of: OwnerOf) -> Result:
        """The callback: the state is spent whatever happens next; the code is exchanged with the
        verifier; the Etsy shop named at the start must be the granting seller's; the connection
        event and the encrypted tokens commit together."""
        started = self._rows("UPDATE marketplace.etsy_pkce SET used_at = now() WHERE state_digest = %s"
                             " AND used_at IS NULL AND expires_at > now()"
                             " RETURNING shop_id, tenant_id, actor_id, verifier_encrypted, redirect_uri, etsy_shop_id",
                             [self.secrets.digest(state)])
        if not started:
            raise InvalidValue("state", "unknown, already used or expired: start the connection again")
        row = started[0]
        shop_id = row["shop_id"]
        verifier = self.secrets.decrypt(bytes(row["verifier_encrypted"]), _bound(shop_id, "verifier")).decode()
        try:
            tokens = exchange(code, verifier, row["redirect_uri"])
            user_id = tokens.etsy_user_id
        except EtsyRefused as e:
            raise InvalidValue("code", f"Etsy refused the code: {e.answer[:300]}") from None
        try:
            owner = owner_of(tokens.access_token, row["etsy_shop_id"])
        except EtsyRefused as e:
            raise InvalidValue("etsy_shop_id", f"Etsy did not answer for the shop: {e.answer[:300]}") from None
        if owner != user_id:
            raise InvalidValue("etsy_shop_id", f"Etsy shop {row['etsy_shop_id']} is not the granting seller's")
        ctx = CommandContext(actor=Actor(row["actor_id"]), tenant_id=row["tenant_id"])
        self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            if self._rows("SELECT 1 FROM marketplace.etsy_grants WHERE etsy_shop_id = %s AND status = 'connected'"
                          " AND shop_id <> %s", [row["etsy_shop_id"], shop_id]):
                raise Conflict("this Etsy shop is connected to another shop of the engine", field="etsy_shop_id")
            meta = ctx.meta(shop_id, reason="connected to Etsy")
            connection = self._connection(shop_id)
            if connection is None:
                connection = EtsyConnection.connect(shop_id, row["etsy_shop_id"], user_id, list(SCOPES), meta)
            else:
                connection.reconnect(row["etsy_shop_id"], user_id, list(SCOPES), meta)
            return Decision([connection], self._describe(connection), created=connection.version == 1,
                            statements=[self._grant_row(shop_id, row["tenant_id"], row["etsy_shop_id"], user_id, tokens)])

        return self.core.execute(ctx, "etsy_connect", {"shop": str(shop_id)}, decide)

    def _grant_row(self, shop_id: UUID, tenant_id: str, etsy_shop_id: int, user_id: int, tokens: TokenAnswer) -> tuple:
        access, refresh, expires = self._sealed(shop_id, tokens)
        return ("INSERT INTO marketplace.etsy_grants (shop_id, tenant_id, etsy_shop_id, etsy_user_id, status,"
                " access_encrypted, refresh_encrypted, access_expires_at, refresh_expires_at, generation)"
                " VALUES (%s, %s, %s, %s, 'connected', %s, %s, %s, now() + interval '90 days', 1)"
                " ON CONFLICT (shop_id) DO UPDATE SET etsy_shop_id = excluded.etsy_shop_id,"
                " etsy_user_id = excluded.etsy_user_id, status = 'connected', status_reason = '',"
                " access_encrypted = excluded.access_encrypted, refresh_encrypted = excluded.refresh_encrypted,"
                " access_expires_at = excluded.access_expires_at, refresh_expires_at = excluded.refresh_expires_at,"
                " generation = marketplace.etsy_grants.generation + 1, updated_at = now()",
                [shop_id, tenant_id, etsy_shop_id, user_id, access, refresh, expires])

    def _sealed(self, shop_id: UUID, tokens: TokenAnswer) -> tuple[bytes, bytes, datetime]:
        return (self.secrets.encrypt(tokens.access_token.encode(), _bound(shop_id, "access")),
                self.secrets.encrypt(tokens.refresh_token.encode(), _bound(shop_id, "refresh")),
                _now() + timedelta(seconds=tokens.expires_in))

    def disconnect(self, ctx: CommandContext, shop_id: UUID) -> Result:
        self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            connection = self._connection(shop_id)
            if connection is None:
                raise NotFound("the shop is not connected to Etsy")
            changed = connection.disconnect(ctx.meta(shop_id, reason="disconnected from Etsy"))
            return Decision([connection] if changed else [], self._describe(connection), statements=[
                ("UPDATE marketplace.etsy_grants SET status = 'disconnected', access_encrypted = NULL,"
                 " refresh_encrypted = NULL, generation = generation + 1, updated_at = now() WHERE shop_id = %s",
                 [shop_id])] if changed else [])

        return self.core.execute(ctx, "etsy_disconnect", {"shop": str(shop_id)}, decide)

    def connection(self, ctx: CommandContext, shop_id: UUID) -> dict:
        self.core.shop_facts(ctx, shop_id)
        connection = self._connection(shop_id)
        if connection is None:
            raise NotFound("the shop is not connected to Etsy")
        return self._describe(connection)

    def _connection(self, shop_id: UUID) -> EtsyConnection | None:
        try:
            return self.core.repository.get(connection_id(shop_id))
        except AggregateNotFoundError:
            return None

    @staticmethod
    def _describe(connection: EtsyConnection) -> dict:
        return {"shop_id": str(connection.shop_id), "etsy_shop_id": connection.etsy_shop_id,
                "status": connection.status, "reason": connection.reason, "version": connection.version}

    # -- tokens -----------------------------------------------------------------------------
    def grant(self, shop_id: UUID) -> Grant | None:
        rows = self._rows("SELECT * FROM marketplace.etsy_grants WHERE shop_id = %s", [shop_id])
        return self._grant_of(rows[0]) if rows else None

    def _grant_of(self, row: dict) -> Grant:
        shop_id = row["shop_id"]
        return Grant(shop_id, row["tenant_id"], row["etsy_shop_id"], row["status"],
                     self._open(shop_id, row["access_encrypted"], "access"),
                     self._open(shop_id, row["refresh_encrypted"], "refresh"), row["access_expires_at"], row["generation"])

    def _open(self, shop_id: UUID, sealed, what: str) -> str | None:
        return None if sealed is None else self.secrets.decrypt(bytes(sealed), _bound(shop_id, what)).decode()

    def connected_shops(self) -> list[UUID]:
        return [r["shop_id"] for r in self._rows("SELECT shop_id FROM marketplace.etsy_grants WHERE status = 'connected'"
                                                 " ORDER BY shop_id", [])]

    def rotate(self, shop_id: UUID, seen_generation: int, refresh: Callable[[str], TokenAnswer]) -> Grant | None:
        """Refresh the grant, one refresher at a time (the row stays locked over Etsy's answer, so
        the new refresh token is stored in the transaction that spent the old one). A grant rotated
        since `seen_generation` is answered as it is now; None when the shop is no longer connected.
        Etsy's refusal (GrantRefused) rolls back and propagates: the caller records it."""
        with self.core.recorder.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as curs:
            row = curs.execute("SELECT * FROM marketplace.etsy_grants WHERE shop_id = %s FOR UPDATE", [shop_id]).fetchone()
            if row is None or row["status"] != "connected":
                return None
            if row["generation"] == seen_generation:
                tokens = refresh(self._open(shop_id, row["refresh_encrypted"], "refresh"))
                access, sealed_refresh, expires = self._sealed(shop_id, tokens)
                row = curs.execute(
                    "UPDATE marketplace.etsy_grants SET access_encrypted = %s, refresh_encrypted = %s,"
                    " access_expires_at = %s, refresh_expires_at = now() + interval '90 days',"
                    " generation = generation + 1, updated_at = now() WHERE shop_id = %s RETURNING *",
                    [access, sealed_refresh, expires, shop_id]).fetchone()
            return self._grant_of(row)

    def record_revoked(self, shop_id: UUID, answer: str) -> None:
        """Etsy refused the grant: recorded once as an event; push and sync pause until reconnect."""
        ctx = self.service_context(shop_id)

        def decide() -> Decision:
            connection = self._connection(shop_id)
            if connection is None or not connection.grant_revoked(answer[:500], ctx.meta(shop_id, reason="Etsy refused the grant")):
                return Decision([], {})
            return Decision([connection], self._describe(connection), statements=[
                ("UPDATE marketplace.etsy_grants SET status = 'revoked', status_reason = %s, access_encrypted = NULL,"
                 " refresh_encrypted = NULL, generation = generation + 1, updated_at = now() WHERE shop_id = %s",
                 [answer[:500], shop_id])])

        self.core.execute(ctx, "etsy_grant_revoked", {"shop": str(shop_id)}, decide)

    def service_context(self, shop_id: UUID, cause: str | None = None) -> CommandContext:
        try:
            shop = self.core.repository.get(shop_id)
        except AggregateNotFoundError:
            raise NotFound("shop not found") from None
        return CommandContext(actor=SYNC_ACTOR, tenant_id=shop.tenant_id, causation_id=cause)

    # -- push outcomes ----------------------------------------------------------------------
    def record_push(self, shop_id: UUID, listing_id: UUID, version: int, price: Money, outcome: str,
                    status: int | None = None, answer: str = "", retry_in: float = 0.0) -> bool:
        """Record a push's outcome with its effect on the queue in one transaction: pushed or failed
        take the row off the queue (unless a newer change replaced it meanwhile); retrying counts the
        attempt and sets the next try. False when that push already has its outcome (a redelivery)."""
        ctx = self.service_context(shop_id, cause=f"{listing_id}/{version}")

        def decide() -> Decision:
            meta = ctx.meta(shop_id, reason=f"Etsy push: {outcome}")
            try:
                push = self.core.repository.get(push_id(listing_id, version))
            except AggregateNotFoundError:
                push = EtsyPush(shop_id=shop_id, listing_id=listing_id, version=version, price=price, meta=meta)
            if push.outcome is not None:
                return Decision([], {"recorded": False})
            if outcome == PUSHED:
                push.pushed(meta)
                statements = [_unqueue(listing_id, version),
                              ("UPDATE marketplace.etsy_listings SET etsy_price = %s, pushed_version = greatest(pushed_version, %s)"
                               " WHERE listing_id = %s", [price.amount, version, listing_id])]
            elif outcome == FAILED:
                push.failed(status, answer, meta)
                statements = [_unqueue(listing_id, version)]
            elif outcome == RETRYING:
                push.retrying(status, answer, retry_in, meta)
                statements = [("UPDATE marketplace.etsy_push_queue SET attempts = attempts + 1, last_error = %s,"
                               " next_try_at = now() + make_interval(secs => %s) WHERE listing_id = %s AND version = %s",
                               [answer[:500], retry_in, listing_id, version])]
            else:
                raise InvalidValue("outcome", f"unknown push outcome {outcome!r}")
            return Decision([push], {"recorded": True}, statements=statements)

        return self.core.execute(ctx, "etsy_push_outcome", {}, decide, serial=[push_id(listing_id, version)]).body["recorded"]

    # -- sync in ----------------------------------------------------------------------------
    def link_listings(self, shop_id: UUID, found: list[dict]) -> tuple[dict[int, UUID], set[int]]:
        """Each Etsy listing ({etsy_listing_id, sku, title, state, price: Money}) as an engine listing:
        the unknown registered (external id = Etsy's listing id), every one linked; returns the links
        and the Etsy ids registered now."""
        ctx = self.service_context(shop_id)
        _, currency = self.core.shop_facts(ctx, shop_id)
        external = [str(x["etsy_listing_id"]) for x in found]
        known = self.core.recorder.reserved(shop_id, "external_id", external)
        taken_skus = self.core.recorder.reserved(shop_id, "sku", [x["sku"] for x in found if x["sku"]])
        new = [x for x in found if str(x["etsy_listing_id"]) not in known and x["price"].currency == currency]
        registered = {x["etsy_listing_id"] for x in new}
        if new:
            specs, skus = [], set()
            for x in new:
                sku = x["sku"] if x["sku"] and x["sku"] not in taken_skus and x["sku"] not in skus else f"etsy-{x['etsy_listing_id']}"
                skus.add(sku)
                specs.append(models.ListingSpec(external_id=str(x["etsy_listing_id"]), sku=sku, title=x["title"][:MAX_TITLE] or sku,
                                                price=x["price"].amount, currency=currency, status=_status(x["state"])))
            for start in range(0, len(specs), 500):
                self.listings.register_listings(ctx, shop_id, models.RegisterListings(
                    listings=specs[start:start + 500], source="import", reason="synced from Etsy"))
            known = self.core.recorder.reserved(shop_id, "external_id", external)
        links = {int(key): aggregate_id for key, aggregate_id in known.items()}
        self._run([("INSERT INTO marketplace.etsy_listings (listing_id, shop_id, etsy_listing_id, title, state, etsy_price)"
                    " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::int8[], %s::text[], %s::text[], %s::numeric[])"
                    " ON CONFLICT (listing_id) DO UPDATE SET title = excluded.title, state = excluded.state,"
                    " etsy_price = coalesce(marketplace.etsy_listings.etsy_price, excluded.etsy_price)",
                    [[links[x["etsy_listing_id"]] for x in found if x["etsy_listing_id"] in links],
                     [shop_id for x in found if x["etsy_listing_id"] in links],
                     [x["etsy_listing_id"] for x in found if x["etsy_listing_id"] in links],
                     [x["title"] for x in found if x["etsy_listing_id"] in links],
                     [x["state"] for x in found if x["etsy_listing_id"] in links],
                     [x["price"].amount for x in found if x["etsy_listing_id"] in links]])])
        return links, registered

    def describe(self, shop_id: UUID, listing_id: UUID, title: str, state: str) -> bool:
        """The title and state Etsy shows, as the listing's (Listing.Described); False when unchanged."""
        ctx = self.service_context(shop_id)

        def decide() -> Decision:
            listing = self.core.listing(ctx, shop_id, listing_id)
            meta = ctx.meta(shop_id, Source.MARKETPLACE, reason="described at Etsy")
            changed = listing.describe((title.strip() or listing.title)[:MAX_TITLE], _status(state), meta)
            return Decision([listing] if changed else [], {"changed": changed})

        return self.core.execute(ctx, "etsy_describe", {}, decide, serial=[listing_id]).body["changed"]

    def record_sales(self, shop_id: UUID, lines: list[models.SaleIn]) -> int:
        """Sales and returns from Etsy's receipts, idempotent on the transaction id: lines whose id is
        already recorded are left out (a sync read again after a crash doubles nothing)."""
        if not lines:
            return 0
        ctx = self.service_context(shop_id)
        done = self.core.recorder.reserved(shop_id, "sale_transaction", [x.transaction_id for x in lines])
        new = list({x.transaction_id: x for x in lines if x.transaction_id not in done}.values())
        for start in range(0, len(new), SALES_PER_COMMAND):
            chunk = new[start:start + SALES_PER_COMMAND]
            key = "etsy-sales:" + s256(",".join(x.transaction_id for x in chunk))[:40]
            self.listings.record_sales(_keyed(ctx, key), shop_id, models.RecordSales(
                sales=chunk, source="import", reason="synced from Etsy receipts"))
        return len(new)

    def drift(self, shop_id: UUID, listing_id: UUID, etsy_listing_id: int, etsy_price: Money) -> str:
        """A price seen at Etsy that the engine did not push: the listing's price becomes it (source
        marketplace) within its guardrails, else the refusal is recorded; a drift row either way."""
        ctx = self.service_context(shop_id)

        def decide() -> Decision:
            listing = self.core.listing(ctx, shop_id, listing_id)
            meta = ctx.meta(shop_id, Source.MARKETPLACE, reason="price changed at Etsy")
            engine_price = listing.price
            try:
                applied, refusal = listing.change_price(etsy_price, meta), None
                changed = [listing]
            except DomainError as e:
                connection = self._connection(shop_id)
                connection.drift_refused(listing_id, etsy_price, engine_price, e.detail, meta)
                applied, refusal, changed = False, e.detail, [connection]
            outcome = "applied" if applied else ("unchanged" if refusal is None else "refused")
            statements = [("UPDATE marketplace.etsy_listings SET etsy_price = %s,"
                           " pushed_version = greatest(pushed_version, %s) WHERE listing_id = %s",
                           [etsy_price.amount, listing.version, listing_id])]
            if outcome != "unchanged":  # Etsy shows the engine's price: no drift to report
                statements.append(("INSERT INTO marketplace.etsy_drifts (shop_id, listing_id, etsy_listing_id, etsy_price,"
                                   " engine_price, currency, applied, refusal) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                                   [shop_id, listing_id, etsy_listing_id, etsy_price.amount, engine_price.amount,
                                    etsy_price.currency, refusal is None, refusal]))
            return Decision(changed if (applied or refusal) else [], {"outcome": outcome}, statements=statements)

        return self.core.execute(ctx, "etsy_drift", {}, decide, serial=[listing_id]).body["outcome"]

    # -- SQL beside the events --------------------------------------------------------------
    def _rows(self, sql: str, params) -> list[dict]:
        with self.core.recorder.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as curs:
            curs.execute(sql, params)
            return curs.fetchall() if curs.description else []

    def _run(self, statements: list[tuple]) -> None:
        with self.core.recorder.datastore.get_connection() as conn, conn.transaction():
            for sql, params in statements:
                conn.execute(sql, params)


def _unqueue(listing_id: UUID, version: int) -> tuple:
    return ("DELETE FROM marketplace.etsy_push_queue WHERE listing_id = %s AND version = %s", [listing_id, version])


def _keyed(ctx: CommandContext, key: str) -> CommandContext:
    return CommandContext(actor=ctx.actor, tenant_id=ctx.tenant_id, idempotency_key=key, causation_id=ctx.causation_id)


def _status(state: str) -> str:
    """Etsy's listing state as the engine's status."""
    return {"active": "active", "inactive": "inactive", "draft": "draft", "sold_out": "sold_out",
            "expired": "inactive", "edit": "draft"}.get(state, "inactive")
