"""The Account aggregate and the grants rule, without I/O."""

from datetime import datetime, timedelta, timezone

import pytest

from domain.account import Account, Grants, lock_duration
from domain.errors import DomainError
from domain.meta import EventMeta

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)


def meta(at: datetime = T0) -> EventMeta:
    return EventMeta(None, "admin-1", "user", "manual", "", "cmd", "cmd", "cmd", at)


def seller() -> Account:
    account = Account.register("acme", "Alice@Example.com", "user", meta())
    account.grant_role("seller", ["shop-a"], meta())
    return account


def test_usernames_are_normalised_and_checked():
    assert seller().username == "alice@example.com"
    with pytest.raises(DomainError) as refused:
        Account.register("acme", "a b", "user", meta())
    assert refused.value.field == "username"


def test_five_failures_within_fifteen_minutes_lock_the_account_with_growing_back_off():
    account = seller()
    for i in range(4):
        assert account.login_failed("bad_password", "10.0.0.1", meta(T0 + timedelta(minutes=i))) is False
    assert account.login_failed("bad_password", "10.0.0.1", meta(T0 + timedelta(minutes=4))) is True
    assert account.locked_until == T0 + timedelta(minutes=4) + lock_duration(0)
    assert account.is_locked(T0 + timedelta(minutes=10))
    # Attempts while locked are recorded as 'locked' and do not extend the lock.
    account.login_failed("bad_password", "10.0.0.1", meta(T0 + timedelta(minutes=5)))
    assert type(account.collect_events()[-1]).__name__ == "LoginFailed"
    assert account.locked_until == T0 + timedelta(minutes=19)
    # After the lock, five more failures lock it for twice as long.
    later = T0 + timedelta(minutes=20)
    for i in range(5):
        locked = account.login_failed("bad_password", "10.0.0.1", meta(later + timedelta(seconds=i)))
    assert locked and account.locked_until == later + timedelta(seconds=4) + timedelta(minutes=30)
    assert lock_duration(1) == timedelta(minutes=30) and lock_duration(30) == timedelta(hours=24)


def test_failures_spread_over_more_than_fifteen_minutes_do_not_lock():
    account = seller()
    for i in range(10):
        assert account.login_failed("bad_password", "x", meta(T0 + timedelta(minutes=4 * i))) is False
    assert not account.is_locked(T0 + timedelta(minutes=40))


def test_a_successful_login_resets_the_back_off_and_unlock_ends_a_lock():
    account = seller()
    for i in range(5):
        account.login_failed("bad_password", "x", meta(T0))
    assert account.is_locked(T0)
    with pytest.raises(DomainError):
        account.login_succeeded("password", "x", meta(T0))
    assert account.unlock(meta(T0)) is True
    account.login_succeeded("password", "x", meta(T0))
    assert account.locks_since_success == 0 and account.recent_failures == []


def test_grants_allow_by_role_and_shop():
    grants = Grants.of_roles({"seller": ["shop-a"], "auditor": None})
    assert grants.allows("prices:write", "shop-a")
    assert not grants.allows("prices:write", "shop-b")       # seller only on shop-a
    assert grants.allows("audit:read", "shop-b")             # auditor over the whole tenant
    assert grants.allows("audit:read", tenant_wide=True)
    assert not grants.allows("accounts:manage")
    assert grants.sees("shop-b") and grants.shops is None
    only_a = Grants.of_roles({"seller": ["shop-a"]})
    assert only_a.shops == frozenset({"shop-a"}) and not only_a.sees("shop-b")
    assert only_a.allows("shops:create") and not only_a.allows("audit:read", tenant_wide=True)


def test_an_api_key_never_has_more_than_its_account():
    account = Grants.of_roles({"service": ["shop-a", "shop-b"]})
    key = account.narrowed(["shops:read", "prices:write", "accounts:manage"], ["shop-a", "shop-c"])
    assert key.allows("prices:write", "shop-a")
    assert not key.allows("prices:write", "shop-b")   # the key is limited to shop-a (and shop-c)
    assert not key.sees("shop-c")                     # ...but shop-c is not the account's
    assert not key.allows("accounts:manage")          # scopes cannot add permissions
    assert not account.narrowed(["shops:read"], None).allows("facts:write", "shop-a")


def test_roles_fit_the_kind_of_account():
    person = seller()
    with pytest.raises(DomainError):
        person.grant_role("service", None, meta())
    with pytest.raises(DomainError):
        person.grant_role("admin", ["shop-a"], meta())
    with pytest.raises(DomainError):
        person.issue_api_key("k1", ["shops:read"], None, meta())
    service = Account.register("acme", "etsy-sync", "service", meta())
    with pytest.raises(DomainError):
        service.enroll_mfa(meta())
    with pytest.raises(DomainError) as refused:
        service.issue_api_key("k1", ["accounts:manage"], None, meta())
    assert refused.value.field == "scopes"


def test_granting_what_is_held_is_a_no_op_and_revoking_narrows():
    account = seller()
    assert account.grant_role("seller", ["shop-a"], meta()) is False
    assert account.grant_role("seller", ["shop-b"], meta()) is True
    assert account.roles == {"seller": ["shop-a", "shop-b"]}
    assert account.revoke_role("seller", ["shop-a"], meta()) is True
    assert account.roles == {"seller": ["shop-b"]}
    assert account.revoke_role("seller", None, meta()) is True and account.roles == {}
