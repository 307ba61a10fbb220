"""The vault of personal-data keys (crypto-shredding, issue 16 item 5): one key per data subject in
`subject_keys` (migrations/0960), wrapped under a key derived from ETSYPRO_SECRET_KEY.

- Accounts: the account id is its subject; its username and its clients' addresses are sealed
  under its key in its events, and erasing it erases every reason it wrote too.
- Buyers of a shop: the log knows a buyer only by a random subject id; the vault finds it again
  by a keyed hash of (shop, name). Erasing deletes that row: the id then links to nobody.
- Reasons: a command's free text is sealed under a subject of its own (one per command), owned
  by the account that sent it.

Erasing deletes the key rows and appends a SubjectErased event (the tombstone) to the tenant's
Privacy stream in one transaction. Keys are cached per process for KEY_CACHE_SECONDS (logins look
up their account's key); this process's erasures invalidate its cache at once, other processes'
are seen within that time. Readers (read/audit.py) do not cache: one query per page of events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError
from psycopg.rows import dict_row

from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.credentials import SUBJECT_WRAPPING, Secrets
from domain.errors import NotFound
from domain.meta import EventMeta, Source
from domain.personal import (KeyRing, Privacy, SubjectKind, SubjectSealer, is_sealed, lookup_subject_id, new_subject_key,
                             privacy_stream_id)

INSERT_KEY = ("INSERT INTO subject_keys (subject_id, tenant_id, kind, owner, lookup, wrapped_key)"
              " VALUES (%s, %s, %s, %s, %s, %s)")
Statement = tuple[str, Any]
KEY_CACHE_SECONDS = 5
_USERNAME_IN_PARENS = re.compile(r"\(([^()\s]+)\)\s*$")


def buyer_name(buyer: str) -> str:
    """Whom a buyer cell names: 'Ada Lovelace (adal)', as some exports write it, is 'adal'."""
    named = _USERNAME_IN_PARENS.search(buyer)
    return (named.group(1) if named else buyer).strip().casefold()


def reason_subject_id(tenant_id: str, command_id: str) -> UUID:
    """A command's reason subject: derived from the command id, so a retried command seals under
    the same key and the CLI finds it from the id the events carry (meta.command_id)."""
    return uuid5(NAMESPACE_URL, f"https://etsypro.dev/privacy/reason/{tenant_id}/{command_id}")


def seal_reason(vault: Vault, ctx: CommandContext, reason: str) -> str:
    """A person's free text, sealed under the command's reason subject (owned by its author).
    The empty reason stays as it is: no key for nothing."""
    if not reason or is_sealed(reason):
        return reason
    owner = _uuid_or_none(ctx.actor.id)
    return vault.reason_sealer(ctx.tenant_id, ctx.command_id, owner).seal(reason)


def _uuid_or_none(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class SealingContext(CommandContext):
    """A command context whose events' reasons are sealed (Identity gives it to people and
    services calling the API). One seal per command and text, however many events share the meta:
    a 10,000-observation batch seals once."""

    vault: Any = field(default=None, compare=False, repr=False)
    _sealed: dict = field(default_factory=dict, compare=False, repr=False)

    def meta(self, shop_id, source: Source | str = Source.MANUAL, reason: str = "",
             occurred_at: datetime | None = None) -> EventMeta:
        if reason and reason not in self._sealed:
            self._sealed[reason] = seal_reason(self.vault, self, reason)
        return super().meta(shop_id, source, self._sealed.get(reason, reason), occurred_at)


class Vault:
    def __init__(self, core: WriteCore, secrets: Callable[[], Secrets]):
        self.core, self._secrets = core, secrets
        self.ring = KeyRing(self._wrapped_keys, lambda: self.unwrap, KEY_CACHE_SECONDS)

    # -- keys -----------------------------------------------------------------------------
    def new_subject(self, tenant_id: str, kind: str, subject_id: UUID | None = None, owner: UUID | None = None,
                    lookup: str | None = None) -> tuple[SubjectSealer, Statement]:
        """A fresh subject's sealer and the row that keeps its key: commit it with the events using it."""
        subject_id = subject_id or uuid4()
        key = new_subject_key()
        row = (INSERT_KEY, [subject_id, tenant_id, kind, owner, lookup, self._wrap(subject_id, key)])
        return SubjectSealer(subject_id, key), row

    def sealer(self, subject_id: UUID) -> SubjectSealer | None:
        """The subject's sealer; None once it was erased (or for values stored before sealing)."""
        return self.keys([subject_id])[subject_id]

    def keys(self, subject_ids: Iterable[UUID]) -> dict[UUID, SubjectSealer | None]:
        return self.ring.keys(subject_ids)

    def reveal(self, value: Any) -> Any:
        """`value` (an event as described, an aggregate's state) with its sealed strings opened or ERASED."""
        return self.ring.reveal(value)

    def _wrapped_keys(self, subject_ids: list[UUID]) -> dict[UUID, bytes]:
        rows = self._rows("SELECT subject_id, wrapped_key FROM subject_keys WHERE subject_id = ANY(%s)", [subject_ids])
        return {r["subject_id"]: bytes(r["wrapped_key"]) for r in rows}

    def reason_sealer(self, tenant_id: str, command_id: str, owner: UUID | None) -> SubjectSealer:
        """The key a command's reason is sealed under, made on first use."""
        return self.ensure(tenant_id, SubjectKind.REASON, reason_subject_id(tenant_id, command_id), owner)

    def ensure(self, tenant_id: str, kind: str, subject_id: UUID, owner: UUID | None = None) -> SubjectSealer:
        """The subject's sealer, its key made now if it has none: one round trip for a new subject
        (committed at once: a key whose command then fails seals nothing, and goes with its
        subject's or owner's erasure); a subject that has a key (a retried command) keeps it."""
        sealer, (sql, params) = self.new_subject(tenant_id, kind, subject_id, owner)
        if self._rows(sql + " ON CONFLICT (subject_id) DO NOTHING RETURNING 1", params, commit=True):
            self.ring.remember(sealer)
            return sealer
        self._forget([subject_id])
        return self.sealer(subject_id)

    # -- buyers -----------------------------------------------------------------------------
    def buyers(self, tenant_id: str, shop_id: UUID, names: Iterable[str]) -> dict[str, str]:
        """name -> the buyer's subject id (hex) in this shop, made for names not seen before:
        one query to find them and one to add the new ones, whatever the number of names."""
        key = self._lookup_key(tenant_id)
        by_lookup = {key.fingerprint(f"buyer\x00{shop_id}\x00{n}"): n for n in set(names)}
        found = self._buyer_subjects(tenant_id, list(by_lookup))
        new = [lookup for lookup in by_lookup if lookup not in found]
        if new:
            ids = [uuid4() for _ in new]
            wrapped = [self._wrap(s, new_subject_key()).hex() for s in ids]
            added = self._rows(
                "INSERT INTO subject_keys (subject_id, tenant_id, kind, lookup, wrapped_key)"
                " SELECT s::uuid, %s, 'buyer', l, decode(w, 'hex') FROM unnest(string_to_array(%s, ','),"
                " string_to_array(%s, ','), string_to_array(%s, ',')) AS n(s, l, w)"
                " ON CONFLICT DO NOTHING RETURNING lookup, subject_id",
                [tenant_id, ",".join(map(str, ids)), ",".join(new), ",".join(wrapped)], commit=True)
            found.update({r["lookup"]: r["subject_id"] for r in added})
            if lost := [lookup for lookup in new if lookup not in found]:  # a concurrent import won these names
                found.update(self._buyer_subjects(tenant_id, lost))
        return {name: found[lookup].hex for lookup, name in by_lookup.items()}

    def buyer_subject(self, tenant_id: str, shop_id: UUID, name: str) -> UUID | None:
        lookup = self._buyer_lookup(tenant_id, shop_id, name)
        return self._buyer_subjects(tenant_id, [lookup]).get(lookup)

    def _buyer_subjects(self, tenant_id: str, lookups: list[str]) -> dict[str, UUID]:
        # One comma-joined string, split by the server: cheaper to send than a large text array.
        rows = self._rows("SELECT k.lookup, k.subject_id FROM unnest(string_to_array(%s, ',')) AS wanted(lookup)"
                          " JOIN subject_keys k ON k.tenant_id = %s AND k.kind = 'buyer' AND k.lookup = wanted.lookup",
                          [",".join(lookups), tenant_id])
        return {r["lookup"]: r["subject_id"] for r in rows}

    def _buyer_lookup(self, tenant_id: str, shop_id: UUID, name: str) -> str:
        return self._lookup_key(tenant_id).fingerprint(f"buyer\x00{shop_id}\x00{name}")

    def attempt_lookup(self, tenant_id: str, username: str | None) -> str | None:
        """Finds the failed logins that named `username` when its account is erased."""
        return None if username is None else self._lookup_key(tenant_id).fingerprint(f"attempt\x00{username}")

    def attempts_naming(self, tenant_id: str, username: str) -> list[UUID]:
        return [r["subject_id"] for r in self._rows(
            "SELECT subject_id FROM subject_keys WHERE tenant_id = %s AND kind = 'attempt' AND lookup = %s",
            [tenant_id, self.attempt_lookup(tenant_id, username)])]

    def _lookup_key(self, tenant_id: str) -> SubjectSealer:
        # Lookups are keyed by the tenant's lookup key: a table of them cannot be matched against
        # guessed names without the server key that unwraps it, and a rotation re-wraps, not re-keys, it.
        subject = lookup_subject_id(tenant_id)
        return self.sealer(subject) or self.ensure(tenant_id, SubjectKind.LOOKUP, subject)

    # -- erasing ------------------------------------------------------------------------------
    def erase(self, ctx: CommandContext, subjects: list[tuple[UUID, str]], name: str, command: dict,
              more: Callable[[], tuple[list, list[Statement]]] = lambda: ([], [])) -> Result:
        """Delete the subjects' keys and record their tombstones in one transaction, with what
        `more` decides besides (aggregates with pending events, lookup rows to clear)."""
        ids = [s for s, _ in subjects]

        def decide() -> Decision:
            meta = ctx.meta(None)
            privacy = self._privacy(ctx.tenant_id) or Privacy(tenant_id=ctx.tenant_id, meta=meta)
            privacy.erase(subjects, meta)
            aggregates, statements = more()
            return Decision([privacy, *aggregates], {"erased": [{"subject_id": str(s), "kind": k} for s, k in subjects]},
                            statements=[*statements, ("DELETE FROM subject_keys WHERE subject_id = ANY(%s)", [ids])])

        try:
            return self.core.execute(ctx, name, command, decide)
        finally:
            self._forget(ids)

    def erase_buyer(self, ctx: CommandContext, shop_id: UUID, buyer: str) -> Result:
        """A shop's buyer, as its files name them: the pseudonym in its orders then links to nobody."""
        self.core.shop_facts(ctx, shop_id)  # another tenant's shop is not found
        subject = self.buyer_subject(ctx.tenant_id, shop_id, buyer_name(buyer))
        if subject is None:
            raise NotFound("no such buyer in this shop (or already erased)", field="buyer")
        return self.erase(ctx, [(subject, SubjectKind.BUYER)], "erase_buyer", {"shop": str(shop_id), "buyer": subject.hex})

    def erase_reason(self, ctx: CommandContext, command_id: str) -> Result:
        """One command's free-text reason (the command id its events carry in meta.command_id)."""
        subject = reason_subject_id(ctx.tenant_id, command_id)
        if self.subject_kind(ctx.tenant_id, subject) != SubjectKind.REASON:
            raise NotFound("no reason of this command in this tenant (or already erased)", field="command_id")
        return self.erase(ctx, [(subject, SubjectKind.REASON)], "erase_reason", {"command": command_id})

    def owned_reasons(self, owner: UUID) -> list[UUID]:
        return [r["subject_id"] for r in self._rows(
            "SELECT subject_id FROM subject_keys WHERE owner = %s AND kind = 'reason'", [owner])]

    def subject_kind(self, tenant_id: str, subject_id: UUID) -> str | None:
        rows = self._rows("SELECT kind FROM subject_keys WHERE subject_id = %s AND tenant_id = %s", [subject_id, tenant_id])
        return rows[0]["kind"] if rows else None

    def _privacy(self, tenant_id: str) -> Privacy | None:
        try:
            return self.core.repository.get(privacy_stream_id(tenant_id))
        except AggregateNotFoundError:
            return None

    # -- helpers ------------------------------------------------------------------------------
    def _wrap(self, subject_id: UUID, key: bytes) -> bytes:
        return self._secrets().encrypt(key, subject_id.bytes, SUBJECT_WRAPPING)

    def unwrap(self, subject_id: UUID, wrapped: bytes) -> bytes:
        """A subject's key (under the current server key, else the previous during a rotation);
        what AuditHistory.use_unwrap is given."""
        return self._secrets().decrypt(wrapped, subject_id.bytes, SUBJECT_WRAPPING)

    def _forget(self, subject_ids: Iterable[UUID]) -> None:
        self.ring.forget(subject_ids)

    def _rows(self, sql: str, params, commit: bool = False) -> list[dict]:
        return rows_of(self.core, sql, params, commit)


def rows_of(core: WriteCore, sql: str, params, commit: bool = False) -> list[dict]:
    """One statement on the write side's pool, outside any command's transaction."""
    with core.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
        curs.execute(sql, params)
        found = curs.fetchall() if curs.description else []
        if commit:
            conn.commit()
        return found


