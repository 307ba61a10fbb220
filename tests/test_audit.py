"""Audit reading over real HTTP on real PostgreSQL: history, the global log, exports, and the hash
chain that names the first event someone edited behind the triggers' back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest

import migrations
from api.app import create_app
from api.database import create_database, drop_database
from api.server import running
from read.audit import GENESIS, VERIFY_PAGE, chain_hash, event_bytes, event_digest, link_hash
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands import models
from conftest import ROOT, Accounts, listing_spec, verify_chain
from domain.meta import Actor

SEEN_AT = datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)
BATCH = 8  # observations the tamper tests' history records in one statement


# -- helpers ------------------------------------------------------------------------------------
def register(api, shop, *specs) -> list[str]:
    response = api.post(f"/shops/{shop}/listings", json={"listings": list(specs)})
    assert response.status_code == 201, response.text
    return [x["listing_id"] for x in response.json()["listings"]]


def set_price(api, shop, listing, price: str) -> None:
    response = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": price, "currency": "GBP"})
    assert response.status_code == 200, response.text


def observe(api, shop, listing, n: int) -> None:
    observations = [{"listing_id": listing, "competitor": f"rival-{i}", "price": "19.50", "currency": "GBP",
                     "observed_at": (SEEN_AT + timedelta(seconds=i)).isoformat()} for i in range(n)]
    response = api.post(f"/shops/{shop}/observations", json={"observations": observations})
    assert response.status_code == 201, response.text


def all_pages(api, limit: int = 1000, **params) -> list[dict]:
    events, after = [], 0
    while True:
        response = api.get("/audit/events", params={"after": after, "limit": limit, **params})
        assert response.status_code == 200, response.text
        page = response.json()
        events += page["events"]
        if not page["more"]:
            return events
        after = page["next_after"]


def tenant_positions(database_url, tenant_id: str) -> list[int]:
    """The truth, straight from the tables: every position of the tenant's shops and accounts."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT i.notification_id FROM event_index i JOIN reservations r"
            " ON r.shop_id = i.shop_id AND r.kind = 'tenant' AND r.key = %(t)s"
            " UNION SELECT e.notification_id FROM pricing_events e JOIN accounts a"
            " ON a.account_id = e.originator_id AND a.tenant_id = %(t)s ORDER BY 1", {"t": tenant_id}).fetchall()
    return [r[0] for r in rows]


def shop_events(events: list[dict]) -> list[dict]:
    """Leave out account events (logins...), which belong to no shop."""
    return [e for e in events if e["meta"]["shop_id"] is not None]


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert response.json().get("field") == field, response.json()
    return response.json()


def client(base_url, credentials) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=credentials, timeout=60)


@pytest.fixture
def auditor(base_url, accounts, tenant):
    """Reads the whole of our tenant's log (the global log and exports are tenant-wide)."""
    with client(base_url, accounts.new("auditor", tenant.tenant_id)) as c:
        yield c


@pytest.fixture
def other_tenant(accounts):
    return accounts.new("seller")


@pytest.fixture
def other_seller(base_url, other_tenant):
    with client(base_url, other_tenant) as c:
        yield c


@pytest.fixture
def other_auditor(base_url, accounts, other_tenant):
    """An auditor of another tenant."""
    with client(base_url, accounts.new("auditor", other_tenant.tenant_id)) as c:
        yield c


# -- describing events --------------------------------------------------------------------------
def test_history_is_paged_by_version_and_describes_each_event(api, tenant, shop, listing):
    for price in ("21.00", "22.00", "23.00", "24.00", "25.00"):
        set_price(api, shop, listing, price)

    first = api.get(f"/aggregates/{listing}/history", params={"limit": 4}).json()
    assert [e["version"] for e in first["events"]] == [1, 2, 3, 4]
    assert first["more"] is True and first["next_after_version"] == 4
    second = api.get(f"/aggregates/{listing}/history",
                     params={"after_version": first["next_after_version"], "limit": 4}).json()
    assert [e["version"] for e in second["events"]] == [5, 6]
    assert second["more"] is False and second["next_after_version"] == 6
    assert api.get(f"/aggregates/{listing}/history", params={"after_version": 6}).json()["events"] == []

    registered, changed = first["events"][0], first["events"][1]
    assert registered["type"] == "Listing.Registered"
    assert registered["topic"] == "domain.listing:Listing.Registered"
    assert registered["data"]["guardrails"]["floor"] == {"amount": "10.00", "currency": "GBP"}
    assert changed["type"] == "Listing.PriceChanged" and changed["aggregate_id"] == listing
    assert changed["data"]["price"] == {"amount": "21.00", "currency": "GBP"}
    assert changed["data"]["previous"] == {"amount": "20.00", "currency": "GBP"}
    assert changed["meta"]["actor_id"] == tenant.account_id and changed["meta"]["shop_id"] == shop
    assert isinstance(changed["position"], int) and changed["position"] > registered["position"]
    assert datetime.fromisoformat(changed["recorded_at"]).tzinfo is not None
    datetime.fromisoformat(changed["meta"]["occurred_at"])


def test_a_shop_has_a_history_too(api, shop):
    events = api.get(f"/aggregates/{shop}/history").json()["events"]
    assert [e["type"] for e in events] == ["Shop.Opened"]
    assert events[0]["data"]["name"] == "Hedgerow Ceramics"


def test_another_tenants_aggregate_is_not_found(api, other_auditor, shop, listing):
    for aggregate in (listing, shop):
        assert_problem(other_auditor.get(f"/aggregates/{aggregate}/history"), 404)
    assert_problem(api.get(f"/aggregates/{uuid.uuid4()}/history"), 404)
    assert_problem(api.get("/aggregates/not-a-uuid/history"), 422, "aggregate_id")
    assert_problem(api.get(f"/aggregates/{listing}/history", params={"limit": 0}), 422, "limit")
    assert_problem(api.get(f"/aggregates/{listing}/history", params={"after_version": -1}), 422, "after_version")


# -- the global log -----------------------------------------------------------------------------
def test_paging_the_log_while_others_write_shows_every_event_once(api, auditor, base_url, tenant, shop,
                                                                  other_seller, database_url):
    listings = register(api, shop, *(listing_spec(i) for i in range(4)))
    other_shop = other_seller.post("/shops", json={"name": "Elsewhere", "currency": "GBP"}).json()["shop_id"]
    other_listing = register(other_seller, other_shop, listing_spec(0))[0]
    failures: list[str] = []

    def write_ours():
        with client(base_url, tenant) as seller:
            try:
                for i in range(80):
                    set_price(seller, shop, listings[i % 4], f"{20 + i % 17}.{i % 10}0")
                    if i % 20 == 10:
                        observe(seller, shop, listings[0], 25)
                    if i == 40:  # a shop opened mid-way: its events must show up too
                        new_shop = seller.post("/shops", json={"name": "Second", "currency": "GBP"}).json()["shop_id"]
                        register(seller, new_shop, listing_spec(99))
            except AssertionError as e:
                failures.append(str(e))

    def write_theirs():
        for i in range(40):
            set_price(other_seller, other_shop, other_listing, f"{21 + i % 9}.00")

    writers = [threading.Thread(target=write_ours), threading.Thread(target=write_theirs)]
    for w in writers:
        w.start()
    seen, after, pages_during_writes = [], 0, 0
    while True:
        writing = any(w.is_alive() for w in writers)
        response = auditor.get("/audit/events", params={"after": after, "limit": 7})
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [e["position"] for e in page["events"]]
        after = page["next_after"]
        pages_during_writes += writing
        if not writing and not page["more"]:
            break
    for w in writers:
        w.join()
    assert not failures, failures
    assert pages_during_writes > 5, "the reader never overlapped the writers: the test proves nothing"
    assert seen == tenant_positions(database_url, tenant.tenant_id)  # no gap, no duplicate, in order
    assert len(seen) == len(set(seen)) > 80


def test_the_log_filters_by_type_actor_shop_and_time(api, auditor, accounts, base_url, tenant, shop,
                                                     other_auditor):
    ours = register(api, shop, listing_spec(0), listing_spec(1))
    second_shop = api.post("/shops", json={"name": "Second", "currency": "GBP"}).json()["shop_id"]
    second_listing = register(api, second_shop, listing_spec(0))[0]
    set_price(api, shop, ours[0], "21.00")
    bob = accounts.new("seller", tenant.tenant_id, shops=[shop, second_shop])
    with client(base_url, bob) as as_bob:
        set_price(as_bob, shop, ours[1], "22.00")
        set_price(as_bob, second_shop, second_listing, "23.00")
    observe(api, shop, ours[0], 3)
    everything = all_pages(auditor)
    assert {e["meta"]["shop_id"] for e in everything} == {shop, second_shop, None}  # None: account events

    price_changes = all_pages(auditor, type="Listing.PriceChanged")
    assert [e["position"] for e in price_changes] == [e["position"] for e in everything
                                                      if e["type"] == "Listing.PriceChanged"]
    assert len(price_changes) == 3
    two_types = all_pages(auditor, type=["Listing.PriceChanged", "Shop.Opened"])
    assert {e["type"] for e in two_types} == {"Listing.PriceChanged", "Shop.Opened"} and len(two_types) == 5

    by_bob = shop_events(all_pages(auditor, actor=bob.account_id))
    assert [e["data"]["price"]["amount"] for e in by_bob] == ["22.00", "23.00"]

    in_second = all_pages(auditor, shop_id=second_shop)
    assert [e["type"] for e in in_second] == ["Shop.Opened", "Listing.Registered", "Listing.PriceChanged"]

    recorded = sorted({datetime.fromisoformat(e["recorded_at"]) for e in everything})
    since, until = recorded[2], recorded[-2]
    window = all_pages(auditor, since=since.isoformat(), until=until.isoformat())
    assert [e["position"] for e in window] == [
        e["position"] for e in everything if since <= datetime.fromisoformat(e["recorded_at"]) < until]
    assert 0 < len(window) < len(everything)

    combined = all_pages(auditor, type="Listing.PriceChanged", actor=bob.account_id, shop_id=shop)
    assert [e["aggregate_id"] for e in combined] == [ours[1]]

    assert_problem(other_auditor.get("/audit/events", params={"shop_id": shop}), 404, "shop_id")
    assert_problem(other_auditor.get("/audit/export", params={"shop_id": shop}), 404, "shop_id")
    assert_problem(auditor.get("/audit/events", params={"since": "2026-11-25T10:00:00"}), 422, "since")
    assert_problem(auditor.get("/audit/events", params={"since": until.isoformat(), "until": since.isoformat()}),
                   422, "until")
    assert_problem(auditor.get("/audit/events", params={"type": "Listing; DROP"}), 422, "type[0]")
    assert_problem(auditor.get("/audit/events", params={"after": "x"}), 422, "after")
    assert_problem(auditor.get("/audit/events", params={"limit": 5000}), 422, "limit")


def test_another_tenant_sees_none_of_our_events(api, auditor, other_seller, other_auditor, shop, listing):
    set_price(api, shop, listing, "26.00")
    assert len(shop_events(all_pages(auditor))) == 3
    other_shop = other_seller.post("/shops", json={"name": "Theirs", "currency": "GBP"}).json()["shop_id"]
    theirs = all_pages(other_auditor)
    assert [e["aggregate_id"] for e in shop_events(theirs)] == [other_shop]
    export = [json.loads(line) for line in other_auditor.get("/audit/export").text.splitlines()]
    assert [e["aggregate_id"] for e in shop_events(export)] == [other_shop]
    ours = {e["aggregate_id"] for e in all_pages(auditor)}
    assert not ours & {e["aggregate_id"] for e in theirs + export}


def test_only_shops_granted_with_audit_read_are_readable(api, base_url, accounts, engine, tenant, shop, listing):
    """A seller audits its own shops' aggregates; the tenant-wide log needs a tenant-wide grant;
    seeing a shop in another role (analyst) does not open its history."""
    assert api.get(f"/aggregates/{listing}/history").status_code == 200
    assert_problem(api.get("/audit/events"), 403)
    assert_problem(api.get("/audit/export"), 403)
    assert api.get("/audit/verify").json()["ok"] is True

    elsewhere = api.post("/shops", json={"name": "Elsewhere", "currency": "GBP"}).json()["shop_id"]
    seller_of_one = accounts.new("seller", tenant.tenant_id, shops=[shop])
    admin = CommandContext(Actor("pytest"), tenant.tenant_id)
    assert engine.identity.grant_role(admin, uuid.UUID(seller_of_one.account_id), "analyst", None).created is False
    with client(base_url, seller_of_one) as c:
        assert c.get(f"/shops/{elsewhere}").status_code == 200  # the analyst role sees it...
        assert_problem(c.get(f"/aggregates/{elsewhere}/history"), 404)  # ...but may not audit it
        assert c.get(f"/aggregates/{shop}/history").status_code == 200


# -- export -------------------------------------------------------------------------------------
def test_the_ndjson_export_holds_the_same_events_as_the_paged_log(api, auditor, shop, listing):
    observe(api, shop, listing, 2500)  # more than one export page (2000 events)
    for price in ("21.00", "22.00"):
        set_price(api, shop, listing, price)
    paged = all_pages(auditor, limit=1000)
    assert len(shop_events(paged)) == 2505  # shop, listing, batch received, 2500 observations, 2 price changes

    with auditor.stream("GET", "/audit/export") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert int(response.headers["x-export-to"]) >= paged[-1]["position"]
        exported = [json.loads(line) for line in response.iter_lines() if line]
    assert exported == paged

    start, stop = paged[100]["position"], paged[2200]["position"]
    ranged = [json.loads(x) for x in auditor.get("/audit/export", params={"from": start, "to": stop}).text.splitlines()]
    assert ranged == paged[100:2201]
    filtered = auditor.get("/audit/export", params={"type": "Listing.PriceChanged"}).text.splitlines()
    assert [json.loads(x)["data"]["price"]["amount"] for x in filtered] == ["21.00", "22.00"]
    assert_problem(auditor.get("/audit/export", params={"from": 10, "to": 5}), 422, "to")
    assert_problem(auditor.get("/audit/export", params={"from": 0}), 422, "from")


# -- tamper evidence ----------------------------------------------------------------------------
def test_python_computes_the_chain_exactly_as_the_database_does(engine, database_url, api, shop, listing):
    set_price(api, shop, listing, "27.00")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, event_bytes(e)"
            " FROM pricing_events e ORDER BY e.notification_id DESC LIMIT 50").fetchall()
        newest_links = links_after(conn, rows[-1][0] - 1)
    assert rows and newest_links
    for notification_id, originator_id, version, topic, state, in_sql in rows:
        assert event_bytes(notification_id, originator_id, version, topic, state) == in_sql
    assert_links_are_recomputable(database_url, newest_links)


def links_after(conn, position: int) -> list[tuple]:
    """(first_id, last_id, digests, hash) of the links that begin after `position`, in order."""
    return conn.execute("SELECT first_id, last_id, digests, hash FROM event_chain_links WHERE first_id > %s"
                        " ORDER BY first_id", [position]).fetchall()


def assert_links_are_recomputable(url: str, links: list[tuple]) -> None:
    """Each link holds the digests of exactly the events in its range, and its hash chains from the
    stored head before it, computed in Python as the trigger does in SQL."""
    with psycopg.connect(url) as conn:
        for first, last, digests, stored in links:
            events = conn.execute("SELECT notification_id, originator_id, originator_version, topic, state"
                                  " FROM pricing_events WHERE notification_id BETWEEN %s AND %s"
                                  " ORDER BY notification_id", [first, last]).fetchall()
            previous = conn.execute(
                "SELECT coalesce((SELECT hash FROM event_chain_links WHERE first_id < %(f)s ORDER BY first_id DESC"
                " LIMIT 1), (SELECT hash FROM event_chain WHERE notification_id < %(f)s ORDER BY notification_id"
                " DESC LIMIT 1))", {"f": first}).fetchone()[0]
            assert (events[0][0], events[-1][0]) == (first, last)
            assert digests == b"".join(event_digest(*event) for event in events)
            assert link_hash(previous or GENESIS, digests) == stored


def test_verify_passes_on_an_intact_log(engine, api, shop, listing):
    set_price(api, shop, listing, "28.00")
    report = verify_chain(engine)
    assert report.ok and report.first_bad_position is None and report.checked > 0
    body = api.get("/audit/verify").json()
    # A tenant is told how many of its own events were verified, never the whole log's count.
    assert body["ok"] is True and body["first_bad_position"] is None and 0 < body["checked_own"] < report.checked
    assert set(body) == {"ok", "checked_own", "first_bad_position", "problem", "head", "last_position"}
    middle = report.last_position // 2 + 1
    from_middle = verify_chain(engine, from_position=middle)
    assert from_middle.ok and 0 < from_middle.checked < report.checked + 1
    assert_problem(api.get("/audit/verify", params={"from_position": 0}), 422, "from_position")


def test_history_tables_refuse_update_delete_and_truncate(database_url, listing):
    for statement in ("UPDATE pricing_events SET state = state",
                      "DELETE FROM pricing_events WHERE originator_id = %s",
                      "TRUNCATE pricing_events CASCADE",
                      "UPDATE event_chain_links SET hash = hash",
                      "DELETE FROM event_chain_links",
                      "TRUNCATE event_chain_links",
                      "TRUNCATE event_chain"):  # empty here: the migration-boundary test edits its rows
        with psycopg.connect(database_url) as conn:
            params = [listing] if "%s" in statement else None
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement, params)


@pytest.fixture
def fresh(new_database):
    """A database of its own with a small history, so tampering harms no other test."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx = CommandContext(Actor("alice"), "tamper-tenant")
    shop = engine.listings.open_shop(ctx, models.OpenShop(name="Tamper Test", currency="GBP")).body["shop_id"]
    cmd = models.RegisterListings(listings=[listing_spec(i) for i in range(3)])
    listings = [x["listing_id"] for x in engine.listings.register_listings(ctx, uuid.UUID(shop), cmd).body["listings"]]
    observations = [models.ObservationIn(listing_id=listings[0], competitor=f"rival-{i}", price="19.00",
                                         currency="GBP", observed_at=SEEN_AT) for i in range(BATCH)]
    engine.listings.record_observations(ctx, uuid.UUID(shop), models.RecordObservations(observations=observations))
    for i in range(12):
        engine.listings.set_price(ctx, uuid.UUID(shop), uuid.UUID(listings[i % 3]),
                         models.SetPrice(price=f"{21 + i}.00", currency="GBP"))
    assert verify_chain(engine).ok
    yield url, engine
    engine.close()


HISTORY = ("pricing_events", "event_chain", "event_chain_links")


def behind_the_triggers(url: str, *statements) -> None:
    """What only a superuser can do: edit history with the append-only (and chaining) triggers
    switched off."""
    with psycopg.connect(url) as conn:
        for table in HISTORY:
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for statement in statements:
            assert conn.execute(statement).rowcount >= 1, statement
        for table in HISTORY:
            conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def position_of_price(url: str, amount: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT notification_id FROM pricing_events WHERE topic LIKE '%%PriceChanged'"
                            " AND convert_from(state, 'UTF8')::jsonb #>> '{price,_data_,0}' = %s",
                            [amount]).fetchone()[0]


def batch_positions(url: str) -> list[int]:
    """The positions of the observation batch's events: one statement, so one link."""
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT notification_id FROM pricing_events"
                                           " WHERE topic LIKE 'domain.facts:ObservationBatch.%%' ORDER BY 1")]


def assert_named(engine: PricingEngine, position: int, problem: str, from_position: int | None = None) -> None:
    report = verify_chain(engine, from_position)
    assert (report.ok, report.first_bad_position) == (False, position), report
    assert problem in report.problem, report
    assert report.last_position is None or report.last_position < position


def assert_detected(url: str, engine: PricingEngine, position: int, problem: str) -> None:
    """The function, the CLI and the endpoint all name the first bad position."""
    assert_named(engine, position, problem)

    cli = subprocess.run([sys.executable, "-m", "api.cli", "audit", "verify"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "ETSYPRO_DATABASE_URL": url})
    assert cli.returncode == 1, cli
    assert f"first bad position {position}:" in cli.stderr

    with running(create_app(engine)) as base_url:
        body = httpx.get(f"{base_url}/audit/verify", headers=Accounts(engine).new("auditor")).json()
    assert (body["ok"], body["first_bad_position"]) == (False, position), body


def test_an_altered_event_is_named(fresh):
    url, engine = fresh
    position = position_of_price(url, "25.00")
    behind_the_triggers(url, "UPDATE pricing_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
                             f" '25.00', '2.50'), 'UTF8') WHERE notification_id = {position}")
    assert_detected(url, engine, position, "altered")
    assert verify_chain(engine, from_position=position + 1).ok  # the edit lies before this range
    assert verify_chain(engine, from_position=position).first_bad_position == position


def test_a_removed_event_is_named(fresh):
    url, engine = fresh
    position = position_of_price(url, "27.00")
    behind_the_triggers(url, f"DELETE FROM pricing_events WHERE notification_id = {position}")
    assert_detected(url, engine, position, "missing")


def test_swapped_events_are_named(fresh):
    url, engine = fresh
    first, second = position_of_price(url, "24.00"), position_of_price(url, "30.00")
    behind_the_triggers(url, "UPDATE pricing_events SET state = CASE notification_id"
                             f" WHEN {first} THEN (SELECT state FROM pricing_events WHERE notification_id = {second})"
                             f" ELSE (SELECT state FROM pricing_events WHERE notification_id = {first}) END"
                             f" WHERE notification_id IN ({first}, {second})")
    assert position_of_price(url, "30.00") == first and position_of_price(url, "24.00") == second
    assert_detected(url, engine, first, "altered")


def test_an_event_slipped_in_without_the_chain_is_named(fresh):
    url, engine = fresh
    with psycopg.connect(url) as conn:
        last = conn.execute("SELECT max(notification_id) FROM pricing_events").fetchone()[0]
    behind_the_triggers(url, "INSERT INTO pricing_events (originator_id, originator_version, topic, state)"
                             " SELECT originator_id, originator_version + 1000, topic, state FROM pricing_events"
                             f" WHERE notification_id = {last}")
    with psycopg.connect(url) as conn:
        inserted = conn.execute("SELECT max(notification_id) FROM pricing_events").fetchone()[0]
    assert_detected(url, engine, inserted, "no entry in the hash chain")


# -- links: one per inserting statement (migrations/0007) ---------------------------------------
def next_link(url: str, position: int) -> int:
    """The first position of the first link that begins after `position`."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT min(first_id) FROM event_chain_links WHERE first_id > %s", [position]).fetchone()[0]


def test_an_event_removed_from_inside_a_link_is_named(fresh):
    url, engine = fresh
    batch = batch_positions(url)
    assert len(batch) == BATCH + 1  # the batch's Received, then its observations
    behind_the_triggers(url, f"DELETE FROM pricing_events WHERE notification_id = {batch[4]}")
    assert_named(engine, batch[4], "missing")


def test_an_event_altered_inside_a_link_is_named_even_when_verifying_from_later_in_that_link(fresh):
    """A link is hashed whole, so a start inside one starts at its first event."""
    url, engine = fresh
    batch = batch_positions(url)
    from_inside = verify_chain(engine, from_position=batch[5])
    assert from_inside.ok and from_inside.checked == verify_chain(engine, from_position=batch[0]).checked
    behind_the_triggers(url, f"UPDATE pricing_events SET state = state || ' '::bytea"
                             f" WHERE notification_id = {batch[2]}")
    assert_named(engine, batch[2], "altered", from_position=batch[5])
    assert verify_chain(engine, from_position=batch[-1] + 1).ok  # the next link on holds


@pytest.mark.parametrize("edit", ["hash = sha256(hash)", "digests = substring(digests from 33)"])
def test_an_altered_link_is_named_at_its_first_position(fresh, edit):
    url, engine = fresh
    first = batch_positions(url)[0]
    behind_the_triggers(url, f"UPDATE event_chain_links SET {edit} WHERE first_id = {first}")
    assert_named(engine, first, "does not follow from the previous head")


def test_a_removed_link_leaves_its_events_unchained(fresh):
    url, engine = fresh
    position = position_of_price(url, "25.00")
    behind_the_triggers(url, f"DELETE FROM event_chain_links WHERE first_id = {position}")
    assert_named(engine, position, "no entry in the hash chain")


def test_a_link_removed_with_its_events_is_named_at_the_next_link(fresh):
    url, engine = fresh
    batch = batch_positions(url)
    behind_the_triggers(url, f"DELETE FROM event_chain_links WHERE first_id = {batch[0]}",
                        f"DELETE FROM pricing_events WHERE notification_id BETWEEN {batch[0]} AND {batch[-1]}")
    assert_named(engine, next_link(url, batch[-1]), "does not follow from the previous head")


def test_a_link_rewritten_to_match_an_altered_event_is_named_at_the_next_link(fresh):
    """Digests and hash recomputed for the edit: that link holds, the next one no longer follows."""
    url, engine = fresh
    position = position_of_price(url, "25.00")
    behind_the_triggers(
        url, f"UPDATE pricing_events SET state = state || ' '::bytea WHERE notification_id = {position}",
        "UPDATE event_chain_links l SET digests = x.digest, hash = sha256(x.previous || x.digest) FROM ("
        " SELECT sha256(event_bytes(e)) AS digest, (SELECT hash FROM event_chain_links p"
        f" WHERE p.first_id < {position} ORDER BY p.first_id DESC LIMIT 1) AS previous"
        f" FROM pricing_events e WHERE e.notification_id = {position}) x WHERE l.first_id = {position}")
    assert_named(engine, next_link(url, position), "does not follow from the previous head")


def test_a_link_whose_ids_have_gaps_verifies_and_names_an_event_slipped_into_a_gap(new_database):
    """A statement's ids have gaps only if something drew from the id sequence meanwhile."""
    url = new_database()
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO pricing_events (originator_id, originator_version, topic, state, notification_id)"
                     " SELECT gen_random_uuid(), 1, 'test:Gaps', '', id FROM unnest('{1000,1002,1005}'::bigint[]) id")
        links = links_after(conn, 0)
    assert [(first, last, len(digests)) for first, last, digests, _ in links] == [(1000, 1005, 3 * 32)]
    engine = PricingEngine(url, pool_size=1)
    try:
        assert verify_chain(engine).ok
        behind_the_triggers(url, "INSERT INTO pricing_events (originator_id, originator_version, topic, state,"
                                 " notification_id) VALUES (gen_random_uuid(), 1, 'test:Gaps', '', 1003)")
        assert_named(engine, 1003, "no entry in the hash chain")
    finally:
        engine.close()


def test_a_large_batch_is_one_link_and_verifies(engine, database_url, api, shop, listing):
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT max(notification_id) FROM pricing_events").fetchone()[0]
    observe(api, shop, listing, 3000)  # more than SMALL_SAVE: one COPY
    with psycopg.connect(database_url) as conn:
        batch = [r[0] for r in conn.execute("SELECT notification_id FROM pricing_events WHERE notification_id > %s"
                                            " AND topic LIKE 'domain.facts:ObservationBatch.%%' ORDER BY 1", [before])]
        links = [link for link in links_after(conn, before) if link[0] <= batch[-1]]
    assert len(batch) == 3001 and len(links) == 1
    assert (links[0][0], links[0][1], len(links[0][2])) == (batch[0], batch[-1], 32 * len(batch))
    assert_links_are_recomputable(database_url, links)
    assert verify_chain(engine, from_position=batch[0]).ok


# -- across the migration from per-event rows to links ------------------------------------------
def insert_events(url: str, n: int) -> list[int]:
    """n events in one INSERT statement, straight from SQL; their positions."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("INSERT INTO pricing_events (originator_id, originator_version, topic, state)"
                            " SELECT gen_random_uuid(), 1, 'test:Raw', convert_to('event ' || i, 'UTF8')"
                            " FROM generate_series(1, %s) i RETURNING notification_id", [n]).fetchall()
    return sorted(r[0] for r in rows)


@pytest.fixture
def across_the_migration(pg_admin_url):
    """A database that recorded events before 0007 (a row of event_chain each), was then migrated
    and recorded more (a link per statement): (url, positions before, positions after)."""
    name = f"etsypro_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    try:
        migrations.apply(url, log=lambda *_: None, up_to=6)
        before = insert_events(url, 3) + insert_events(url, 2)
        migrations.apply(url, log=lambda *_: None)
        after = insert_events(url, 3) + insert_events(url, 1)
        yield url, before, after
    finally:
        drop_database(pg_admin_url, name)


def test_verify_walks_per_event_rows_then_links_across_the_migration(across_the_migration):
    url, before, after = across_the_migration
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,"
                            " c.hash FROM pricing_events e JOIN event_chain c USING (notification_id)"
                            " ORDER BY 1").fetchall()
        links = links_after(conn, 0)
    head = GENESIS
    for *event, stored in rows:  # the per-event rows, as 0003's trigger wrote them
        head = chain_hash(head, *event)
        assert head == stored
    assert [row[0] for row in rows] == before  # none written after the migration
    assert [(first, last) for first, last, _, _ in links] == [(after[0], after[2]), (after[3], after[3])]
    assert_links_are_recomputable(url, links)  # the first link chains from the last per-event row

    engine = PricingEngine(url, pool_size=1)
    try:
        report = verify_chain(engine)
        assert (report.ok, report.checked, report.last_position, report.head) == (
            True, len(before + after), after[-1], links[-1][3].hex())
        assert verify_chain(engine, from_position=before[2]).checked == len(before[2:] + after)
        assert verify_chain(engine, from_position=after[1]).checked == len(after)  # from its link's first
        behind_the_triggers(url, f"UPDATE pricing_events SET state = state || ' '::bytea"
                                 f" WHERE notification_id = {after[1]}")
        assert_named(engine, after[1], "altered")
        behind_the_triggers(url, f"DELETE FROM pricing_events WHERE notification_id = {before[3]}")
        assert_named(engine, before[3], "missing")  # the first bad position is now before the migration
        assert_named(engine, after[1], "altered", from_position=after[0])
    finally:
        engine.close()


def test_per_event_chain_rows_stay_append_only_after_the_migration(across_the_migration):
    url, _, _ = across_the_migration
    for statement in ("UPDATE event_chain SET hash = hash", "DELETE FROM event_chain", "TRUNCATE event_chain"):
        with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)


def test_verify_reports_progress_page_by_page(new_database):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    try:
        ctx = CommandContext(Actor("alice"), "progress-tenant")
        shop = uuid.UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Busy", currency="GBP")).body["shop_id"])
        listing = uuid.UUID(engine.listings.register_listings(
            ctx, shop, models.RegisterListings(listings=[listing_spec(0)])).body["listings"][0]["listing_id"])
        observations = [models.ObservationIn(listing_id=listing, competitor=f"c{i}", price="19.00", currency="GBP",
                                             observed_at=SEEN_AT) for i in range(VERIFY_PAGE + 10)]
        engine.listings.record_observations(ctx, shop, models.RecordObservations(observations=observations))
        calls = []
        report = verify_chain(engine, progress=lambda *args: calls.append(args))
        total = VERIFY_PAGE + 13  # shop, listing, batch received, observations
        assert report.ok and report.checked == total
        assert calls == [(VERIFY_PAGE, calls[0][1], report.last_position), (total, report.last_position,
                                                                            report.last_position)]
    finally:
        engine.close()
