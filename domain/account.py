"""Accounts: who may act, in which role, on which shops — and every login, failure and lockout.

Pure domain: no I/O, no secrets. Password hashes, TOTP secrets, tokens and API keys never enter
these events; the command side keeps them in credential tables (migrations/0200_identity.sql).
The account's events record that something happened to a credential, never the credential.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Iterable, Mapping
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, InvariantViolated
from domain.meta import EventMeta
from domain.personal import Sealer


# -- roles and what they allow --------------------------------------------------------------
class Role(str, Enum):
    ADMIN = "admin"
    SELLER = "seller"
    ANALYST = "analyst"
    AUDITOR = "auditor"
    SERVICE = "service"


PERMISSIONS = (
    "shops:read",       # a shop, its listings now or as of any time
    "shops:create",     # open a shop (the opener is granted it)
    "prices:write",     # register listings, set prices and guardrails, roll back
    "facts:write",      # record competitor observations and sales
    "analytics:read",   # projections and analytics views
    "audit:read",       # event history, the global log, exports, chain verification
    "security:read",    # failed logins and lockouts
    "accounts:manage",  # create accounts, grant roles, unlock, issue API keys
)

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(PERMISSIONS),
    Role.SELLER: frozenset({"shops:read", "shops:create", "prices:write", "facts:write", "analytics:read",
                            "audit:read"}),
    Role.ANALYST: frozenset({"shops:read", "analytics:read"}),
    Role.AUDITOR: frozenset({"shops:read", "analytics:read", "audit:read", "security:read"}),
    Role.SERVICE: frozenset({"shops:read", "prices:write", "facts:write", "analytics:read"}),
}

# Roles that only make sense over the whole tenant: an admin manages accounts of the tenant.
TENANT_WIDE_ONLY = {Role.ADMIN}


class AccountKind(str, Enum):
    USER = "user"        # a person: password, MFA, tokens
    SERVICE = "service"  # a script or integration: API keys only


ROLES_BY_KIND = {
    AccountKind.USER: {Role.ADMIN, Role.SELLER, Role.ANALYST, Role.AUDITOR},
    AccountKind.SERVICE: {Role.SERVICE},
}


@dataclass(frozen=True, slots=True)
class Access:
    """Some permissions over some shops (None: every shop of the tenant)."""

    permissions: frozenset[str]
    shops: frozenset[str] | None

    def covers(self, shop_id: str | None) -> bool:
        return self.shops is None or (shop_id is not None and shop_id in self.shops)


@dataclass(frozen=True, slots=True)
class Grants:
    """What a caller may do: the one rule every route's authorization goes through."""

    accesses: tuple[Access, ...] = ()

    @classmethod
    def of_roles(cls, roles: Mapping[str, Iterable[str] | None]) -> Grants:
        return cls(tuple(Access(ROLE_PERMISSIONS[Role(role)], None if shops is None else frozenset(map(str, shops)))
                         for role, shops in roles.items()))

    def allows(self, permission: str, shop_id: str | None = None, tenant_wide: bool = False) -> bool:
        """May the caller do `permission` on this shop (or, with no shop, anywhere at all;
        with tenant_wide, over the whole tenant)?"""
        for access in self.accesses:
            if permission not in access.permissions:
                continue
            if tenant_wide and access.shops is not None:
                continue
            if shop_id is None or access.covers(shop_id):
                return True
        return False

    def sees(self, shop_id: str) -> bool:
        """Does the caller have any access to this shop? (If not, it does not exist for them.)"""
        return any(a.permissions and a.covers(shop_id) for a in self.accesses)

    @property
    def shops(self) -> frozenset[str] | None:
        """Every shop the caller can see; None for the whole tenant."""
        if any(a.shops is None and a.permissions for a in self.accesses):
            return None
        return frozenset(s for a in self.accesses if a.permissions for s in a.shops or ())

    def narrowed(self, scopes: Iterable[str], shops: Iterable[str] | None) -> Grants:
        """An API key's grants: never more than its account's, limited to its scopes and shops."""
        scopes = frozenset(scopes)
        key_shops = None if shops is None else frozenset(map(str, shops))

        def limit(a: Access) -> Access:
            if key_shops is None:
                return Access(a.permissions & scopes, a.shops)
            return Access(a.permissions & scopes, key_shops if a.shops is None else a.shops & key_shops)

        return Grants(tuple(limit(a) for a in self.accesses))


# -- throttling failed attempts -------------------------------------------------------------
# NIST SP 800-63B 5.2.2: no more than 100 consecutive failed attempts on one account, waits that
# grow before that, and care that the limit is not a way to deny the owner service. So:
# - each client (address; an IPv6 /64) gets its own budget on an account: a few free failures,
#   then waits doubling from 30 s to 1 h; one guesser slows only itself;
# - the account's ceiling, 100 consecutive failures from any clients, locks it against clients it
#   does not know (15 min, doubling to 24 h); clients that logged in to it lately are not locked
#   out by strangers' failures.
CLIENT_FREE_FAILURES = 5
CLIENT_FIRST_WAIT = timedelta(seconds=30)
CLIENT_LONGEST_WAIT = timedelta(hours=1)
CLIENT_MEMORY = timedelta(hours=24)      # a client's failures older than this no longer count
CLIENT_FAILURES_KEPT = 16                # enough for the longest wait
ACCOUNT_CEILING = 100
FIRST_LOCK = timedelta(minutes=15)
LONGEST_LOCK = timedelta(hours=24)
KNOWN_CLIENT_FOR = timedelta(days=90)    # a successful login makes its client known this long
KNOWN_CLIENTS_KEPT = 20
CLIENTS_TRACKED = 1000                   # failing clients remembered per account (the oldest go)


def lock_duration(earlier_locks: int) -> timedelta:
    """Back-off: 15 min, 30 min, 1 h, ... doubling with each lock since the last good login."""
    return min(FIRST_LOCK * (2 ** min(earlier_locks, 16)), LONGEST_LOCK)


def client_wait(failures: int) -> timedelta:
    """How long a client waits after its `failures`-th failure in a row on an account."""
    if failures < CLIENT_FREE_FAILURES:
        return timedelta(0)
    return min(CLIENT_FIRST_WAIT * (2 ** min(failures - CLIENT_FREE_FAILURES, 16)), CLIENT_LONGEST_WAIT)


def client_key(address: str) -> str:
    """Whom a budget belongs to: the address, or its /64 for IPv6 (one host holds a whole /64, so
    per-address budgets would be 2^64 budgets)."""
    try:
        ip = ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is None:
        return str(ip_network(f"{ip}/64", strict=False))
    return str(getattr(ip, "ipv4_mapped", None) or ip)


class FailureReason(str, Enum):
    BAD_PASSWORD = "bad_password"
    LOCKED = "locked"               # right or wrong secret, the account was locked against this client
    THROTTLED = "throttled"         # right or wrong secret, this client was made to wait
    BAD_MFA_CODE = "bad_mfa_code"
    MFA_CODE_REPLAYED = "mfa_code_replayed"
    BAD_RECOVERY_CODE = "bad_recovery_code"
    DISABLED = "disabled"           # right or wrong secret, an admin disabled the account


USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,63}$")
API_KEY_SCOPES = ROLE_PERMISSIONS[Role.SERVICE]


def normalize_username(username: str) -> str:
    return username.strip().lower()


def valid_username(username: str) -> str:
    username = normalize_username(username)
    if not USERNAME.match(username):
        raise InvalidValue("username", "3-64 characters: lower-case letters, digits and ._@+- "
                                       "(starting with a letter or digit)")
    return username


def sealed_client(address: str, sealer: Sealer) -> tuple[str, str]:
    """(the client as the account's events record it, its address sealed): a fingerprint of its
    budget key under the account's key, which compares like the key itself while the account's
    key exists and links to nobody once it is erased."""
    return sealer.fingerprint(client_key(address)), sealer.seal(address)


class Action(str, Enum):
    """What a failed secret was for: every check of a password or a code shares one budget."""

    LOGIN = "login"
    CHANGE_PASSWORD = "change_password"
    DISABLE_MFA = "disable_mfa"
    CONFIRM_MFA = "confirm_mfa"


class Account(Aggregate):
    """v2 (snapshots): failures are counted per client (`client_failures`) and in a row
    (`consecutive_failures`); clients that logged in are remembered (`known_clients`).
    v3: an admin may disable the account (`disabled`)."""

    class_version = 3

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["consecutive_failures"] = len(state.pop("recent_failures", None) or ())
        state["client_failures"] = {}
        state["known_clients"] = {}

    @staticmethod
    def upcast_v2_v3(state: dict) -> None:
        state["disabled"] = False

    @event("Registered")
    def __init__(self, account_id: UUID, tenant_id: str, username: str, kind: str, meta: EventMeta):
        self.tenant_id = tenant_id
        self.username = username
        self.kind = kind
        self.roles: dict[str, list[str] | None] = {}  # role -> shop ids, or None for the whole tenant
        self.mfa = "none"                              # none | pending | confirmed
        self.consecutive_failures = 0                  # failed attempts since the last success, lock or unlock
        self.client_failures: dict[str, list[datetime]] = {}  # client key -> its failures in a row, recent
        self.known_clients: dict[str, datetime] = {}   # client key -> its last successful login
        self.locked_until: datetime | None = None      # locked against unknown clients until then
        self.locks_since_success = 0                   # the back-off exponent
        self.api_keys: dict[str, list[str]] = {}       # live key id -> scopes
        self.disabled = False                          # by an admin: no login, session or key works

    @staticmethod
    def create_id(account_id: UUID, **_) -> UUID:
        # Chosen by the command, so that a retried command registers the same account.
        return account_id

    @classmethod
    def register(cls, tenant_id: str, username: str, kind: AccountKind | str, meta: EventMeta,
                 account_id: UUID | None = None, sealer: Sealer | None = None) -> Account:
        """Given the sealer of the account's subject (whose id is the account's), the username
        enters the log sealed: erasing the key leaves no readable username in events or snapshots."""
        username = valid_username(username)
        if not tenant_id:
            raise InvalidValue("tenant_id", "must not be blank")
        if sealer is not None:
            account_id, username = sealer.subject_id, sealer.seal(username)
        return cls(account_id=account_id or uuid4(), tenant_id=tenant_id, username=username,
                   kind=AccountKind(kind).value, meta=meta)

    # -- roles ----------------------------------------------------------------------------
    @property
    def grants(self) -> Grants:
        return Grants.of_roles(self.roles)

    def grants_of(self, role: str) -> Grants:
        return Grants.of_roles({role: self.roles[role]})

    def grant_role(self, role: Role | str, shops: list[str] | None, meta: EventMeta) -> bool:
        """Grant a role over some shops (added to those already granted) or the whole tenant (None).
        Returns False when the account already had it."""
        role = _role(role)
        if role not in ROLES_BY_KIND[AccountKind(self.kind)]:
            raise InvariantViolated("role", f"a {self.kind} account cannot hold the {role.value} role")
        if role in TENANT_WIDE_ONLY and shops is not None:
            raise InvalidValue("shops", f"the {role.value} role covers the whole tenant; omit shops")
        held = self.roles.get(role.value, [])
        if role.value in self.roles and held is None:
            return False
        new = None if shops is None else sorted({str(s) for s in shops} - set(held))
        if new == [] and role.value in self.roles:
            return False
        self._role_granted(role=role.value, shops=new, meta=meta)
        return True

    @event("RoleGranted")
    def _role_granted(self, role: str, shops: list[str] | None, meta: EventMeta) -> None:
        self.roles[role] = None if shops is None else sorted(set(self.roles.get(role) or []) | set(shops))

    def revoke_role(self, role: Role | str, shops: list[str] | None, meta: EventMeta) -> bool:
        """Take away a role entirely (shops None) or over some shops only."""
        role = _role(role)
        if role.value not in self.roles:
            return False
        held = self.roles[role.value]
        if shops is not None:
            if held is None:
                raise InvariantViolated("shops", f"the {role.value} role covers the whole tenant; revoke it whole")
            shops = sorted({str(s) for s in shops} & set(held))
            if not shops:
                return False
        self._role_revoked(role=role.value, shops=shops, meta=meta)
        return True

    @event("RoleRevoked")
    def _role_revoked(self, role: str, shops: list[str] | None, meta: EventMeta) -> None:
        if shops is None:
            del self.roles[role]
        else:
            self.roles[role] = sorted(set(self.roles[role]) - set(shops))

    # -- password and MFA (the secrets themselves live elsewhere) -------------------------
    def change_password(self, meta: EventMeta) -> None:
        self._require_person("password")
        self._password_changed(meta=meta)

    @event("PasswordChanged")
    def _password_changed(self, meta: EventMeta) -> None:
        pass

    def enroll_mfa(self, meta: EventMeta) -> None:
        self._require_person("mfa")
        if self.mfa == "confirmed":
            raise InvariantViolated("mfa", "MFA is already enabled; disable it first to enroll a new device")
        self._mfa_enrolled(meta=meta)

    @event("MfaEnrolled")
    def _mfa_enrolled(self, meta: EventMeta) -> None:
        self.mfa = "pending"

    def confirm_mfa(self, meta: EventMeta) -> None:
        if self.mfa != "pending":
            raise InvariantViolated("mfa", "no MFA enrollment is waiting for confirmation")
        self._mfa_confirmed(meta=meta)

    @event("MfaConfirmed")
    def _mfa_confirmed(self, meta: EventMeta) -> None:
        self.mfa = "confirmed"

    def disable_mfa(self, meta: EventMeta) -> bool:
        if self.mfa == "none":
            return False
        self._mfa_disabled(meta=meta)
        return True

    @event("MfaDisabled")
    def _mfa_disabled(self, meta: EventMeta) -> None:
        self.mfa = "none"

    @property
    def mfa_required(self) -> bool:
        return self.mfa == "confirmed"

    # -- logins and other checks of a secret -------------------------------------------
    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def knows(self, client: str, now: datetime) -> bool:
        last = self.known_clients.get(client_key(client))
        return last is not None and now - last < KNOWN_CLIENT_FOR

    def refusal(self, client: str, now: datetime) -> FailureReason | None:
        """Why an attempt from `client` is refused before its secret is even checked (None: it
        is not): the account is disabled, locked against clients it does not know, or this client waits."""
        if self.disabled:
            return FailureReason.DISABLED
        if self.is_locked(now) and not self.knows(client, now):
            return FailureReason.LOCKED
        if self.retry_after(client, now) > timedelta(0):
            return FailureReason.THROTTLED
        return None

    def retry_after(self, client: str, now: datetime) -> timedelta:
        """How long `client` must wait before its next attempt counts (0: it need not)."""
        lock = self.locked_until - now if self.is_locked(now) and not self.knows(client, now) else timedelta(0)
        failures = self._recent_failures_of(client_key(client), now)
        own = failures[-1] + client_wait(len(failures)) - now if failures else timedelta(0)
        return max(lock, own, timedelta(0))

    def _recent_failures_of(self, key: str, now: datetime) -> list[datetime]:
        return [t for t in self.client_failures.get(key, ()) if now - t < CLIENT_MEMORY]

    def login_succeeded(self, method: str, client: str, meta: EventMeta, address: str | None = None) -> None:
        """`client`: its fingerprint (sealed_client); `address`: sealed."""
        if self.refusal(client, meta.occurred_at) is not None:
            raise InvariantViolated("username", "the account is locked")
        self._login_succeeded(method=method, client=client, meta=meta, address=address)

    @event("LoginSucceeded")
    def _login_succeeded(self, method: str, client: str, meta: EventMeta, address: str | None = None) -> None:
        key, now = client_key(client), meta.occurred_at
        self.consecutive_failures = 0
        self.locks_since_success = 0
        self.client_failures.pop(key, None)
        known = {k: t for k, t in self.known_clients.items() if now - t < KNOWN_CLIENT_FOR and k != key}
        self.known_clients = dict(sorted(known.items(), key=lambda kv: kv[1])[-(KNOWN_CLIENTS_KEPT - 1):])
        self.known_clients[key] = now

    def login_failed(self, reason: FailureReason | str, client: str, meta: EventMeta,
                     action: Action | str = Action.LOGIN, address: str | None = None) -> bool:
        """Record a failed check of a secret (a login, or a password or code confirmed while signed
        in: one budget). An attempt the account refused anyway is recorded as `locked` or
        `throttled` and counts for nothing. The ACCOUNT_CEILING-th failure in a row locks the
        account against unknown clients; returns True when this one did."""
        now = meta.occurred_at
        reason = self.refusal(client, now) or FailureReason(reason)
        self._login_failed(reason=reason.value, client=client, action=Action(action).value, meta=meta, address=address)
        if reason in REFUSED_BEFORE_CHECK or self.is_locked(now) or self.consecutive_failures < ACCOUNT_CEILING:
            return False
        self._locked(until=now + lock_duration(self.locks_since_success), failures=self.consecutive_failures,
                     meta=meta)
        return True

    class LoginFailed(Aggregate.Event):
        """v2 adds `action`: what the secret was for (v1 events were all logins). v3 adds `address`:
        the client's address sealed, `client` being its fingerprint (v2 events hold the address)."""

        reason: str
        client: str
        action: str
        address: str | None
        meta: EventMeta
        class_version = 3

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["action"] = Action.LOGIN.value

        @staticmethod
        def upcast_v2_v3(state: dict) -> None:
            state["address"] = None

    @event(LoginFailed)
    def _login_failed(self, reason: str, client: str, meta: EventMeta, action: str = Action.LOGIN.value,
                      address: str | None = None) -> None:
        if reason in REFUSED_BEFORE_CHECK_VALUES:
            return  # refused attempts neither extend a wait nor a lock: the owner can still get back in
        now, key = meta.occurred_at, client_key(client)
        self.consecutive_failures += 1
        self.client_failures[key] = (self._recent_failures_of(key, now) + [now])[-CLIENT_FAILURES_KEPT:]
        if len(self.client_failures) > CLIENTS_TRACKED:
            oldest = min(self.client_failures, key=lambda k: self.client_failures[k][-1])
            del self.client_failures[oldest]

    @event("Locked")
    def _locked(self, until: datetime, failures: int, meta: EventMeta) -> None:
        self.locked_until = until
        self.locks_since_success += 1
        self.consecutive_failures = 0

    def unlock(self, meta: EventMeta) -> bool:
        if not self.is_locked(meta.occurred_at) and not self.consecutive_failures and not self.client_failures:
            return False
        self._unlocked(meta=meta)
        return True

    @event("Unlocked")
    def _unlocked(self, meta: EventMeta) -> None:
        self.locked_until = None
        self.consecutive_failures = 0
        self.client_failures = {}

    # -- disabling, and a password reset an admin issues ------------------------------------
    def disable(self, meta: EventMeta) -> bool:
        """Nothing of the account works any more: logins are refused, its sessions and keys stop
        (the command side revokes them in the same transaction). Returns False if it already was."""
        if self.disabled:
            return False
        self._disabled(meta=meta)
        return True

    @event("Disabled")
    def _disabled(self, meta: EventMeta) -> None:
        self.disabled = True

    def enable(self, meta: EventMeta) -> bool:
        """Logins work again and API keys not revoked meanwhile; ended sessions stay ended."""
        if not self.disabled:
            return False
        self._enabled(meta=meta)
        return True

    @event("Enabled")
    def _enabled(self, meta: EventMeta) -> None:
        self.disabled = False

    def issue_password_reset(self, expires_at: datetime, meta: EventMeta) -> None:
        """An admin hands the person a one-time token to set a new password (the token itself
        is kept hashed elsewhere; a newer one replaces it)."""
        self._require_person("password")
        if self.disabled:
            raise InvariantViolated("account_id", "the account is disabled; enable it first")
        self._password_reset_issued(expires_at=expires_at, meta=meta)

    @event("PasswordResetIssued")
    def _password_reset_issued(self, expires_at: datetime, meta: EventMeta) -> None:
        pass

    def reset_password(self, meta: EventMeta) -> None:
        """The person used a reset token: a new password, every session ended."""
        if self.disabled:
            raise InvariantViolated("token", "the account is disabled")
        self._password_reset(meta=meta)

    @event("PasswordReset")
    def _password_reset(self, meta: EventMeta) -> None:
        pass

    # -- sessions and keys ----------------------------------------------------------------
    def revoke_token_family(self, family_id: str, reason: str, meta: EventMeta) -> None:
        """A session ends: logout, or a refresh token was used twice (someone else has it)."""
        self._token_family_revoked(family_id=str(family_id), reason=reason, meta=meta)

    @event("TokenFamilyRevoked")
    def _token_family_revoked(self, family_id: str, reason: str, meta: EventMeta) -> None:
        pass

    def issue_api_key(self, key_id: str, scopes: list[str], shops: list[str] | None, meta: EventMeta) -> None:
        if self.kind != AccountKind.SERVICE.value:
            raise InvariantViolated("account", "API keys are for service accounts; people log in")
        unknown = sorted(set(scopes) - API_KEY_SCOPES)
        if unknown or not scopes:
            raise InvalidValue("scopes", f"choose from {', '.join(sorted(API_KEY_SCOPES))}"
                                         + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
        self._api_key_issued(key_id=str(key_id), scopes=sorted(set(scopes)),
                             shops=None if shops is None else sorted({str(s) for s in shops}), meta=meta)

    @event("ApiKeyIssued")
    def _api_key_issued(self, key_id: str, scopes: list[str], shops: list[str] | None, meta: EventMeta) -> None:
        self.api_keys[key_id] = scopes

    def revoke_api_key(self, key_id: str, meta: EventMeta) -> bool:
        if str(key_id) not in self.api_keys:
            return False
        self._api_key_revoked(key_id=str(key_id), meta=meta)
        return True

    @event("ApiKeyRevoked")
    def _api_key_revoked(self, key_id: str, meta: EventMeta) -> None:
        del self.api_keys[key_id]

    def _require_person(self, field: str) -> None:
        if self.kind != AccountKind.USER.value:
            raise InvariantViolated(field, "service accounts use API keys, not passwords or MFA")


REFUSED_BEFORE_CHECK = frozenset({FailureReason.LOCKED, FailureReason.THROTTLED, FailureReason.DISABLED})
REFUSED_BEFORE_CHECK_VALUES = frozenset(r.value for r in REFUSED_BEFORE_CHECK)


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidValue("role", f"must be one of {', '.join(r.value for r in Role)}") from None
