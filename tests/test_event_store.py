"""The event store: history cannot be edited from SQL, and every stored event says who, why, on whose
command and when (business time and recorded time)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import psycopg
import psycopg.rows
import pytest

import codec
from conftest import listing_spec

WHEN = "2026-11-24T09:30:00+00:00"


def sql(database_url: str, statement: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(statement)


# -- append-only ------------------------------------------------------------------------------------------
@pytest.fixture
def stored(api, shop, listing) -> str:
    """At least one stored event of each table's kind exists (events, chain links, index, command log)."""
    response = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "21.00", "currency": "GBP"},
                       headers={"Idempotency-Key": f"k-{listing}"})
    assert response.status_code == 200
    return listing


EDITS = [
    "UPDATE pricing_events SET topic = 'forged' WHERE originator_id = '{id}'",
    "UPDATE pricing_events SET state = state WHERE originator_id = '{id}'",  # even a no-op rewrite
    "DELETE FROM pricing_events WHERE originator_id = '{id}'",
    "TRUNCATE pricing_events",
    "TRUNCATE pricing_events, pricing_snapshots",
    "UPDATE event_chain_links SET hash = sha256(hash)",
    "DELETE FROM event_chain_links",
    "TRUNCATE event_chain_links",
    "TRUNCATE event_chain",  # no rows here since 0007: tests/test_audit.py edits them across the migration
    "UPDATE event_index SET actor_id = 'someone-else'",
    "DELETE FROM event_index",
    "TRUNCATE event_index",
    "UPDATE command_log SET created = false",
    "DELETE FROM command_log",
    "TRUNCATE command_log",
]


@pytest.mark.parametrize("statement", EDITS)
def test_history_cannot_be_edited_from_sql(database_url, stored, count_events, statement):
    before = count_events()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        sql(database_url, statement.format(id=stored))
    assert count_events() == before


def test_appending_is_still_allowed_after_a_refused_edit(database_url, api, shop, stored):
    with pytest.raises(psycopg.Error):
        sql(database_url, "DELETE FROM pricing_events")
    response = api.put(f"/shops/{shop}/listings/{stored}/price", json={"price": "22.00", "currency": "GBP"})
    assert (response.status_code, response.json()["version"]) == (200, 3)


# -- provenance on every event --------------------------------------------------------------------------------
def last_position(engine) -> int:
    return engine.core.recorder.max_notification_id() or 0


def events_since(engine, position: int) -> list:
    notifications = engine.core.recorder.select_notifications(position + 1, limit=100_000)
    return [(n.id, codec.to_domain_event(n)) for n in notifications]


def ok(response):
    assert response.status_code in (200, 201), response.text
    return response.json()


def run_every_command(api) -> str:
    """One of each command, as a client would send them; returns the shop."""
    shop = ok(api.post("/shops", json={"name": "Provenance", "currency": "GBP"}))["shop_id"]
    a, b = [x["listing_id"] for x in ok(api.post(f"/shops/{shop}/listings",
                                                 json={"listings": [listing_spec(1), listing_spec(2)]}))["listings"]]
    ok(api.put(f"/shops/{shop}/listings/{a}/price", json={"price": "22.00", "currency": "GBP", "reason": "why not"}))
    ok(api.put(f"/shops/{shop}/listings/{a}/guardrails", json={"floor": "11.00", "currency": "GBP"}))
    ok(api.post(f"/shops/{shop}/price-changes", json={"changes": [{"listing_id": b, "price": "19.00"}],
                                                      "currency": "GBP", "source": "experiment"}))
    ok(api.post(f"/shops/{shop}/observations", json={"observations": [
        {"listing_id": a, "competitor": "rival", "price": "18.00", "currency": "GBP", "observed_at": WHEN}]}))
    ok(api.post(f"/shops/{shop}/sales", json={"sales": [
        {"listing_id": a, "quantity": 2, "unit_price": "22.00", "currency": "GBP", "order_id": "o",
         "transaction_id": "t1", "sold_at": WHEN},
        {"listing_id": a, "quantity": -1, "unit_price": "22.00", "currency": "GBP", "order_id": "o",
         "transaction_id": "t2", "sold_at": WHEN}]}))
    ok(api.post(f"/shops/{shop}/listings/{a}/rollback", json={"to_version": 1, "reason": "undo"}))
    ok(api.post(f"/shops/{shop}/rollbacks", json={"source": "experiment"}))
    return shop


@pytest.fixture
def history(api, engine) -> tuple[str, list]:
    """(shop, [(position, event)]) for one run of every command."""
    start = last_position(engine)
    shop = run_every_command(api)
    return shop, events_since(engine, start)


EXPECTED_TYPES = {"Shop.Opened", "Listing.Registered", "Listing.PriceChanged", "Listing.GuardrailsSet",
                  "ObservationBatch.Received", "ObservationBatch.CompetitorPriceObserved", "SalesBatch.Received",
                  "SalesBatch.Sold", "SalesBatch.Returned",
                  "Account.RoleGranted"}  # the seller who opens a shop is granted it


def shop_of(event, shop: str) -> str | None:
    """The shop an event's meta names: its shop, or none for the tenant's account events."""
    return None if type(event).__qualname__.startswith("Account.") else shop


def test_every_command_stored_its_kind_of_event(history):
    _, events = history
    assert {type(e).__qualname__ for _, e in events} == EXPECTED_TYPES


def test_every_event_says_who_why_on_which_command_and_when(history, tenant):
    shop, events = history
    for _, event in events:
        meta = event.meta
        assert meta.shop_id == shop_of(event, shop)
        assert (meta.actor_id, meta.actor_kind) == (tenant.account_id, "user")
        assert meta.source in ("manual", "rule", "experiment", "rollback", "import")
        assert isinstance(meta.reason, str)
        assert meta.command_id and meta.correlation_id and meta.causation_id
        assert isinstance(meta.occurred_at, datetime) and meta.occurred_at.tzinfo is not None
        assert event.timestamp.tzinfo is not None  # recorded time
        assert meta.occurred_at <= event.timestamp or type(event).__qualname__ in (
            "ObservationBatch.CompetitorPriceObserved", "SalesBatch.Sold", "SalesBatch.Returned")


def test_facts_carry_business_time_apart_from_recorded_time(history):
    _, events = history
    facts = [e for _, e in events if type(e).__qualname__ in ("ObservationBatch.CompetitorPriceObserved",
                                                               "SalesBatch.Sold", "SalesBatch.Returned")]
    assert facts and all(e.meta.occurred_at == datetime.fromisoformat(WHEN) for e in facts)
    assert all(e.timestamp > e.meta.occurred_at for e in facts)


def test_sources_and_reasons_are_the_ones_the_client_gave(history, engine):
    _, events = history
    changes = [e for _, e in events if type(e).__qualname__ == "Listing.PriceChanged"]
    assert [(e.meta.source, engine.identity.vault.reveal(e.meta.reason)) for e in changes] == [
        ("manual", "why not"), ("experiment", ""), ("rollback", "undo"), ("rollback", "")]
    assert [e.compensates for e in changes] == [[], [], [2], [2]]


def test_events_of_one_command_share_its_command_id(history):
    _, events = history
    by_command: dict[str, set[str]] = {}
    for _, e in events:
        by_command.setdefault(e.meta.command_id, set()).add(type(e).__qualname__)
    assert len(by_command) == 9  # one id per command sent
    assert {"SalesBatch.Received", "SalesBatch.Sold", "SalesBatch.Returned"} in by_command.values()


def test_a_correlation_id_from_the_client_is_kept_and_causation_defaults_to_the_command(api, shop, listing,
                                                                                        engine):
    response = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "23.00", "currency": "GBP"},
                       headers={"X-Correlation-Id": "checkout-flow-42"})
    assert response.status_code == 200
    change = list(engine.core.events.get(UUID(listing)))[-1]
    assert change.meta.correlation_id == "checkout-flow-42"
    assert change.meta.causation_id == change.meta.command_id


def test_every_event_has_an_index_row_and_a_chain_link_written_with_it(history, tenant, database_url):
    shop, events = history
    positions = [p for p, _ in events]
    with psycopg.connect(database_url) as conn:
        index = conn.execute("SELECT notification_id, shop_id::text, actor_id, occurred_at, recorded_at"
                             " FROM event_index WHERE notification_id = ANY(%s) ORDER BY 1", [positions]).fetchall()
        chained = conn.execute("SELECT count(*) FROM unnest(%s::bigint[]) p WHERE EXISTS (SELECT FROM"
                               " event_chain_links WHERE p BETWEEN first_id AND last_id)", [positions]).fetchone()[0]
    assert [row[0] for row in index] == positions and chained == len(positions)
    for (position, event), (_, shop_id, actor, occurred_at, recorded_at) in zip(events, index):
        assert (shop_id, actor) == (shop_of(event, shop), tenant.account_id)
        assert (occurred_at, recorded_at) == (event.meta.occurred_at, event.timestamp)


def test_the_stored_meta_is_plain_json_naming_every_field(history, database_url):
    """An auditor with only SQL can read who and why without our code."""
    _, events = history
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT convert_from(state, 'UTF8')::jsonb -> 'meta' FROM pricing_events"
                            " WHERE notification_id = ANY(%s)", [[p for p, _ in events]]).fetchall()
    fields = {"shop_id", "actor_id", "actor_kind", "source", "reason", "command_id", "correlation_id",
              "causation_id", "occurred_at"}
    assert rows and all(fields <= set(_unwrap(meta)) for (meta,) in rows)


def _unwrap(meta: dict) -> dict:
    # The library's transcoder stores a custom type as {"_type_": name, "_data_": value}.
    assert meta["_type_"] == "meta"
    return meta["_data_"]


def test_a_large_batch_gets_its_own_ids_even_when_the_id_sequence_was_drawn_from_meanwhile(new_database):
    """Ids of a COPY are read back as one range when consecutive; a gap (an id drawn by someone
    else, or a rolled back insert) must make it read them one by one, never guess."""
    from commands.persistence import PricingRecorder

    url = new_database()
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        conn.execute("INSERT INTO pricing_events (originator_id, originator_version, topic, state)"
                     " VALUES (gen_random_uuid(), 1, 't', ''), (gen_random_uuid(), 1, 't', '')")
        conn.execute("SELECT nextval('pricing_events_notification_id_seq')")  # the gap
        conn.execute("INSERT INTO pricing_events (originator_id, originator_version, topic, state)"
                     " VALUES (gen_random_uuid(), 1, 't', '')")
        ids = [r["notification_id"] for r in conn.execute("SELECT notification_id FROM pricing_events ORDER BY 1")]
        with conn.cursor() as curs:
            assert PricingRecorder._ids_after(curs, 0, 3) == ids and ids[2] == ids[1] + 2
            assert PricingRecorder._ids_after(curs, ids[0], 2) == ids[1:]
            assert PricingRecorder._ids_after(curs, ids[1], 1) == ids[2:]
            with pytest.raises(AssertionError):
                PricingRecorder._ids_after(curs, 0, 2)  # three rows above 0: the table moved


def test_a_save_reports_each_recorded_event_with_its_position(new_database):
    """Recordings are made when read (a batch's 10,000 would cost ~3 us each up front); read,
    they are what the library reports: the event and its notification at its log position."""
    from commands.context import CommandContext
    from commands.engine import PricingEngine
    from domain.facts import Observation, ObservationBatch
    from domain.meta import Actor
    from domain.money import Money

    engine = PricingEngine(new_database(), pool_size=2)
    try:
        shop = UUID(int=99)
        meta = CommandContext(actor=Actor("auditor-test"), tenant_id="t").meta(shop)
        observations = [Observation(UUID(int=i + 1), f"rival-{i}", Money.price("9.50", "GBP"), datetime.now().astimezone(),
                                    "scraper") for i in range(3)]
        batch = ObservationBatch.record(shop, "GBP", observations, meta)
        recordings = engine.core.save(batch)
        stored = engine.core.recorder.select_events(batch.id)
        assert len(recordings) == 4 and [r.domain_event.originator_version for r in recordings] == [1, 2, 3, 4]
        positions = [r.notification.id for r in recordings]
        assert positions == sorted(positions) and len(set(positions)) == 4
        assert [r.notification.state for r in recordings] == [s.state for s in stored]
        assert recordings[1:3] == [recordings[1], recordings[2]]
        assert engine.core.recorder.select_notifications(positions[0], 4)[2].id == positions[2]
    finally:
        engine.close()


def test_a_refused_small_save_writes_nothing_and_leaves_its_connection_usable(new_database):
    """The few-event save is one pipeline with a single Sync (side rows, then record_events()):
    when the server refuses a statement it skips the rest and rolls back the implicit transaction,
    side rows included, and the pooled connection serves the next save."""
    from eventsourcing.persistence import IntegrityError, StoredEvent

    from commands.engine import PricingEngine
    from commands.persistence import IdempotencyRecord, IndexRow

    url = new_database()
    engine = PricingEngine(url, pool_size=1)  # one connection: the next save gets the same one
    try:
        recorder, now = engine.core.recorder, datetime.now().astimezone()
        first = StoredEvent(UUID(int=7), 1, "t:T", b"{}")
        index = [IndexRow(None, "tester", now, now)]
        recorder.insert_events([first], index=index)
        record = IdempotencyRecord("scope", "key-1", "hash", True, {"ok": True})
        with pytest.raises(IntegrityError):  # version 1 is taken
            recorder.insert_events([first], index=index, idempotency=record)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM pricing_events").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM command_log").fetchone()[0] == 0
        second = StoredEvent(UUID(int=7), 2, "t:T", b"{}")
        assert len(recorder.insert_events([second], index=index, idempotency=record)) == 1
        assert recorder.find_command("scope", "key-1")[1] is True
    finally:
        engine.close()


def test_a_save_refused_at_a_side_row_leaves_no_statement_half_prepared(new_database):
    """psycopg prepares a statement on its sixth run (prepare_threshold 5). In a pipeline whose
    earlier statement failed, the server skips that run's Parse, but psycopg then counts the
    statement as prepared unless it watches the result: the next save on the connection failed
    with 'prepared statement "_pg3_N" does not exist'. Statements of a save are prepared from
    their first run, where psycopg does watch the result."""
    from eventsourcing.persistence import IntegrityError, StoredEvent

    from commands.engine import PricingEngine
    from commands.persistence import IdempotencyRecord, IndexRow

    engine = PricingEngine(new_database(), pool_size=1)
    pool = engine.core.recorder.datastore.pool
    pool.resize(1, 1)
    held = pool.getconn()  # the pool opened two: with one held, every save gets the other
    try:
        recorder, now = engine.core.recorder, datetime.now().astimezone()
        index = [IndexRow(None, "tester", now, now)]

        def save(version: int, key: str):
            record = IdempotencyRecord("scope", key, "hash", False, {"ok": True})
            return recorder.insert_events([StoredEvent(UUID(int=7), version, "t:T", b"{}")], index=index,
                                          idempotency=record)

        for version in range(1, 6):  # record_events() runs five times: the sixth run prepares it
            save(version, f"key-{version}")
        with pytest.raises(IntegrityError):  # key-1 is taken: the server skips the sixth run
            save(6, "key-1")
        assert len(save(6, "key-6")) == 1
        assert len(save(7, "key-7")) == 1
    finally:
        pool.putconn(held)
        engine.close()
