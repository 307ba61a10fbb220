"""The Account aggregate and the grants rule, without I/O."""

from datetime import datetime, timedelta, timezone

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.account import (ACCOUNT_CEILING, CLIENT_FREE_FAILURES, CLIENT_MEMORY, KNOWN_CLIENT_FOR, Account,
                            FailureReason, Grants, client_key, client_wait, lock_duration)
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


def test_a_client_gets_a_few_free_failures_then_waits_that_double_up_to_an_hour():
    account = seller()
    for i in range(CLIENT_FREE_FAILURES):
        assert account.refusal("10.0.0.1", T0 + timedelta(seconds=i)) is None
        assert account.login_failed("bad_password", "10.0.0.1", meta(T0 + timedelta(seconds=i))) is False
    last = T0 + timedelta(seconds=CLIENT_FREE_FAILURES - 1)
    assert account.refusal("10.0.0.1", last) is FailureReason.THROTTLED
    assert account.retry_after("10.0.0.1", last) == timedelta(seconds=30)
    assert account.refusal("10.0.0.2", last) is None             # another client is not slowed
    # An attempt during the wait is recorded as throttled and changes nothing.
    account.login_failed("bad_password", "10.0.0.1", meta(last + timedelta(seconds=10)))
    assert account.collect_events()[-1].reason == "throttled"
    assert account.retry_after("10.0.0.1", last + timedelta(seconds=10)) == timedelta(seconds=20)
    waits = [client_wait(n) for n in range(CLIENT_FREE_FAILURES, CLIENT_FREE_FAILURES + 10)]
    assert waits[:4] == [timedelta(seconds=s) for s in (30, 60, 120, 240)] and waits[-1] == timedelta(hours=1)
    assert not account.is_locked(last)                             # no lock for everyone


def test_the_accounts_ceiling_locks_out_unknown_clients_only():
    account = seller()
    account.login_succeeded("password", "192.0.2.7", meta(T0))    # the owner's usual client
    at = T0 + timedelta(minutes=1)
    for i in range(ACCOUNT_CEILING):
        locked = account.login_failed("bad_password", f"198.51.100.{i % 250}" if i < 250 else "x", meta(at))
    assert locked and account.locked_until == at + lock_duration(0)
    assert account.refusal("203.0.113.9", at) is FailureReason.LOCKED    # a stranger
    assert account.refusal("192.0.2.7", at) is None                      # the owner still gets in
    account.login_succeeded("password", "192.0.2.7", meta(at))
    with pytest.raises(DomainError):
        account.login_succeeded("password", "203.0.113.9", meta(at))     # an unknown client, even right
    assert lock_duration(1) == timedelta(minutes=30) and lock_duration(30) == timedelta(hours=24)


def test_a_successful_login_resets_its_clients_budget_and_unlock_ends_a_lock():
    account = seller()
    for i in range(CLIENT_FREE_FAILURES):
        account.login_failed("bad_password", "x", meta(T0))
    assert account.refusal("x", T0) is FailureReason.THROTTLED
    with pytest.raises(DomainError):
        account.login_succeeded("password", "x", meta(T0))
    assert account.unlock(meta(T0)) is True
    account.login_succeeded("password", "x", meta(T0))
    assert account.locks_since_success == 0 and account.consecutive_failures == 0 and account.client_failures == {}
    assert account.knows("x", T0 + KNOWN_CLIENT_FOR - timedelta(seconds=1))
    assert not account.knows("x", T0 + KNOWN_CLIENT_FOR)


def test_ipv6_clients_share_a_budget_per_64():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1") == "192.0.2.1"


Clients = st.sampled_from([f"198.51.100.{i}" for i in range(1, 40)] + [f"2001:db8:{i}::1" for i in range(1, 20)])


@settings(max_examples=200, deadline=None)
@given(attempts=st.lists(st.tuples(Clients, st.integers(0, 600)), max_size=400))
def test_no_strangers_failures_refuse_a_known_client(attempts):
    """Whatever strangers do, however many and however fast, the owner's known client is never
    refused, and no stranger gets more than the free failures without waiting in between."""
    account = seller()
    account.login_succeeded("password", "192.0.2.7", meta(T0))
    now, counted = T0, {}
    for client, gap_s in attempts:
        now += timedelta(seconds=gap_s)
        refused = account.refusal(client, now)
        account.login_failed("bad_password", client, meta(now))
        reason = account.collect_events()[-1].reason
        assert reason == (refused.value if refused else "bad_password")
        if reason == "bad_password":
            counted.setdefault(client_key(client), []).append(now)
        assert account.refusal("192.0.2.7", now) is None
    for times in counted.values():  # in any 24 h, beyond the free ones, every failure waited its turn
        for n in range(CLIENT_FREE_FAILURES, len(times)):
            recent = [t for t in times[:n] if times[n] - t < CLIENT_MEMORY]
            assert times[n] - times[n - 1] >= client_wait(len(recent)) or len(recent) < CLIENT_FREE_FAILURES


@settings(max_examples=100, deadline=None)
@given(failures=st.integers(0, 2 * ACCOUNT_CEILING + 10))
def test_the_ceiling_is_at_most_a_hundred_failures_in_a_row(failures):
    account = seller()
    locks = 0
    for i in range(failures):
        locks += account.login_failed("bad_password", f"10.{i // 250}.{i % 250}.1", meta(T0))
    assert locks == (1 if failures >= ACCOUNT_CEILING else 0)  # later attempts meet the lock
    assert account.is_locked(T0) == (failures >= ACCOUNT_CEILING)


def test_old_login_failures_and_snapshots_are_upcast():
    state = {"reason": "bad_password", "client": "x", "meta": meta()}
    Account.LoginFailed.upcast_v1_v2(state)
    assert state["action"] == "login"
    snapshot = {"recent_failures": [T0, T0], "locked_until": None}
    Account.upcast_v1_v2(snapshot)
    assert snapshot == {"consecutive_failures": 2, "client_failures": {}, "known_clients": {}, "locked_until": None}


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
