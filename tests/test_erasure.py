"""Erasure in an immutable log (issue 16 item 5, crypto-shredding): personal data enters events
sealed under its subject's key; erasing deletes the key and records a tombstone. After that the
subject's data is unreadable anywhere (events, every table, history, log, export, time travel)
while the chain still verifies and everything else keeps working."""

from __future__ import annotations

import json
import uuid
from argparse import Namespace
from uuid import UUID

import httpx
import psycopg
import pytest

import codec
from api.app import create_app
from api.auth import AuthSettings, trusted_proxies
from api.erase_cli import erase
from api.server import running
from commands.context import CommandContext
from commands.identity import LoginRefused
from commands.marketplace_facts import Pseudonyms
from domain.errors import NotFound
from domain.meta import Actor
from domain.orders import OrderBatch
from domain.personal import ERASED, SEALED, SubjectSealer, is_sealed, new_subject_key, reveal, subject_of
from projections.price_changes import PriceChanges
from projections.projector import Projector
from read.explain import explain
from read.side import ReadSide
from tests.conftest import listing_spec, verify_chain
from tests import test_auth, test_auth_secrets
from tests.test_auth import bearer, client_ip, from_client, login, make_person, tokens
from tests import test_etsy_csv
from tests.test_etsy_csv import ITEMS, LISTINGS, events_of, run

seller = test_etsy_csv.seller  # a tenant's context and its GBP shop with the listings tests/data's files sell
logged_server = test_auth_secrets.logged_server  # a server of its own keeping every log line



@pytest.fixture(scope="module")
def base_url(engine):
    """The API as serve builds it: its readers open sealed values with the server's key; 127.0.0.1
    is a trusted proxy, so X-Forwarded-For names each login's client."""
    app = create_app(engine, auth_settings=AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1")))
    app.state.reads.audit.use_unwrap(engine.identity.vault.unwrap)
    with running(app) as url:
        yield url


# test_auth's: each request from an address of its own (on this module's server), and an admin.
http, admin = test_auth.http, test_auth.admin


def everywhere(database_url, text: str) -> dict[str, int]:
    """Rows of every table of ours (events, views, lookups) whose text holds `text`."""
    found = {}
    with psycopg.connect(database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN"
            " ('pg_catalog', 'information_schema')")]
        for table in tables:
            n = conn.execute(f"SELECT count(*) FROM {table} t WHERE strpos(t::text, %s) > 0"
                             " OR strpos(encode(convert_to(t::text, 'UTF8'), 'escape'), %s) > 0", [text, text]).fetchone()[0]
            if n:
                found[table] = n
        events = conn.execute("SELECT count(*) FROM pricing_events WHERE strpos(convert_from(state, 'UTF8'), %s) > 0",
                              [text]).fetchone()[0]
    if events:
        found["pricing_events.state"] = events
    return found


def shown(http, admin, account_id: str) -> str:
    """Every answer that shows the account's events or state, as one text."""
    answers = [http.get(f"/security/accounts/{account_id}/events", headers=admin, params={"limit": 1000}),
               http.get(f"/aggregates/{account_id}/history", headers=admin, params={"limit": 1000}),
               http.get(f"/aggregates/{account_id}/state", headers=admin),
               http.get("/audit/events", headers=admin, params={"limit": 1000}),
               http.get("/audit/export", headers=admin),
               http.get(f"/accounts/{account_id}", headers=admin),
               http.get("/accounts", headers=admin)]
    for answer in answers:
        assert answer.status_code == 200, answer.text
    return "\n".join(a.text for a in answers)


# -- the sealed-value format: pure ------------------------------------------------------------
@pytest.mark.parametrize("text", ["ada", "Ada Lovelace (adal)", "203.0.113.9", "é ✓ \n ünïcode", ""])
def test_a_sealed_value_opens_under_its_key_only_and_reads_erased_without_it(text):
    subject, other = uuid.uuid4(), uuid.uuid4()
    sealer = SubjectSealer(subject, new_subject_key())
    sealed = sealer.seal(text)
    assert is_sealed(sealed) and subject_of(sealed) == subject and (not text or text not in sealed)
    assert sealer.seal(text) != sealed  # a fresh nonce each time: equal values do not show as equal
    value = {"data": {"username": sealed, "items": [sealed, "plain"]}}
    assert reveal(value, {subject: sealer}) == {"data": {"username": text, "items": [text, "plain"]}}
    assert reveal(value, {subject: None}) == {"data": {"username": ERASED, "items": [ERASED, "plain"]}}
    assert reveal(value, None)["data"]["username"] == SEALED  # a reader given no key
    assert reveal(value, {subject: SubjectSealer(subject, new_subject_key())})["data"]["username"] == ERASED
    moved = sealed.replace(subject.hex, other.hex)  # copied under another subject: does not open
    assert reveal(moved, {other: SubjectSealer(other, sealer._key)}) == ERASED


def test_a_fingerprint_is_stable_under_one_key_and_differs_under_another():
    one, two = (SubjectSealer(uuid.uuid4(), new_subject_key()) for _ in range(2))
    assert one.fingerprint("203.0.113.9") == one.fingerprint("203.0.113.9") != one.fingerprint("203.0.113.10")
    assert one.fingerprint("203.0.113.9") != two.fingerprint("203.0.113.9")


# -- accounts ---------------------------------------------------------------------------------
def test_usernames_and_client_addresses_enter_the_log_sealed(http, admin, database_url):
    person = make_person(http, admin)
    address = client_ip()
    assert login(http, person, "not the password", client=address).status_code == 401
    assert login(http, person, client=address).status_code == 200
    assert everywhere(database_url, address) == {}
    assert set(everywhere(database_url, person["username"])) == {"public.accounts"}  # the login lookup alone
    history = http.get(f"/security/accounts/{person['account_id']}/events", headers=admin).json()["events"]
    registered, failed, succeeded = history[0], *[e for e in history if e["type"].startswith("Account.Login")]
    assert registered["data"]["username"] == person["username"]
    assert failed["data"]["address"] == succeeded["data"]["address"] == address
    assert failed["data"]["client"] == succeeded["data"]["client"] != address  # one client, by its fingerprint


def test_erasing_an_account_leaves_its_data_readable_nowhere_and_the_chain_whole(http, admin, engine, database_url):
    person = make_person(http, admin)
    address = client_ip()
    session = tokens(http, person)
    assert login(http, person, "not the password", client=address).status_code == 401
    reason = f"Ada Lovelace asked for a break {uuid.uuid4().hex[:6]}"
    other = make_person(http, admin)
    assert http.post(f"/accounts/{other['account_id']}/disable", headers=bearer(session["access_token"]),
                     json={"reason": reason}).status_code == 403  # a seller may not; an admin may:
    assert http.post(f"/accounts/{other['account_id']}/disable", headers=admin, json={"reason": reason}).status_code == 200
    assert person["username"] in shown(http, admin, person["account_id"]) and reason in shown(http, admin, other["account_id"])

    erased = http.post(f"/accounts/{person['account_id']}/erase", headers=admin)
    assert erased.status_code == 200, erased.text
    assert {"subject_id": person["account_id"], "kind": "account"} in erased.json()["erased"]

    text = shown(http, admin, person["account_id"])
    assert person["username"] not in text and address not in text and ERASED in text
    assert everywhere(database_url, person["username"]) == {} and everywhere(database_url, address) == {}
    assert http.get("/auth/me", headers=bearer(session["access_token"])).status_code == 401  # its session ended
    assert login(http, person).status_code == 401
    with pytest.raises(LoginRefused):
        engine.identity.login(person["username"], person["password"], address, admin.tenant_id)
    assert verify_chain(engine).ok
    # The tombstone names the subject, and nothing of what it held.
    with psycopg.connect(database_url) as conn:
        tombstones = [json.loads(bytes(s)) for s, in conn.execute(
            "SELECT state FROM pricing_events WHERE topic = 'domain.personal:Privacy.SubjectErased'")]
    assert {"subject_id": {"_type_": "uuid_hex", "_data_": UUID(person["account_id"]).hex}, "kind": "account"} in [
        {k: t[k] for k in ("subject_id", "kind")} for t in tombstones]


def test_erasing_the_admin_who_wrote_a_reason_erases_the_reason(http, admin, accounts, database_url):
    second_admin = make_person(http, admin, role="admin", shops=None)
    second = bearer(tokens(http, second_admin)["access_token"])
    target = make_person(http, admin)
    reason = f"Grace Hopper's request {uuid.uuid4().hex[:6]}"
    assert http.post(f"/accounts/{target['account_id']}/disable", headers=second, json={"reason": reason}).status_code == 200
    assert reason in shown(http, admin, target["account_id"])
    erased = http.post(f"/accounts/{second_admin['account_id']}/erase", headers=admin)
    assert erased.status_code == 200, erased.text
    assert [e["kind"] for e in erased.json()["erased"]] == ["account", "reason"]
    assert reason not in shown(http, admin, target["account_id"]) and everywhere(database_url, reason) == {}


@pytest.mark.parametrize("whose", ["another tenant's", "unknown", "own"])
def test_erase_refuses_what_the_admin_may_not_erase_and_changes_nothing(http, admin, accounts, count_events, whose):
    stranger = accounts.new("seller")
    target = {"another tenant's": stranger.account_id, "unknown": str(uuid.uuid4()), "own": admin.account_id}[whose]
    before = count_events()
    answer = http.post(f"/accounts/{target}/erase", headers=admin)
    assert answer.status_code == (422 if whose == "own" else 404), answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert count_events() == before
    if whose == "another tenant's":
        assert http.get("/auth/me", headers=stranger).status_code == 200


def test_only_admins_erase(http, admin, accounts):
    target = make_person(http, admin)
    for role in ("seller", "auditor", "analyst"):
        assert http.post(f"/accounts/{target['account_id']}/erase", headers=accounts.new(role, admin.tenant_id)).status_code == 403
    assert tokens(http, target)  # still there


def test_failed_logins_naming_an_account_that_is_later_erased_are_erased_with_it(http, admin, database_url):
    username = f"p-{uuid.uuid4().hex[:10]}"
    address = client_ip()
    refused = http.post("/auth/login", headers=from_client(address),
                        json={"tenant": admin.tenant_id, "username": username, "password": "whatever it is"})
    assert refused.status_code == 401
    assert everywhere(database_url, username) == {} and everywhere(database_url, address) == {}
    # The attempt named a username no account had; an account that takes it later:
    created = http.post("/accounts", headers=admin, json={"username": username, "password": "a long passphrase indeed",
                                                          "roles": [{"role": "analyst", "shops": None}]})
    assert created.status_code == 201, created.text
    stream = http.get("/security/unknown-logins", headers=admin).json()["events"]
    assert any(e["data"].get("username") == username for e in stream)
    assert http.post(f"/accounts/{created.json()['account_id']}/erase", headers=admin).status_code == 200
    stream = http.get("/security/unknown-logins", headers=admin).json()["events"]
    assert not any(e["data"].get("username") == username or e["data"].get("client") == address for e in stream)
    assert everywhere(database_url, username) == {}


# -- buyers of a shop ---------------------------------------------------------------------------
def subject_exists(database_url, subject_hex: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM subject_keys WHERE subject_id = %s", [UUID(subject_hex)]).fetchone()[0] == 1


def test_buyers_are_random_subject_ids_found_again_in_one_batch(engine, database_url):
    tenant, shop, other = f"t-{uuid.uuid4().hex[:8]}", uuid.uuid4(), uuid.uuid4()
    pseudonyms = Pseudonyms(engine.identity.secrets)
    names = [f"buyer{i}" for i in range(10_000)] + ["Ada Lovelace (adal)", " ADAL ", "   "]
    with QueryCounter(engine) as first:
        ids = pseudonyms.of_many(engine.core, tenant, shop, names)
    with QueryCounter(engine) as again:
        assert pseudonyms.of_many(engine.core, tenant, shop, names) == ids
    assert first.queries <= 5 and again.queries == 1  # per batch, not per buyer (a new tenant's first: its lookup key)
    assert ids["Ada Lovelace (adal)"] == ids[" ADAL "] and ids["   "] is None
    assert len(set(ids.values()) - {None}) == 10_001 and all(len(i) == 32 for i in ids.values() if i)
    assert pseudonyms.of_many(engine.core, tenant, other, ["adal"])["adal"] != ids[" ADAL "]  # not linkable across shops
    assert everywhere(database_url, "buyer9999") == {}


def test_erasing_a_buyer_unlinks_its_orders_and_refuses_other_tenants_and_unknown_buyers(engine, seller, database_url,
                                                                                        count_events):
    ctx, shop = seller
    run(engine, (ctx, shop), "etsy-listings", LISTINGS)
    run(engine, (ctx, shop), "etsy-order-items", ITEMS)
    orders = {e.order_id: e.buyer for e in events_of(engine, shop, OrderBatch.OrderRecorded)}
    ada = orders["3011220001"]
    assert ada == orders["3011220004"] and subject_exists(database_url, ada)

    before = count_events()
    stranger = CommandContext(actor=Actor("someone"), tenant_id=f"t-{uuid.uuid4().hex[:8]}")
    for refused in (lambda: engine.identity.vault.erase_buyer(stranger, shop, "adal"),
                    lambda: engine.identity.vault.erase_buyer(ctx, shop, "nobody-bought-this")):
        with pytest.raises(NotFound):
            refused()
    assert count_events() == before and subject_exists(database_url, ada)

    erased = erase(engine, Namespace(erase="buyer", shop=shop, buyer="Ada Lovelace (adal)"))
    assert erased.body == {"erased": [{"subject_id": str(UUID(ada)), "kind": "buyer"}]}
    assert not subject_exists(database_url, ada) and subject_exists(database_url, orders["3011220002"])
    again = Pseudonyms(engine.identity.secrets).of_many(engine.core, ctx.tenant_id, shop, ["adal"])["adal"]
    assert again != ada  # a later order of the same name is a new subject: nothing leads back to the old orders
    assert verify_chain(engine).ok


# -- reasons ------------------------------------------------------------------------------------
def test_erasing_one_reason_by_its_command_id(http, admin, engine, accounts, database_url, count_events):
    target = make_person(http, admin)
    reason = f"asked by Charles Babbage {uuid.uuid4().hex[:6]}"
    assert http.post(f"/accounts/{target['account_id']}/disable", headers=admin, json={"reason": reason}).status_code == 200
    assert everywhere(database_url, reason) == {}  # sealed in the event from the start
    disabled = [e for e in engine.identity.account_history(
        CommandContext(actor=Actor(admin.account_id), tenant_id=admin.tenant_id), UUID(target["account_id"]))["events"]
        if e["type"] == "Account.Disabled"][0]
    assert disabled["meta"]["reason"] == reason
    command_id = disabled["meta"]["command_id"]

    stranger, before = accounts.new("admin"), count_events()
    with pytest.raises(NotFound):  # another tenant's command id is unknown to this tenant
        erase(engine, Namespace(erase="reason", command_id=command_id, tenant=stranger.tenant_id))
    assert count_events() == before
    erase(engine, Namespace(erase="reason", command_id=command_id, tenant=admin.tenant_id))
    text = shown(http, admin, target["account_id"])
    assert reason not in text and ERASED in text
    with pytest.raises(NotFound):  # erased already
        erase(engine, Namespace(erase="reason", command_id=command_id, tenant=admin.tenant_id))


def test_the_cli_erases_an_account_as_the_api_does(http, admin, engine, database_url):
    person = make_person(http, admin)
    erased = erase(engine, Namespace(erase="account", account_id=UUID(person["account_id"])))
    assert erased.body["erased"][0] == {"subject_id": person["account_id"], "kind": "account"}
    assert everywhere(database_url, person["username"]) == {}
    with pytest.raises(NotFound):
        erase(engine, Namespace(erase="account", account_id=uuid.uuid4()))


class QueryCounter:
    """Statements the engine's connections execute inside the block (psycopg's trace hook)."""

    def __init__(self, engine):
        self.engine, self.queries = engine, 0

    def __enter__(self):
        import psycopg as pg

        self._execute = pg.Cursor.execute
        counter = self

        def counted(cursor, *args, **kwargs):
            counter.queries += 1
            return counter._execute(cursor, *args, **kwargs)

        pg.Cursor.execute = counted
        return self

    def __exit__(self, *exc):
        import psycopg as pg

        pg.Cursor.execute = self._execute


# -- reasons people write, sealed in every command (Identity.seal_reasons) -----------------------
@pytest.fixture
def sealing_reasons(engine):
    engine.identity.seal_reasons = True
    yield
    engine.identity.seal_reasons = False


def test_a_sellers_reasons_are_sealed_and_erased_with_the_seller_in_events_views_and_explain(
        sealing_reasons, http, admin, engine, database_url):
    seller = make_person(http, admin, role="seller", shops=None)
    as_seller = bearer(tokens(http, seller)["access_token"])
    shop = http.post("/shops", headers=as_seller, json={"name": "Hedgerow", "currency": "GBP"}).json()["shop_id"]
    listing = http.post(f"/shops/{shop}/listings", headers=as_seller,
                        json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    reason = f"Ada Lovelace asked for it {uuid.uuid4().hex[:6]}"
    changed = http.put(f"/shops/{shop}/listings/{listing}/price", headers=as_seller,
                       json={"price": "22.00", "currency": "GBP", "reason": reason})
    assert changed.status_code == 200, changed.text
    assert everywhere(database_url, reason) == {}
    assert reason in http.get(f"/aggregates/{listing}/history", headers=admin).text
    viewer = CommandContext(actor=Actor(admin.account_id), tenant_id=admin.tenant_id)
    reads = ReadSide(engine.core.conninfo, pool_size=1)
    reads.audit.use_unwrap(engine.identity.vault.unwrap)
    try:
        assert explain(reads.aggregates, viewer, UUID(shop), UUID(listing), reads.audit.personal)["chain"][0]["reason"] == reason
        project(database_url)
        assert view_reason(database_url, listing).startswith("sealed:v1:")  # as the event holds it

        assert http.post(f"/accounts/{seller['account_id']}/erase", headers=admin).status_code == 200
        assert explain(reads.aggregates, viewer, UUID(shop), UUID(listing), reads.audit.personal)["chain"][0]["reason"] == ERASED
    finally:
        reads.close()
    history = http.get(f"/aggregates/{listing}/history", headers=admin).text
    assert reason not in history and ERASED in history
    project(database_url)
    assert view_reason(database_url, listing) == ERASED
    assert verify_chain(engine).ok


def project(database_url) -> None:
    Projector(database_url, codec.to_domain_event, [PriceChanges()]).catch_up()


def view_reason(database_url, listing: str) -> str:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT reason FROM analytics.price_changes WHERE listing_id = %s AND kind = 'changed'",
                            [listing]).fetchone()[0]


def test_a_batch_seals_its_reason_once(sealing_reasons, engine):
    from commands.personal import SealingContext

    ctx = SealingContext(actor=Actor(str(uuid.uuid4())), tenant_id=f"t-{uuid.uuid4().hex[:8]}", vault=engine.identity.vault)
    with QueryCounter(engine) as counted:
        metas = [ctx.meta(None, reason="Ada's batch") for _ in range(1000)]
    assert counted.queries == 1 and len({m.reason for m in metas}) == 1 and is_sealed(metas[0].reason)
    assert ctx.meta(None).reason == ""  # the empty reason: no key, nothing sealed


def test_log_lines_of_an_erasure_flow_carry_no_username_address_or_reason(logged_server, accounts):
    url, logs = logged_server
    admin = accounts.new("admin")
    with httpx.Client(base_url=url, timeout=60) as client:
        person, address = make_person(client, admin), client_ip()
        assert login(client, person, "not the password", client=address).status_code == 401
        assert login(client, person, client=address).status_code == 200
        reason = f"Ada Lovelace's request {uuid.uuid4().hex[:6]}"
        assert client.post(f"/accounts/{person['account_id']}/disable", headers=admin, json={"reason": reason}).status_code == 200
        assert client.post(f"/accounts/{person['account_id']}/erase", headers=admin).status_code == 200
    text = "\n".join(logs.lines)
    assert "/erase" in text and "/auth/login" in text  # the scan has material
    assert not [x for x in (person["username"], person["password"], reason, address) if x in text]


def test_an_erased_account_is_neither_erased_again_nor_enabled(http, admin, count_events):
    person = make_person(http, admin)
    assert http.post(f"/accounts/{person['account_id']}/erase", headers=admin).status_code == 200
    before = count_events()
    for action in ("erase", "enable"):
        refused = http.post(f"/accounts/{person['account_id']}/{action}", headers=admin)
        assert refused.status_code == 422 and refused.json()["field"] == "account_id", refused.text
    assert count_events() == before
    assert http.get(f"/accounts/{person['account_id']}", headers=admin).json()["disabled"] is True
