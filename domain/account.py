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
from typing import Iterable, Mapping
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, InvariantViolated
from domain.meta import EventMeta


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


# -- lockout --------------------------------------------------------------------------------
FAILURES_BEFORE_LOCK = 5
FAILURE_WINDOW = timedelta(minutes=15)
FIRST_LOCK = timedelta(minutes=15)
LONGEST_LOCK = timedelta(hours=24)


def lock_duration(earlier_locks: int) -> timedelta:
    """Back-off: 15 min, 30 min, 1 h, ... doubling with each lock since the last good login."""
    return min(FIRST_LOCK * (2 ** min(earlier_locks, 16)), LONGEST_LOCK)


class FailureReason(str, Enum):
    BAD_PASSWORD = "bad_password"
    LOCKED = "locked"               # right or wrong password, the account was locked
    BAD_MFA_CODE = "bad_mfa_code"
    MFA_CODE_REPLAYED = "mfa_code_replayed"
    BAD_RECOVERY_CODE = "bad_recovery_code"


USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,63}$")
API_KEY_SCOPES = ROLE_PERMISSIONS[Role.SERVICE]


def normalize_username(username: str) -> str:
    return username.strip().lower()


class Account(Aggregate):
    @event("Registered")
    def __init__(self, account_id: UUID, tenant_id: str, username: str, kind: str, meta: EventMeta):
        self.tenant_id = tenant_id
        self.username = username
        self.kind = kind
        self.roles: dict[str, list[str] | None] = {}  # role -> shop ids, or None for the whole tenant
        self.mfa = "none"                              # none | pending | confirmed
        self.recent_failures: list[datetime] = []      # failed logins since the last success or lock
        self.locked_until: datetime | None = None
        self.locks_since_success = 0                   # the back-off exponent
        self.api_keys: dict[str, list[str]] = {}       # live key id -> scopes

    @staticmethod
    def create_id(account_id: UUID, **_) -> UUID:
        # Chosen by the command, so that a retried command registers the same account.
        return account_id

    @classmethod
    def register(cls, tenant_id: str, username: str, kind: AccountKind | str, meta: EventMeta,
                 account_id: UUID | None = None) -> Account:
        username = normalize_username(username)
        if not USERNAME.match(username):
            raise InvalidValue("username", "3-64 characters: lower-case letters, digits and ._@+- "
                                           "(starting with a letter or digit)")
        if not tenant_id:
            raise InvalidValue("tenant_id", "must not be blank")
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

    # -- logins ---------------------------------------------------------------------------
    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def login_succeeded(self, method: str, client: str, meta: EventMeta) -> None:
        if self.is_locked(meta.occurred_at):
            raise InvariantViolated("username", "the account is locked")
        self._login_succeeded(method=method, client=client, meta=meta)

    @event("LoginSucceeded")
    def _login_succeeded(self, method: str, client: str, meta: EventMeta) -> None:
        self.recent_failures = []
        self.locks_since_success = 0

    def login_failed(self, reason: FailureReason | str, client: str, meta: EventMeta) -> bool:
        """Record a failed login; lock the account on the 5th failure within 15 minutes.
        Returns True when this failure locked the account."""
        now = meta.occurred_at
        reason = FailureReason(reason)
        if self.is_locked(now):
            reason = FailureReason.LOCKED
        self._login_failed(reason=reason.value, client=client, meta=meta)
        if reason is FailureReason.LOCKED or len(self.recent_failures) < FAILURES_BEFORE_LOCK:
            return False
        self._locked(until=now + lock_duration(self.locks_since_success),
                     failures=len(self.recent_failures), meta=meta)
        return True

    @event("LoginFailed")
    def _login_failed(self, reason: str, client: str, meta: EventMeta) -> None:
        if reason == FailureReason.LOCKED.value:
            return  # attempts during a lock do not extend it: the owner can still get back in
        now = meta.occurred_at
        self.recent_failures = [t for t in self.recent_failures if now - t < FAILURE_WINDOW] + [now]

    @event("Locked")
    def _locked(self, until: datetime, failures: int, meta: EventMeta) -> None:
        self.locked_until = until
        self.locks_since_success += 1
        self.recent_failures = []

    def unlock(self, meta: EventMeta) -> bool:
        if not self.is_locked(meta.occurred_at) and not self.recent_failures:
            return False
        self._unlocked(meta=meta)
        return True

    @event("Unlocked")
    def _unlocked(self, meta: EventMeta) -> None:
        self.locked_until = None
        self.recent_failures = []

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


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidValue("role", f"must be one of {', '.join(r.value for r in Role)}") from None
