"""Identity commands (on the one core, so account events share the one event log and
hash chain): accounts and roles, logins with lockout, MFA, sessions with rotating refresh tokens,
API keys, and who is calling (the principal behind a token or key).

Secrets go only into the credential tables of migrations/0200_identity.sql, written in the same
transaction as the account event they belong to (Decision.statements). They never reach an
event, a command_log row, a log line or an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg.rows import dict_row

from commands import credentials
from codec.plain import describe_event
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.credentials import Secrets
from commands.personal import SealingContext, Vault, rows_of, seal_reason
from domain.errors import Conflict, NotFound
from domain.account import (Account, AccountKind, Action, FailureReason, Grants, normalize_username, sealed_client,
                            valid_username)
from domain.errors import DomainError, InvalidValue, InvariantViolated
from domain.meta import Actor, ActorKind
from domain.personal import ERASED, SubjectKind, SubjectSealer, is_sealed
from domain.security import TenantSecurity, shown_username, tenant_security_id

REFRESH_TOKEN_TTL = timedelta(days=14)
SESSION_MAX_AGE = timedelta(days=30)      # refreshing cannot keep a session alive longer
MFA_CHALLENGE_TTL = timedelta(minutes=5)
MFA_CHALLENGE_ATTEMPTS = 5
PASSWORD_RESET_TTL = timedelta(hours=24)
ANONYMOUS = Actor("anonymous", ActorKind.USER)  # who fails a login naming no account

Statement = tuple[str, Any]


class LoginRefused(Exception):
    """Always the same, whatever the cause: unknown user, wrong password, locked, bad code."""


class TokenRefused(Exception):
    """A refresh token that is unknown, expired, revoked or reused."""


class SecretRefused(Exception):
    """A password or code that was wrong, or not even checked: the account refuses this client
    for `retry_after` more (None: the secret was checked and did not match)."""

    def __init__(self, retry_after: timedelta | None = None):
        super().__init__("refused")
        self.retry_after = retry_after


class TooManyAttempts(Exception):
    """A signed-in caller confirming a secret must wait: the login budget of its account and client."""

    def __init__(self, field: str, retry_after: timedelta):
        super().__init__(f"too many wrong attempts; retry in {_seconds(retry_after)} s")
        self.field, self.retry_after_s = field, _seconds(retry_after)


def _seconds(wait: timedelta) -> int:
    return max(1, int(wait.total_seconds() + 0.999))


@dataclass(frozen=True)
class Principal:
    """Who is calling, as proven by an access token or an API key."""

    account_id: str
    tenant_id: str
    kind: str              # user | service
    grants: Grants
    session_id: str        # the token family (login session) or the API key id
    via: str               # "token" | "api_key"
    sealing: Any = field(default=None, compare=False, repr=False)  # the vault, when reasons are sealed

    def may_see(self, shop_id) -> bool:
        """The tenancy check needs no CommandContext: the edge asks the principal itself."""
        return self.grants.shops is None or str(shop_id) in self.grants.shops

    def context(self, **kwargs) -> CommandContext:
        actor_kind = ActorKind.SERVICE if self.kind == AccountKind.SERVICE.value else ActorKind.USER
        common = {"actor": Actor(self.account_id, actor_kind), "tenant_id": self.tenant_id, "shops": self.grants.shops}
        if self.sealing is not None:  # a person's free text, erasable with its author (commands/personal.py)
            return SealingContext(**common, **kwargs, vault=self.sealing)
        return CommandContext(**common, **kwargs)


@dataclass(frozen=True)
class Session:
    account_id: str
    tenant_id: str
    family_id: str
    refresh_token: str  # shown to the client once; stored as a digest


@dataclass(frozen=True)
class MfaChallenge:
    challenge: str
    expires_in: int


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Identity:
    """Accounts, roles, logins, MFA, sessions and API keys, on the one core and event log."""

    def __init__(self, core: WriteCore, secrets: Secrets | None = None):
        self.core = core
        self.secrets = secrets or Secrets.ephemeral()  # api/server.py installs the configured key
        self.vault = Vault(core, lambda: self.secrets)  # personal data's keys (crypto-shredding)
        # Callers' free-text reasons sealed in every command's events. Off until every reader of
        # reasons opens them (/tmp/prompts/shred.shared.patch); the admin's disable reason always is.
        self.seal_reasons = False

    def use_secret_key(self, secret: str | bytes, previous: str | bytes | None = None) -> None:
        """The server key, and during a rotation the one being retired (Secrets)."""
        self.secrets = Secrets(secret, previous)

    # -- accounts (admins, and the CLI for the first admin) ---------------------------------
    def create_account(self, ctx: CommandContext, username: str, kind: str, password: str | None,
                       roles: dict[str, list[str] | None]) -> Result:
        kind = AccountKind(kind)
        if (kind is AccountKind.USER) != (password is not None):
            raise InvalidValue("password", "people need a password; service accounts use API keys instead")
        password_hash = credentials.hash_password(password) if password is not None else None
        account_id = uuid4()

        def decide() -> Decision:
            sealer, key_row = self.vault.new_subject(ctx.tenant_id, SubjectKind.ACCOUNT, account_id)
            account = Account.register(ctx.tenant_id, username, kind, self._meta(ctx), sealer=sealer)
            plain = valid_username(username)  # kept in the clear only in the accounts table, for logins
            if self._account_id_by_username(ctx.tenant_id, plain) is not None:
                raise Conflict("this username is taken in this tenant", field="username")
            for role, shops in roles.items():
                self._refuse_foreign_shops(ctx, shops)
                account.grant_role(role, shops, self._meta(ctx))
            statements = [key_row,
                          ("INSERT INTO accounts (account_id, tenant_id, username, kind) VALUES (%s, %s, %s, %s)",
                           [account.id, account.tenant_id, plain, account.kind]),
                          *_role_rows(account)]
            if password_hash is not None:
                statements.append(("INSERT INTO password_credentials (account_id, hash) VALUES (%s, %s)",
                                   [account.id, password_hash]))
            return Decision([account], describe_account(account, plain), created=True, statements=statements)

        # The password is neither part of the hashed command nor of the stored answer.
        command = {"username": username, "kind": kind.value, "roles": roles}
        return self.core.execute(ctx, "create_account", command, decide)

    def grant_role(self, ctx: CommandContext, account_id: UUID, role: str, shops: list[str] | None) -> Result:
        return self._change_roles(ctx, "grant_role", account_id, role, shops,
                                  lambda account, meta: account.grant_role(role, shops, meta))

    def revoke_role(self, ctx: CommandContext, account_id: UUID, role: str, shops: list[str] | None) -> Result:
        return self._change_roles(ctx, "revoke_role", account_id, role, shops,
                                  lambda account, meta: account.revoke_role(role, shops, meta))

    def _change_roles(self, ctx, name, account_id, role, shops, change) -> Result:
        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            self._refuse_foreign_shops(ctx, shops)
            changed = change(account, self._meta(ctx))
            return Decision([account] if changed else [], self.describe(account),
                            statements=_role_rows(account) if changed else [])

        return self.core.execute(ctx, name, {"account": str(account_id), "role": role, "shops": shops}, decide)

    def unlock_account(self, ctx: CommandContext, account_id: UUID) -> Result:
        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            changed = account.unlock(self._meta(ctx))
            return Decision([account] if changed else [], self.describe(account))

        return self.core.execute(ctx, "unlock_account", {"account": str(account_id)}, decide)

    def reset_mfa(self, ctx: CommandContext, account_id: UUID) -> Result:
        """An admin removes a lost second factor; the person enrolls again at next login."""
        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            changed = account.disable_mfa(self._meta(ctx, reason="reset by an admin"))
            return Decision([account] if changed else [], self.describe(account), statements=_mfa_removed(account.id))

        return self.core.execute(ctx, "reset_mfa", {"account": str(account_id)}, decide)

    def grant_opener(self, ctx: CommandContext, shop_id: UUID) -> tuple[list[Account], list[Statement]]:
        """The account opening a shop gets it in each shop-scoped role that may open shops
        (a seller of some shops becomes seller of this one too). Tenant-wide roles see it anyway."""
        try:
            account = self.tenant_account(ctx, UUID(ctx.actor.id))
        except (ValueError, NotFound):
            return [], []  # not an account (a policy, or a test's bare context)
        meta = self._meta(ctx)
        changed = [account.grant_role(role, [str(shop_id)], meta)
                   for role, shops in list(account.roles.items())
                   if shops is not None and account.grants_of(role).allows("shops:create")]
        return ([account], _role_rows(account)) if any(changed) else ([], [])

    def _refuse_foreign_shops(self, ctx: CommandContext, shops: list[str] | None) -> None:
        """Grants and keys name only shops of the caller's own tenant (others' look unknown)."""
        for i, shop in enumerate(shops or ()):
            try:
                self.core.shop_facts(ctx, UUID(str(shop)))
            except (NotFound, ValueError):
                raise DomainError(f"shops[{i}]", "no such shop in this tenant") from None

    def describe(self, account: Account) -> dict:
        return describe_account(account, self.username_of(account))

    def username_of(self, account: Account) -> str:
        """The account's username as its event holds it, opened (ERASED once the account was erased)."""
        return self.vault.reveal(account.username)

    def tenant_account(self, ctx: CommandContext, account_id: UUID) -> Account:
        """An account of the caller's tenant; others' accounts do not exist for the caller."""
        try:
            account = self.core.repository.get(account_id)
        except AggregateNotFoundError:
            raise NotFound("account not found") from None
        if not isinstance(account, Account) or account.tenant_id != ctx.tenant_id:
            raise NotFound("account not found")
        return account

    def accounts_of(self, ctx: CommandContext) -> list[dict]:
        rows = self._rows("SELECT account_id, username, kind, created_at FROM accounts WHERE tenant_id = %s"
                          " ORDER BY username", [ctx.tenant_id])
        return [{"account_id": str(r["account_id"]), "username": r["username"], "kind": r["kind"],
                 "created_at": r["created_at"].isoformat()} for r in rows]

    # -- API keys ---------------------------------------------------------------------------
    def issue_api_key(self, ctx: CommandContext, account_id: UUID, scopes: list[str],
                      shops: list[str] | None) -> Result:
        key, key_id = credentials.new_token("ek"), uuid4()

        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            self._refuse_foreign_shops(ctx, shops)
            account.issue_api_key(str(key_id), scopes, shops, self._meta(ctx))
            statement = ("INSERT INTO api_keys (key_id, account_id, key_digest, prefix, scopes, shops)"
                         " VALUES (%s, %s, %s, %s, %s, %s::uuid[])",
                         [key_id, account.id, self.secrets.digest(key), key[:10], sorted(set(scopes)),
                          None if shops is None else [UUID(str(s)) for s in shops]])
            body = {"key_id": str(key_id), "api_key": key, "prefix": key[:10], "scopes": sorted(set(scopes)),
                    "shops": None if shops is None else sorted(map(str, shops))}
            return Decision([account], body, created=True, statements=[statement])

        # The answer carries the key: it must never be kept in command_log for a replay.
        return self.core.execute(replace(ctx, idempotency_key=None), "issue_api_key", {}, decide)

    def revoke_api_key(self, ctx: CommandContext, account_id: UUID, key_id: UUID) -> Result:
        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            if not account.revoke_api_key(str(key_id), self._meta(ctx)):
                raise NotFound("no such live API key", field="key_id")
            return Decision([account], {"key_id": str(key_id), "revoked": True},
                            statements=[("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s", [key_id])])

        return self.core.execute(ctx, "revoke_api_key", {"account": str(account_id), "key": str(key_id)}, decide)

    def api_keys_of(self, ctx: CommandContext, account_id: UUID) -> list[dict]:
        self.tenant_account(ctx, account_id)
        rows = self._rows("SELECT key_id, prefix, scopes, shops, created_at, revoked_at FROM api_keys"
                          " WHERE account_id = %s ORDER BY created_at", [account_id])
        return [{"key_id": str(r["key_id"]), "prefix": r["prefix"], "scopes": r["scopes"],
                 "shops": None if r["shops"] is None else [str(s) for s in r["shops"]],
                 "created_at": r["created_at"].isoformat(),
                 "revoked_at": r["revoked_at"] and r["revoked_at"].isoformat()} for r in rows]

    # -- logging in -------------------------------------------------------------------------
    def login(self, username: str, password: str, client: str, tenant_id: str) -> Session | MfaChallenge:
        """Check a password of a tenant's account; then either a session, or a challenge for the
        second factor. Usernames are unique within a tenant only, so a login names its tenant.

        Unknown tenant or user, wrong password, locked account and throttled client all raise the
        same LoginRefused after the same argon2 work (the API also holds every refusal to one
        minimum time, api/routers/auth.py), so neither the answer nor its timing tells which it was.
        """
        found = self._password_of(tenant_id, normalize_username(username))
        if found is None:
            credentials.waste_a_verify(password)
            self._record_unknown_username(tenant_id, username, client)
            raise LoginRefused
        account_id, stored_hash = found
        account = self.core.repository.get(account_id)
        upgraded = []

        def password_matches() -> FailureReason | None:
            matches, upgraded_hash = credentials.verify_password(password, stored_hash)
            upgraded.append(upgraded_hash)
            return None if matches else FailureReason.BAD_PASSWORD

        try:
            self._check_secret(account, client, Action.LOGIN, password_matches,
                               instead=lambda: credentials.waste_a_verify(password))
        except SecretRefused:
            raise LoginRefused from None
        upgraded_hash = upgraded[0]
        rehash = [("UPDATE password_credentials SET hash = %s WHERE account_id = %s", [upgraded_hash, account_id])
                  ] if upgraded_hash else []
        if account.mfa_required:
            self._run(rehash)
            return self._new_challenge(account_id)
        return self._start_session(account, "password", client, rehash)

    def login_second_factor(self, challenge: str, client: str, code: str | None = None,
                            recovery_code: str | None = None) -> Session:
        account_id = self._take_challenge_attempt(challenge)
        if account_id is None:
            raise LoginRefused
        account = self.core.repository.get(account_id)
        if code is not None:
            method, check = "password+totp", lambda: self._check_totp(account_id, code)
        else:
            method, check = "password+recovery_code", lambda: self._use_recovery_code(account_id, recovery_code or "")
        try:
            self._check_secret(account, client, Action.LOGIN, check)
        except SecretRefused:
            raise LoginRefused from None
        used = [("UPDATE mfa_challenges SET used_at = now() WHERE challenge_digest = ANY(%s)",
                 [self.secrets.digests(challenge)])]
        return self._start_session(account, method, client, used)

    def _check_secret(self, account: Account, client: str, action: Action,
                      check: Callable[[], FailureReason | None], instead: Callable[[], None] = lambda: None) -> None:
        """The one gate for every check of a password or a code (logins, and a signed-in caller
        confirming one): the account's budget for this client decides whether the secret is even
        checked (if not, `instead` spends the same time), and every refusal or mismatch is a
        LoginFailed event on the account. Raises SecretRefused."""
        now, (who, _) = _now(), self._client(account, client)
        if (refused := account.refusal(who, now)) is not None:
            instead()
            self._record_failure(account, refused, client, action)
            raise SecretRefused(account.retry_after(who, now))
        failure = check()
        if failure is not None:
            self._record_failure(account, failure, client, action)
            raise SecretRefused()

    def _check_own_secret(self, ctx: CommandContext, client: str, action: Action, field: str,
                          check: Callable[[], FailureReason | None]) -> None:
        """_check_secret for a signed-in caller: refused while it must wait, refused naming `field` on a mismatch."""
        try:
            self._check_secret(self.tenant_account(ctx, UUID(ctx.actor.id)), client, action, check)
        except SecretRefused as refused:
            if refused.retry_after is not None:
                raise TooManyAttempts(field, refused.retry_after) from None
            raise DomainError(field, "does not match") from None

    def _record_failure(self, account: Account, reason: FailureReason, client: str,
                        action: Action = Action.LOGIN) -> None:
        loaded = [account]  # the caller's copy first; a retry after a lost race reloads

        who, address = self._client(account, client)

        def decide() -> Decision:
            current = loaded.pop() if loaded else self.core.repository.get(account.id)
            current.login_failed(reason, who, self._meta(self._as_account(current)), action, address)
            return Decision([current], {})

        self.core.execute(self._as_account(account), "login_failed", {}, decide)

    def _start_session(self, account: Account, method: str, client: str, statements: list[Statement]) -> Session:
        family_id, token = uuid4(), credentials.new_token("rt")
        now = _now()
        loaded = [account]  # the caller's copy first; a retry after a lost race reloads
        who, address = self._client(account, client)

        def decide() -> Decision:
            current = loaded.pop() if loaded else self.core.repository.get(account.id)
            if current.refusal(who, now) is not None:  # refused between the secret's check and now
                raise LoginRefused
            current.login_succeeded(method, who, self._meta(self._as_account(current)), address)
            return Decision([current], {}, statements=[
                *statements,
                ("INSERT INTO token_families (family_id, account_id, expires_at) VALUES (%s, %s, %s)",
                 [family_id, current.id, now + SESSION_MAX_AGE]),
                _refresh_token_row(self.secrets.digest(token), family_id, now)])

        self.core.execute(self._as_account(account), "login", {}, decide)
        return Session(str(account.id), account.tenant_id, str(family_id), token)

    def _refuse_erased(self, account_id: UUID) -> None:
        """An erased account stays erased: no second erasure, no enabling (create a new account)."""
        if self._rows("SELECT 1 FROM accounts WHERE account_id = %s AND username = %s",
                      [account_id, _erased_username(account_id)]):
            raise InvariantViolated("account_id", "the account was erased")

    def _client(self, account: Account, address: str) -> tuple[str, str]:
        """(the client as the account's events record it, its address sealed): sealed_client
        under the account's key. An account from before sealing gets its key now; an erased
        account has none and refuses every secret."""
        sealer = self.vault.sealer(account.id)
        if sealer is None and is_sealed(account.username):
            raise SecretRefused()
        return sealed_client(address, sealer or self._late_key(account))

    def _late_key(self, account: Account) -> SubjectSealer:
        return self.vault.ensure(account.tenant_id, SubjectKind.ACCOUNT, account.id)

    def _new_challenge(self, account_id: UUID) -> MfaChallenge:
        challenge = credentials.new_token("mfa")
        self._run([("INSERT INTO mfa_challenges (challenge_digest, account_id, expires_at) VALUES (%s, %s, %s)",
                    [self.secrets.digest(challenge), account_id, _now() + MFA_CHALLENGE_TTL])])
        return MfaChallenge(challenge, int(MFA_CHALLENGE_TTL.total_seconds()))

    def _take_challenge_attempt(self, challenge: str) -> UUID | None:
        rows = self._rows(
            "UPDATE mfa_challenges SET attempts = attempts + 1 WHERE challenge_digest = ANY(%s) AND used_at IS NULL"
            " AND expires_at > now() AND attempts < %s RETURNING account_id",
            [self.secrets.digests(challenge), MFA_CHALLENGE_ATTEMPTS])
        return rows[0]["account_id"] if rows else None

    def _check_totp(self, account_id: UUID, code: str) -> FailureReason | None:
        secret = self._totp_secret(account_id, confirmed=True)
        step = credentials.matching_totp_step(secret, code) if secret else None
        if step is None:
            return FailureReason.BAD_MFA_CODE
        # Atomic: of two logins racing with the same code, one moves last_used_step, the other
        # finds it already there. A code of this step or any earlier one is never accepted again.
        moved = self._rows("UPDATE totp_credentials SET last_used_step = %s WHERE account_id = %s"
                           " AND last_used_step < %s RETURNING 1", [step, account_id, step])
        return None if moved else FailureReason.MFA_CODE_REPLAYED

    def _use_recovery_code(self, account_id: UUID, code: str) -> FailureReason | None:
        used = self._rows("UPDATE recovery_codes SET used_at = now() WHERE account_id = %s AND code_digest = ANY(%s)"
                          " AND used_at IS NULL RETURNING 1",
                          [account_id, self.secrets.digests(credentials.normalize_recovery_code(code))])
        return None if used else FailureReason.BAD_RECOVERY_CODE

    # -- sessions ---------------------------------------------------------------------------
    def refresh(self, refresh_token: str) -> Session:
        """Rotate: the presented token is spent and a new one of the same family is issued.
        A spent token presented again means two parties hold it: the whole family is revoked."""
        now = _now()
        with self.core.recorder.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as curs:
            row = curs.execute(  # a token digested under the previous key is spent here and its successor under the current
                "SELECT t.token_digest, t.family_id, t.expires_at, t.used_at, f.account_id, f.revoked_at,"
                " f.expires_at AS family_expires"
                " FROM refresh_tokens t JOIN token_families f USING (family_id) WHERE t.token_digest = ANY(%s)"
                " FOR UPDATE OF t", [self.secrets.digests(refresh_token)]).fetchone()
            if row is None or row["revoked_at"] is not None:
                raise TokenRefused
            if row["used_at"] is None and min(row["expires_at"], row["family_expires"]) > now:
                token = credentials.new_token("rt")
                curs.execute("UPDATE refresh_tokens SET used_at = %s WHERE token_digest = %s", [now, row["token_digest"]])
                curs.execute(*_refresh_token_row(self.secrets.digest(token), row["family_id"], now,
                                                 row["family_expires"]))
                account = self.core.repository.get(row["account_id"])
                return Session(str(row["account_id"]), account.tenant_id, str(row["family_id"]), token)
        if row["used_at"] is not None:
            self.end_session(row["account_id"], row["family_id"], "refresh_token_reused")
        raise TokenRefused

    def end_session(self, account_id: UUID, family_id: UUID, reason: str) -> None:
        """Revoke a token family: its refresh tokens stop working and so do its access tokens."""
        def decide() -> Decision:
            account = self.core.repository.get(account_id)
            live = self._rows("SELECT 1 FROM token_families WHERE family_id = %s AND revoked_at IS NULL", [family_id])
            if not live:
                return Decision([], {})
            account.revoke_token_family(str(family_id), reason, self._meta(self._as_account(account)))
            return Decision([account], {}, statements=[
                ("UPDATE token_families SET revoked_at = now(), revoked_reason = %s"
                 " WHERE family_id = %s AND revoked_at IS NULL", [reason, family_id])])

        self.core.execute(self._as_account(self.core.repository.get(account_id)), "end_session", {}, decide)

    # -- one's own credentials --------------------------------------------------------------
    def change_password(self, ctx: CommandContext, session_id: str, current: str, new: str, client: str) -> Result:
        self._check_own_secret(ctx, client, Action.CHANGE_PASSWORD, "current_password",
                               lambda: self._password_mismatch(UUID(ctx.actor.id), current))
        new_hash = credentials.hash_password(new)

        def decide() -> Decision:
            account = self.tenant_account(ctx, UUID(ctx.actor.id))
            account.change_password(self._meta(ctx))
            return Decision([account], {"changed": True}, statements=[
                ("UPDATE password_credentials SET hash = %s, changed_at = now() WHERE account_id = %s",
                 [new_hash, account.id]),
                # Other sessions may be the reason for the change: they end now.
                ("UPDATE token_families SET revoked_at = now(), revoked_reason = 'password_changed'"
                 " WHERE account_id = %s AND family_id <> %s AND revoked_at IS NULL", [account.id, UUID(session_id)])])

        return self.core.execute(replace(ctx, idempotency_key=None), "change_password", {}, decide)

    def enroll_mfa(self, ctx: CommandContext) -> tuple[str, str]:
        """(secret, otpauth URI) for an authenticator app; MFA starts once a code confirms it."""
        secret = credentials.new_totp_secret()

        def decide() -> Decision:
            account = self.tenant_account(ctx, UUID(ctx.actor.id))
            account.enroll_mfa(self._meta(ctx))
            encrypted = self.secrets.encrypt(secret.encode(), account.id.bytes)
            return Decision([account], {}, statements=[
                *_mfa_removed(account.id),
                ("INSERT INTO totp_credentials (account_id, secret_encrypted) VALUES (%s, %s)", [account.id, encrypted])])

        self.core.execute(replace(ctx, idempotency_key=None), "enroll_mfa", {}, decide)
        username = self.username_of(self.tenant_account(ctx, UUID(ctx.actor.id)))
        return secret, credentials.totp_uri(secret, username)

    def confirm_mfa(self, ctx: CommandContext, code: str, client: str) -> list[str]:
        """Turn MFA on with a first valid code; returns ten single-use recovery codes (shown once)."""
        account_id = UUID(ctx.actor.id)
        secret = self._totp_secret(account_id, confirmed=False)
        steps = []

        def code_matches() -> FailureReason | None:
            steps.append(credentials.matching_totp_step(secret, code) if secret else None)
            return FailureReason.BAD_MFA_CODE if steps[0] is None else None

        self._check_own_secret(ctx, client, Action.CONFIRM_MFA, "code", code_matches)
        step = steps[0]
        codes = credentials.new_recovery_codes()

        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            account.confirm_mfa(self._meta(ctx))
            return Decision([account], {}, statements=[
                ("UPDATE totp_credentials SET confirmed = true, last_used_step = %s WHERE account_id = %s",
                 [step, account_id]),
                ("DELETE FROM recovery_codes WHERE account_id = %s", [account_id]),
                ("INSERT INTO recovery_codes (account_id, code_digest) SELECT %s, unnest(%s::bytea[])",
                 [account_id, [self.secrets.digest(c) for c in codes]])])

        self.core.execute(replace(ctx, idempotency_key=None), "confirm_mfa", {}, decide)
        return codes

    def disable_mfa(self, ctx: CommandContext, password: str, client: str) -> Result:
        self._check_own_secret(ctx, client, Action.DISABLE_MFA, "password",
                               lambda: self._password_mismatch(UUID(ctx.actor.id), password))

        def decide() -> Decision:
            account = self.tenant_account(ctx, UUID(ctx.actor.id))
            changed = account.disable_mfa(self._meta(ctx))
            return Decision([account] if changed else [], {"mfa": account.mfa}, statements=_mfa_removed(account.id))

        return self.core.execute(replace(ctx, idempotency_key=None), "disable_mfa", {}, decide)

    # -- who is calling ---------------------------------------------------------------------
    def principal_for_session(self, account_id: str, family_id: str) -> Principal | None:
        """The account behind an access token, if its session is still live."""
        rows = self._rows(
            "SELECT a.account_id, a.tenant_id, a.kind, " + _ROLES_OF_A +
            " FROM accounts a JOIN token_families f ON f.account_id = a.account_id"
            " WHERE a.account_id = %s AND f.family_id = %s AND f.revoked_at IS NULL AND f.expires_at > now()"
            " AND a.disabled_at IS NULL",
            [account_id, family_id])
        if not rows:
            return None
        r = rows[0]
        return Principal(str(r["account_id"]), r["tenant_id"], r["kind"], Grants.of_roles(r["roles"]),
                         str(family_id), "token", self._sealing())

    def principal_for_api_key(self, key: str) -> Principal | None:
        digests = self.secrets.digests(key)
        rows = self._rows(
            "SELECT a.account_id, a.tenant_id, a.kind, k.key_id, k.key_digest, k.scopes, k.shops, " + _ROLES_OF_A +
            " FROM api_keys k JOIN accounts a ON a.account_id = k.account_id"
            " WHERE k.key_digest = ANY(%s) AND k.revoked_at IS NULL AND a.disabled_at IS NULL", [digests])
        if not rows:
            return None
        r = rows[0]
        if bytes(r["key_digest"]) != digests[0]:  # digested under the previous server key: re-key it while we hold the key
            self._run([("UPDATE api_keys SET key_digest = %s WHERE key_id = %s", [digests[0], r["key_id"]])])
        shops = None if r["shops"] is None else [str(s) for s in r["shops"]]
        grants = Grants.of_roles(r["roles"]).narrowed(r["scopes"], shops)
        return Principal(str(r["account_id"]), r["tenant_id"], r["kind"], grants, str(r["key_id"]), "api_key",
                         self._sealing())

    def _sealing(self) -> Vault | None:
        return self.vault if self.seal_reasons else None

    def describe_self(self, principal: Principal) -> dict:
        account = self.core.repository.get(UUID(principal.account_id))
        return {**self.describe(account), "via": principal.via}

    # -- disabling an account, and the password reset an admin issues ------------------------
    def disable_account(self, ctx: CommandContext, account_id: UUID, reason: str) -> Result:
        """Its logins are refused and its sessions and API keys stop with this transaction."""
        if str(account_id) == ctx.actor.id:
            raise InvariantViolated("account_id", "an admin cannot disable their own account")

        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            if not account.disable(self._meta(ctx, reason=seal_reason(self.vault, ctx, reason))):
                return Decision([], self.describe(account))
            return Decision([account], self.describe(account), statements=_stopped(account.id))

        return self.core.execute(ctx, "disable_account", {"account": str(account_id), "reason": reason}, decide)

    def erase_account(self, ctx: CommandContext, account_id: UUID) -> Result:
        """Crypto-shred a person (or service): the account's key and the keys of the reasons it
        wrote and of failed logins naming its username are deleted, a SubjectErased tombstone is
        recorded for each, and the account is disabled, its credentials deleted and its username
        in the lookup table replaced, all in one transaction. Its events stay; what they held of
        the person reads as erased. Another tenant's account is not found."""
        if str(account_id) == ctx.actor.id:
            raise InvariantViolated("account_id", "an admin cannot erase their own account")
        account = self.tenant_account(ctx, account_id)
        self._refuse_erased(account.id)
        username = self.username_of(account)
        subjects = [(account.id, SubjectKind.ACCOUNT),
                    *((s, SubjectKind.REASON) for s in self.vault.owned_reasons(account.id)),
                    *((s, SubjectKind.ATTEMPT) for s in self.vault.attempts_naming(ctx.tenant_id, username))]

        def more() -> tuple[list, list[Statement]]:
            current = self.tenant_account(ctx, account_id)
            disabled = current.disable(self._meta(ctx))
            return [current] if disabled else [], [*_stopped(current.id), *_erased(current.id)]

        return self.vault.erase(ctx, subjects, "erase_account", {"account": str(account_id)}, more)


    def enable_account(self, ctx: CommandContext, account_id: UUID) -> Result:
        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            self._refuse_erased(account.id)
            if not account.enable(self._meta(ctx)):
                return Decision([], self.describe(account))
            return Decision([account], self.describe(account), statements=[
                ("UPDATE accounts SET disabled_at = NULL WHERE account_id = %s", [account.id])])

        return self.core.execute(ctx, "enable_account", {"account": str(account_id)}, decide)

    def issue_password_reset(self, ctx: CommandContext, account_id: UUID) -> Result:
        """A one-time token that sets a new password (shown once; a newer one replaces it)."""
        token, expires_at = credentials.new_token("pr"), _now() + PASSWORD_RESET_TTL

        def decide() -> Decision:
            account = self.tenant_account(ctx, account_id)
            account.issue_password_reset(expires_at, self._meta(ctx))
            return Decision([account], {"account_id": str(account.id), "reset_token": token,
                                        "expires_at": expires_at.isoformat()}, created=True, statements=[
                ("UPDATE password_resets SET used_at = now() WHERE account_id = %s AND used_at IS NULL", [account.id]),
                ("INSERT INTO password_resets (token_digest, account_id, expires_at) VALUES (%s, %s, %s)",
                 [self.secrets.digest(token), account.id, expires_at])])

        # The answer carries the token: it must never be kept in command_log for a replay.
        return self.core.execute(replace(ctx, idempotency_key=None), "issue_password_reset", {}, decide)

    def password_reset_account(self, token: str) -> Account:
        """The account a live reset token is for (TokenRefused: unknown, spent or expired)."""
        rows = self._rows("SELECT account_id FROM password_resets WHERE token_digest = ANY(%s) AND used_at IS NULL"
                          " AND expires_at > now()", [self.secrets.digests(token)])
        if not rows:
            raise TokenRefused
        return self.core.repository.get(rows[0]["account_id"])

    def reset_password(self, token: str, new_password: str) -> None:
        """Spend the token (once, whoever races), set the password, end every session."""
        new_hash = credentials.hash_password(new_password)
        claimed = self._rows("UPDATE password_resets SET used_at = now() WHERE token_digest = ANY(%s)"
                             " AND used_at IS NULL AND expires_at > now() RETURNING account_id",
                             [self.secrets.digests(token)], commit=True)
        if not claimed:
            raise TokenRefused
        account_id = claimed[0]["account_id"]

        def decide() -> Decision:
            account = self.core.repository.get(account_id)
            try:
                account.reset_password(self._meta(self._as_account(account)))
            except DomainError:
                raise TokenRefused from None
            return Decision([account], {}, statements=[
                ("UPDATE password_credentials SET hash = %s, changed_at = now() WHERE account_id = %s",
                 [new_hash, account_id]),
                ("UPDATE token_families SET revoked_at = now(), revoked_reason = 'password_reset'"
                 " WHERE account_id = %s AND revoked_at IS NULL", [account_id])])

        self.core.execute(self._as_account(self.core.repository.get(account_id)), "reset_password", {}, decide)

    # -- failed logins naming no account: the tenant's security stream ------------------------
    def _record_unknown_username(self, tenant_id: str, username: str, client: str) -> None:
        """On the tenant's stream within its per-minute budget; past it, counted for the next
        recorded one. A tenant with no account gets no stream: anyone could name new tenants."""
        if not self._rows("SELECT 1 FROM accounts WHERE tenant_id = %s LIMIT 1", [tenant_id]):
            return
        ctx = CommandContext(actor=ANONYMOUS, tenant_id=tenant_id)

        def decide() -> Decision:
            meta = self._meta(ctx)
            stream = self._security_stream(tenant_id) or TenantSecurity(tenant_id=tenant_id, meta=meta)
            if not stream.may_record(meta.occurred_at):
                return Decision([], {}, statements=[
                    ("INSERT INTO unknown_logins_suppressed AS s (tenant_id, attempts) VALUES (%s, 1)"
                     " ON CONFLICT (tenant_id) DO UPDATE SET attempts = s.attempts + 1", [tenant_id])])
            rows = self._rows("SELECT attempts FROM unknown_logins_suppressed WHERE tenant_id = %s", [tenant_id])
            suppressed = rows[0]["attempts"] if rows else 0
            sealer, key_row = self.vault.new_subject(tenant_id, SubjectKind.ATTEMPT,
                                                     lookup=self.vault.attempt_lookup(tenant_id, shown_username(username)))
            stream.unknown_username(username, client, suppressed, meta, sealer)
            return Decision([stream], {}, statements=[
                key_row,
                ("UPDATE unknown_logins_suppressed SET attempts = attempts - %s, since = now() WHERE tenant_id = %s",
                 [suppressed, tenant_id])])

        self.core.execute(ctx, "unknown_username_login", {}, decide)

    def _security_stream(self, tenant_id: str) -> TenantSecurity | None:
        try:
            return self.core.repository.get(tenant_security_id(tenant_id))
        except AggregateNotFoundError:
            return None

    def security_stream(self, ctx: CommandContext, after_version: int = 0, limit: int = 100) -> dict:
        """The tenant's failed logins naming no account (and how many were over budget), oldest first."""
        pending = self._rows("SELECT attempts FROM unknown_logins_suppressed WHERE tenant_id = %s", [ctx.tenant_id])
        return {**self._events_page(tenant_security_id(ctx.tenant_id), after_version, limit),
                "not_yet_recorded": pending[0]["attempts"] if pending else 0}

    # -- the security view ------------------------------------------------------------------
    def security_report(self, ctx: CommandContext, days: int = 7) -> dict:
        """Failed logins per account and day (by reason) and lockouts, from the event log."""
        since = _now() - timedelta(days=days)
        failed = self._rows(
            "SELECT e.originator_id AS account_id, a.username, date_trunc('day', i.recorded_at) AS day,"
            " convert_from(e.state, 'UTF8')::jsonb ->> 'reason' AS reason, count(*) AS n"
            " FROM accounts a JOIN pricing_events e ON e.originator_id = a.account_id"
            " JOIN event_index i ON i.notification_id = e.notification_id"
            " WHERE a.tenant_id = %s AND e.topic = %s AND i.recorded_at >= %s"
            " GROUP BY 1, 2, 3, 4 ORDER BY 3 DESC, 2, 4", [ctx.tenant_id, _FAILED, since])
        days_seen: dict[tuple, dict] = {}
        for r in failed:
            key = (r["account_id"], r["day"])
            entry = days_seen.setdefault(key, {"account_id": str(r["account_id"]), "username": r["username"],
                                               "day": r["day"].date().isoformat(), "failed": 0, "reasons": {}})
            entry["failed"] += r["n"]
            entry["reasons"][r["reason"]] = r["n"]
        locks = self._rows(
            "SELECT e.originator_id AS account_id, e.originator_version AS version, a.username, i.recorded_at,"
            " e.state"
            " FROM accounts a JOIN pricing_events e ON e.originator_id = a.account_id"
            " JOIN event_index i ON i.notification_id = e.notification_id"
            " WHERE a.tenant_id = %s AND e.topic = %s AND i.recorded_at >= %s ORDER BY e.notification_id DESC",
            [ctx.tenant_id, _LOCKED, since])
        lockouts = []
        for r in locks:
            locked = self.core.mapper.to_domain_event(StoredEvent(r["account_id"], r["version"], _LOCKED, bytes(r["state"])))
            account = self.core.repository.get(r["account_id"])
            lockouts.append({"account_id": str(r["account_id"]), "username": r["username"],
                             "locked_at": r["recorded_at"].isoformat(), "failures": locked.failures,
                             "until": locked.until.isoformat(),
                             # a later lock or an admin's unlock ends this one
                             "still_locked": account.is_locked(_now()) and account.locked_until == locked.until})
        return {"since": since.isoformat(), "failed_logins": list(days_seen.values()), "lockouts": lockouts}

    def account_history(self, ctx: CommandContext, account_id: UUID, after_version: int = 0,
                        limit: int = 100) -> dict:
        """An account's events (logins, failures, locks, roles, MFA, sessions, keys), oldest first."""
        self.tenant_account(ctx, account_id)
        return {"account_id": str(account_id), **self._events_page(account_id, after_version, limit)}

    def _events_page(self, aggregate_id: UUID, after_version: int, limit: int) -> dict:
        """A page of one aggregate's events, oldest first, described as every history shows them."""
        rows = self._rows("SELECT notification_id, originator_version, topic, state FROM pricing_events"
                          " WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version"
                          " LIMIT %s", [aggregate_id, after_version, limit + 1])
        events = self.vault.reveal([describe_event(self.core.mapper.to_domain_event(StoredEvent(
            aggregate_id, r["originator_version"], r["topic"], bytes(r["state"]))), r["notification_id"])
            for r in rows[:limit]])
        return {"events": events, "next_after_version": events[-1]["version"] if events else after_version,
                "more": len(rows) > limit}

    # -- helpers ----------------------------------------------------------------------------
    def _meta(self, ctx: CommandContext, reason: str = ""):
        return ctx.meta(None, reason=reason)

    @staticmethod
    def _as_account(account: Account) -> CommandContext:
        """The context of an account acting for itself (logins, sessions)."""
        kind = ActorKind.SERVICE if account.kind == AccountKind.SERVICE.value else ActorKind.USER
        return CommandContext(actor=Actor(str(account.id), kind), tenant_id=account.tenant_id)

    def _account_id_by_username(self, tenant_id: str, username: str) -> UUID | None:
        rows = self._rows("SELECT account_id FROM accounts WHERE tenant_id = %s AND username = %s",
                          [tenant_id, username])
        return rows[0]["account_id"] if rows else None

    def _password_of(self, tenant_id: str, username: str) -> tuple[UUID, str] | None:
        rows = self._rows("SELECT a.account_id, p.hash FROM accounts a JOIN password_credentials p"
                          " ON p.account_id = a.account_id WHERE a.tenant_id = %s AND a.username = %s",
                          [tenant_id, username])
        return (rows[0]["account_id"], rows[0]["hash"]) if rows else None

    def _password_mismatch(self, account_id: UUID, password: str) -> FailureReason | None:
        stored = self._password_of_account(account_id)
        if stored is None:
            credentials.waste_a_verify(password)
            return FailureReason.BAD_PASSWORD
        return None if credentials.verify_password(password, stored)[0] else FailureReason.BAD_PASSWORD

    def _password_of_account(self, account_id: UUID) -> str | None:
        rows = self._rows("SELECT hash FROM password_credentials WHERE account_id = %s", [account_id])
        return rows[0]["hash"] if rows else None

    def _totp_secret(self, account_id: UUID, confirmed: bool) -> str | None:
        rows = self._rows("SELECT secret_encrypted FROM totp_credentials WHERE account_id = %s AND confirmed = %s",
                          [account_id, confirmed])
        if not rows:
            return None
        return self.secrets.decrypt(bytes(rows[0]["secret_encrypted"]), account_id.bytes).decode()

    def _rows(self, sql: str, params, commit: bool = False) -> list[dict]:
        return rows_of(self.core, sql, params, commit)

    def _run(self, statements: list[Statement]) -> None:
        if statements:
            with self.core.recorder.datastore.get_connection() as conn, conn.transaction():
                for sql, params in statements:
                    conn.execute(sql, params)


_FAILED = get_topic(Account.LoginFailed)
_LOCKED = get_topic(Account.Locked)

# The account's roles as {"seller": ["<shop uuid>", ...], "admin": null}.
_ROLES_OF_A = ("(SELECT coalesce(jsonb_object_agg(r.role, r.shops), '{}'::jsonb) FROM account_roles r"
               " WHERE r.account_id = a.account_id) AS roles")


def _role_rows(account: Account) -> list[Statement]:
    """Replace the account's rows in account_roles with its current roles."""
    rows: list[Statement] = [("DELETE FROM account_roles WHERE account_id = %s", [account.id])]
    for role, shops in account.roles.items():
        rows.append(("INSERT INTO account_roles (account_id, role, shops) VALUES (%s, %s, %s::uuid[])",
                     [account.id, role, None if shops is None else [UUID(s) for s in shops]]))
    return rows


def _erased_username(account_id: UUID) -> str:
    return f"{ERASED} {account_id}"


def _stopped(account_id: UUID) -> list[Statement]:
    """A disabled account's rows: its sessions end, its reset tokens and MFA challenges are spent."""
    return [("UPDATE accounts SET disabled_at = coalesce(disabled_at, now()) WHERE account_id = %s", [account_id]),
            ("UPDATE token_families SET revoked_at = now(), revoked_reason = 'account_disabled'"
             " WHERE account_id = %s AND revoked_at IS NULL", [account_id]),
            ("UPDATE password_resets SET used_at = now() WHERE account_id = %s AND used_at IS NULL", [account_id]),
            ("DELETE FROM mfa_challenges WHERE account_id = %s", [account_id])]


def _erased(account_id: UUID) -> list[Statement]:
    """An erased account's rows outside the log: no username to log in with, no credentials, no
    snapshot (snapshots are derived, and rebuilt from the events when needed)."""
    return [("UPDATE accounts SET username = %s WHERE account_id = %s", [_erased_username(account_id), account_id]),
            ("DELETE FROM password_credentials WHERE account_id = %s", [account_id]),
            *_mfa_removed(account_id),
            ("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE account_id = %s", [account_id]),
            ("DELETE FROM pricing_snapshots WHERE originator_id = %s", [account_id])]


def _mfa_removed(account_id: UUID) -> list[Statement]:
    return [("DELETE FROM recovery_codes WHERE account_id = %s", [account_id]),
            ("DELETE FROM totp_credentials WHERE account_id = %s", [account_id])]


def _refresh_token_row(digest: bytes, family_id, now: datetime, family_expires: datetime | None = None) -> Statement:
    expires = now + REFRESH_TOKEN_TTL
    if family_expires is not None:
        expires = min(expires, family_expires)
    return ("INSERT INTO refresh_tokens (token_digest, family_id, expires_at) VALUES (%s, %s, %s)",
            [digest, family_id, expires])


def describe_account(account: Account, username: str) -> dict:
    """The account as answers show it, with its username opened (Identity.describe)."""
    return {"account_id": str(account.id), "tenant_id": account.tenant_id, "username": username,
            "kind": account.kind, "roles": dict(account.roles), "mfa": account.mfa,
            "locked_until": account.locked_until and account.locked_until.isoformat(),
            "api_keys": sorted(account.api_keys), "disabled": account.disabled, "version": account.version}
