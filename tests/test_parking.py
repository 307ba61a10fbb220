"""One poisoned event must not stop everyone (projections/parking.py), on real PostgreSQL:

- which events of a batch fail is drawn by hypothesis: the projector applies every other event
  exactly once, parks exactly the failing ones (in the transaction that moves its position past
  them), and once the cause is fixed a retry applies them, again exactly once;
- an infrastructure failure (a lost connection) parks nothing and moves nothing: it is retried;
- end to end over HTTP, with the projector and the repricing policy running as `etsypro serve`
  runs them: one tenant's poisoned facts (a business time of year 9999 at -14:00, saved past the
  API's validation, and one stored as year 10000 in UTC, which no follower can decode) leave
  another tenant's listing repriced as fast as usual; the lag view names the parked events to
  their tenant only, and `etsypro projections status` names them to operators;
- the Kafka paths (a projection sink and the repricing worker, fed the records a broker would
  deliver) park the same way, in the transaction of their offsets and counters.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import httpx
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codec
from api.app import create_app
from api.server import running
from commands import models
from commands import rule_models as m
from commands.context import CommandContext, Decision
from commands.engine import PricingEngine
from conftest import Accounts, listing_spec
from domain.facts import Observation, ObservationBatch
from domain.listing import Listing
from domain.meta import Actor
from domain.money import Money
from domain.shop import Shop
from projections import lag, parking, tracking
from projections.base import LIVE, of_types
from projections.projector import InBackground, Projector
from projections.registry import ALL
from streams import wire
from bench.broker import find_tansu_binary
from streams.relay import Relay
from streams.repricing import EVENT_TOPICS, RepricingPolicy
from streams.repricing_worker import KafkaRepricing
from streams.sink import Sink
from test_kafka_path import broker, read_all  # noqa: F401 - the broker fixture

Observed = ObservationBatch.CompetitorPriceObserved
ABSURD_TIME = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-14)))  # year 10000 in UTC
UNDECODABLE_TIME = b"10000-01-01T13:00:00+00:00"  # the same instant as stored text: no Python datetime holds it


# -- isolate(): pure ------------------------------------------------------------------------------
@given(n=st.integers(0, 80), data=st.data())
def test_isolate_passes_every_healthy_item_once_in_order_and_returns_exactly_the_failing(n, data):
    failing = data.draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=n))
    known_to_fail = data.draw(st.booleans()) and bool(failing)
    applied, attempts = [], [0]

    def attempt(chunk):  # all or nothing, as a savepoint is
        attempts[0] += 1
        bad = [i for i in chunk if i in failing]
        if bad:
            raise ValueError(f"poisoned {bad[0]}")
        applied.extend(chunk)

    failed = parking.isolate(list(range(n)), attempt, known_to_fail=known_to_fail)
    assert [i for i, _ in failed] == sorted(failing)
    assert all(str(error) == f"poisoned {i}" for i, error in failed)
    assert applied == [i for i in range(n) if i not in failing]
    assert attempts[0] <= 1 + 2 * len(failing) * max(1, n.bit_length())  # bisection, not one by one


@pytest.mark.parametrize("error, parked", [
    (psycopg.OperationalError("server closed the connection"), False),
    (psycopg.InterfaceError("connection already closed"), False),
    (TimeoutError("the projector did not catch up"), False),
    (ConnectionResetError(), False),
    (psycopg.errors.UndefinedTable('relation "analytics.sales" does not exist'), False),  # the schema, not the event
    (psycopg.errors.DataError("timestamp too large (after year 10K)"), True),
    (psycopg.errors.CheckViolation("new row violates check constraint"), True),
    (ValueError("year 10000 is out of range"), True),
    (OverflowError("date value out of range"), True),
    (KeyError("shop_id"), True),
])
def test_an_infrastructure_failure_is_retried_whole_and_an_event_failure_is_parked(error, parked):
    def attempt(chunk):
        raise error

    if parked:
        assert [i for i, _ in parking.isolate([1, 2], attempt)] == [1, 2]
    else:
        with pytest.raises(type(error)):
            parking.isolate([1, 2], attempt)


# -- the projector, with a probe projection whose failures hypothesis chooses ---------------------
class Probe:
    """Writes one row per Shop.Opened / Listing.Registered event; the database refuses the rows of
    the `poisoned` positions (a CHECK constraint), as it refuses a value it cannot hold."""

    name = "parking_probe"
    tables = ("parking_probe",)
    event_types = (Shop.Opened, Listing.Registered)

    def __init__(self, tag: str, poisoned: set[int]):
        self.tag, self.poisoned = tag, poisoned

    def apply(self, cur, events, tables=LIVE) -> None:
        mine = of_types(events, self.event_types)
        if mine:
            cur.execute("INSERT INTO analytics.parking_probe (tag, position, healthy)"
                        " SELECT %s, * FROM unnest(%s::int8[], %s::bool[])",
                        [self.tag, [p for p, _ in mine], [p not in self.poisoned for p, _ in mine]])


@pytest.fixture(scope="module")
def probe_log(new_database):
    """A database whose log holds a shop and 40 listings registered in 8 commands (41 probe events)."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx = CommandContext(actor=Actor("pytest"), tenant_id="t-probe")
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Probe", currency="GBP")).body["shop_id"])
    for first in range(0, 40, 5):
        engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate(
            {"listings": [listing_spec(i) for i in range(first, first + 5)]}))
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE analytics.parking_probe (tag text, position bigint, healthy bool CHECK (healthy))")
        topics = [get_topic(t) for t in Probe.event_types]
        positions = [r[0] for r in conn.execute("SELECT notification_id FROM pricing_events WHERE topic = ANY(%s)"
                                                " ORDER BY 1", [topics])]
    yield url, engine, positions
    engine.close()


def probe_state(url: str, tag: str, follower: str) -> tuple[list[int], list[int], int]:
    with psycopg.connect(url) as conn:
        rows = [r[0] for r in conn.execute("SELECT position FROM analytics.parking_probe WHERE tag = %s ORDER BY 1",
                                           [tag])]
        parked = [r[0] for r in conn.execute("SELECT log_position FROM streams.parked_events WHERE follower = %s"
                                             " ORDER BY 1", [follower])]
        position = conn.execute("SELECT log_position FROM analytics.projection_tracking WHERE projection = %s",
                                [follower]).fetchone()[0]
    return rows, parked, position


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), batch_size=st.integers(1, 50))
def test_the_projector_parks_exactly_the_failing_events_and_applies_the_rest_once(probe_log, data, batch_size):
    url, engine, positions = probe_log
    poisoned = data.draw(st.sets(st.sampled_from(positions), max_size=len(positions)))
    tag = uuid.uuid4().hex[:8]
    probe = Probe(tag, set(poisoned))
    projector = Projector(url, codec.to_domain_event, [probe], batch_size=batch_size,
                          tracking_prefix=f"{tag}:")
    follower = f"{tag}:{Probe.name}"
    try:
        projector.catch_up()
        rows, parked, position = probe_state(url, tag, follower)
        assert rows == [p for p in positions if p not in poisoned]  # each healthy event once, none lost
        assert parked == sorted(poisoned)
        assert position >= positions[-1]  # the poisoned events held nothing back

        assert projector.retry_parked() == (0, len(poisoned))  # still poisoned: still parked, nothing doubled
        assert probe_state(url, tag, follower)[:2] == (rows, parked)

        probe.poisoned.clear()  # the cause is fixed
        assert projector.retry_parked() == (len(poisoned), 0)
        rows, parked, _ = probe_state(url, tag, follower)
        assert rows == positions and parked == []
    finally:
        projector.close()


def test_a_lost_connection_parks_nothing_and_moves_nothing(probe_log):
    url, engine, positions = probe_log

    class Unreachable(Probe):
        def apply(self, cur, events, tables=LIVE) -> None:
            if any(p == positions[3] for p, _ in events):
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            super().apply(cur, events, tables)

    tag = uuid.uuid4().hex[:8]
    projector = Projector(url, codec.to_domain_event, [Unreachable(tag, set())], batch_size=100,
                          tracking_prefix=f"{tag}:")
    try:
        with pytest.raises(psycopg.OperationalError):
            projector.catch_up()
        assert probe_state(url, tag, f"{tag}:{Probe.name}") == ([], [], 0)  # the whole batch waits for a retry
    finally:
        projector.close()


# -- poisoned facts --------------------------------------------------------------------------------
def record_unchecked(engine: PricingEngine, ctx: CommandContext, shop: UUID, *observations: Observation) -> UUID:
    """Observations saved through the engine's write path past the API's validation (which now
    bounds business times): as facts accepted before that stay in the log."""
    def decide() -> Decision:
        batch = ObservationBatch.record(shop, "GBP", list(observations), ctx.meta(shop))
        return Decision([batch], {"batch_id": str(batch.id)}, created=True)

    return UUID(engine.core.execute(ctx, "record_observations", {}, decide).body["batch_id"])


@contextmanager
def stored_beyond_python(engine: PricingEngine):
    """While inside, `engine` stores observations of competitors named 'poison…' with their
    business time written as year 10000 in UTC: an event no follower can decode."""
    mapper, original = engine.core.mapper, engine.core.mapper.to_stored_event

    def poisoned(event) -> StoredEvent:
        stored = original(event)
        if type(event) is not Observed or not event.competitor.startswith("poison"):
            return stored
        state = stored.state.replace(event.meta.occurred_at.isoformat().encode(), UNDECODABLE_TIME)
        assert state != stored.state
        return StoredEvent(stored.originator_id, stored.originator_version, stored.topic, state)

    mapper.to_stored_event = poisoned
    try:
        yield
    finally:
        del mapper.to_stored_event


def poison(engine: PricingEngine, ctx: CommandContext, shop: UUID, listing: UUID) -> tuple[UUID, UUID]:
    """The two poisoned facts: (the absurd business time's batch, the undecodable one's batch)."""
    absurd = record_unchecked(engine, ctx, shop, Observation(listing, "rival", Money(Decimal("15.00"), "GBP"),
                                                             ABSURD_TIME, "scraper"))
    with stored_beyond_python(engine):
        undecodable = record_unchecked(engine, ctx, shop, Observation(listing, "poison", Money(Decimal("14.00"), "GBP"),
                                                                      datetime.now(timezone.utc), "scraper"))
    return absurd, undecodable


def position_of(url: str, batch: UUID) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT max(notification_id) FROM pricing_events WHERE originator_id = %s",
                            [batch]).fetchone()[0]


# -- end to end over HTTP ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(new_database):
    """The API with the projector and the repricing policy running in-process, as `etsypro serve`."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    app = create_app(engine)
    app.state.projector = InBackground.projector(Projector(url, codec.to_domain_event, pause=0.05))
    app.state.repricing = InBackground(RepricingPolicy(engine.rules, url, pause=0.05), "repricing")
    with running(app) as base_url:
        yield url, engine, base_url, Accounts(engine)
    engine.close()


def open_ruled_shop(client: httpx.Client) -> tuple[str, list[str]]:
    """A shop with two listings at 20.00 (floor 10) under 'match the lowest'."""
    shop = client.post("/shops", json={"name": "Shop", "currency": "GBP"}).json()["shop_id"]
    listings = [x["listing_id"] for x in client.post(f"/shops/{shop}/listings", json={
        "listings": [listing_spec(0), listing_spec(1)]}).json()["listings"]]
    rule = client.post(f"/shops/{shop}/rules", json={"name": "match", "kind": "match_lowest"}).json()["rule_id"]
    assert client.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule, "listing_ids": listings}
                       ).status_code == 200
    return shop, listings


def repriced_within(client: httpx.Client, shop: str, listing: str, price: str, timeout: float = 10.0) -> float:
    """Observe a competitor at `price` over HTTP; seconds until the price board shows the automated change."""
    started = time.monotonic()
    answer = client.post(f"/shops/{shop}/observations", json={"observations": [
        {"listing_id": listing, "competitor": "rival", "price": price, "currency": "GBP",
         "observed_at": datetime.now(timezone.utc).isoformat()}]})
    assert answer.status_code == 201, answer.text
    while True:
        rows = client.get(f"/shops/{shop}/analytics/prices").json()["items"]
        row = next(r for r in rows if r["listing_id"] == listing)
        if row["price"] == price and row["price_source"] == "rule":
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"not repriced in {timeout}s: {row}"
        time.sleep(0.005)


def test_a_poisoned_tenant_holds_back_no_one_and_sees_its_parked_events(live, monkeypatch, capsys):
    url, engine, base_url, accounts = live
    victim, poisoner = accounts.new("seller"), accounts.new("seller")
    with httpx.Client(base_url=base_url, headers=victim, timeout=30) as a, \
            httpx.Client(base_url=base_url, headers=poisoner, timeout=30) as b:
        shop_a, (a1, a2) = open_ruled_shop(a)
        shop_b, (b1, b2) = open_ruled_shop(b)
        usual = repriced_within(a, shop_a, a1, "18.00")  # the latency before any poison

        ctx_b = CommandContext(actor=Actor("pytest"), tenant_id=poisoner.tenant_id)
        absurd, undecodable = poison(engine, ctx_b, UUID(shop_b), UUID(b1))
        after = [repriced_within(a, shop_a, a2, "17.00"), repriced_within(a, shop_a, a1, "16.50")]
        assert max(after) < max(1.0, 5 * usual), (usual, after)  # the other tenant goes on as usual
        with capsys.disabled():
            print(f"\nobservation -> automated change: {usual * 1000:.0f} ms before the poison,"
                  f" {', '.join(f'{x * 1000:.0f}' for x in after)} ms after")
        repriced_within(b, shop_b, b2, "19.00")  # so does the poisoned shop's other listing

        poisoned_at = position_of(url, undecodable)
        deadline = time.monotonic() + 10
        while True:  # the lag view names the parked event to its tenant: follower, position, type, error
            lag_b = b.get("/analytics/lag").json()
            named = [p for p in lag_b["parked"] if p["log_position"] == poisoned_at]
            if {p["follower"] for p in named} >= {"competitor_prices", "repricing"}:
                break
            assert time.monotonic() < deadline, lag_b
            time.sleep(0.02)
        for p in named:
            assert (p["aggregate_id"], p["type"], p["shop_id"]) == (str(undecodable), get_topic(Observed), shop_b)
            assert "Invalid isoformat string: '10000-01-01T13:00:00+00:00'" in p["error"] and p["held_back"]
            assert "tenant_id" not in p
        assert {x["projection"]: x["parked"] for x in lag_b["projections"]}["competitor_prices"] >= 1
        assert all(x["events_behind"] >= 0 for x in lag_b["projections"] + lag_b["policies"])
        assert "head" not in json.dumps(lag_b["projections"])  # whole-log figures are not a tenant's

        lag_a = a.get("/analytics/lag").json()
        assert lag_a["parked"] == [] and all(x["parked"] == 0 for x in lag_a["projections"] + lag_a["policies"])
        # Within the poisoner's tenant, a colleague who sees only another shop sees none of them either.
        other_shop = b.post("/shops", json={"name": "Other", "currency": "GBP"}).json()["shop_id"]
        colleague = accounts.new("analyst", poisoner.tenant_id, shops=[other_shop])
        with httpx.Client(base_url=base_url, headers=colleague, timeout=30) as c:
            assert c.get("/analytics/lag").json()["parked"] == []

    # Operators: the whole log, every tenant's parked events.
    from api.cli import main

    monkeypatch.setenv("ETSYPRO_DATABASE_URL", url)
    capsys.readouterr()
    assert main(["projections", "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    mine = [p for p in report["parked"] if p["log_position"] == poisoned_at]
    assert {p["tenant_id"] for p in mine} == {poisoner.tenant_id}
    assert all(x["log_position"] <= x["head"] for x in report["projections"] + report["policies"])
    assert main(["projections", "status"]) == 0
    assert f"parked by competitor_prices: event {poisoned_at}" in capsys.readouterr().out
    assert main(["projections", "retry"]) == 0  # still undecodable: still parked, counted as a new attempt
    assert "still parked" in capsys.readouterr().out
    with psycopg.connect(url) as conn:
        attempts = conn.execute("SELECT min(attempts) FROM streams.parked_events WHERE log_position = %s",
                                [poisoned_at]).fetchone()[0]
    assert attempts >= 2


# -- the Kafka paths, fed the records a broker would deliver -------------------------------------
def records_after(engine: PricingEngine, after: int, topics, key_of=lambda n: str(n.originator_id).encode(),
                  topic: str = "t") -> list[wire.Record]:
    return [wire.Record.of(topic, 0, i, key_of(n), n.state, wire.headers_keyed_by_other(n))
            for i, n in enumerate(n for n in engine.core.recorder.select_notifications(after + 1, 1_000_000)
                                  if n.topic in topics)]


def ruled_shop(engine: PricingEngine, tenant: str) -> tuple[CommandContext, UUID, UUID]:
    ctx = CommandContext(actor=Actor("pytest"), tenant_id=tenant)
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name=tenant, currency="GBP")).body["shop_id"])
    [listing] = [UUID(x["listing_id"]) for x in engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate(
        {"listings": [listing_spec(0)]})).body["listings"]]
    rule = UUID(engine.rules.define_rule(ctx, shop, m.DefineRule(name="match", kind="match_lowest")).body["rule_id"])
    engine.rules.assign_rule(ctx, shop, m.AssignRule(rule_id=rule, listing_ids=[listing]))
    return ctx, shop, listing


def observe(engine: PricingEngine, ctx: CommandContext, shop: UUID, listing: UUID, price: str) -> None:
    engine.listings.record_observations(ctx, shop, models.RecordObservations.model_validate({"observations": [
        {"listing_id": str(listing), "competitor": "rival", "price": price, "currency": "GBP",
         "observed_at": datetime.now(timezone.utc).isoformat()}]}))


def parked_rows(url: str) -> set[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        return set(conn.execute("SELECT follower, log_position FROM streams.parked_events").fetchall())


def test_the_kafka_sink_and_repricing_worker_park_a_poisoned_record_and_apply_the_rest(new_database):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx_a, shop_a, listing_a = ruled_shop(engine, "k-victim")
    ctx_b, shop_b, listing_b = ruled_shop(engine, "k-poisoner")
    projector = Projector(url, codec.to_domain_event)
    projector.catch_up()
    start = position_of_head(url)
    _, undecodable = poison(engine, ctx_b, shop_b, listing_b)
    observe(engine, ctx_a, shop_a, listing_a, "17.00")
    poisoned_at = position_of(url, undecodable)
    projector.catch_up()  # the live views' watermark the policy needs (it parks the poison too)

    sink = Sink(url, codec.to_domain_event, name="k-sink")
    projected = [t for p in ALL for t in p.event_types]
    records = records_after(engine, start, {get_topic(t) for t in projected})
    applied = sink.apply_retrying(records + records[:1])  # a duplicate as after a redelivery
    assert applied.offsets == {("t", 0): len(records) - 1} and not applied.rewind  # moved past the poison
    assert ("k-sink/competitor_prices", poisoned_at) in parked_rows(url)
    assert sink.retry_parked() == (0, 1)

    worker = KafkaRepricing(RepricingPolicy(engine.rules, url, projector_timeout=5), name="k-repricing")
    # From the start: the rule assignments come first (on one partition, as for one shop).
    by_shop = records_after(engine, 0, EVENT_TOPICS, key_of=lambda n: b"shop", topic=wire.repricing_topic())
    results = worker.act(by_shop)
    assert [(r.outcome, r.price) for r in results if r.listing_id == str(listing_a)] == [("changed", "17.00")]
    assert ("k-repricing", poisoned_at) in parked_rows(url)
    assert worker.retry_parked() == (0, 1)
    with psycopg.connect(url) as conn:
        counted = conn.execute("SELECT log_position FROM streams.policy_positions WHERE policy = 'k-repricing'"
                               ).fetchone()[0]
    assert counted >= poisoned_at  # the counters moved past it in the same transaction
    sink.close()
    worker.policy.close()
    projector.close()
    engine.close()


def position_of_head(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]


@pytest.mark.skipif(find_tansu_binary() is None, reason="tansu broker binary not found")
def test_the_relay_parks_an_event_the_broker_refuses_and_publishes_it_once_it_is_taken(new_database, broker):
    from aiokafka.errors import MessageSizeTooLargeError

    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ruled_shop(engine, "r-tenant")
    refused = {position_of_head(url) - 1}  # one event the broker will not take (too large, say)

    class Refusing:
        def __init__(self, producer):
            self._producer = producer

        def __getattr__(self, name):
            return getattr(self._producer, name)

        async def send(self, topic, value, key=None, headers=None):
            if int(dict(headers)[wire.POSITION]) in refused:
                raise MessageSizeTooLargeError("The message is 2000000 bytes when serialized")
            return await self._producer.send(topic, value, key=key, headers=headers)

    class RefusingRelay(Relay):
        def _producer(self):
            return Refusing(super()._producer())

    relay = RefusingRelay(url, broker.bootstrap_servers, name="p", page_size=3)
    poisoned_at = next(iter(refused))
    with psycopg.connect(url) as conn:
        ids = [i for (i,) in conn.execute("SELECT notification_id FROM pricing_events ORDER BY 1")]
        topics = sorted({wire.kafka_topic(t) for (t,) in conn.execute("SELECT DISTINCT topic FROM pricing_events")})

    def published() -> set[int]:
        return {int(dict(r.headers)[wire.POSITION]) for r in asyncio.run(read_all(broker.bootstrap_servers, topics))}

    assert asyncio.run(relay.catch_up()) == ids[-1]  # not stuck at the refused event
    assert published() == set(ids) - refused
    assert parked_rows(url) == {("relay:p", poisoned_at)}
    with psycopg.connect(url) as conn:
        report = lag.operator_report(conn, [])
    [row] = report["parked"]
    assert "MessageSizeTooLargeError" in row["error"] and row["held_back"].startswith("not published to Kafka")

    refused.clear()  # the broker takes it now (its limit was raised)
    asyncio.run(relay.catch_up())  # a new session retries the parked events first
    assert published() == set(ids) and parked_rows(url) == set()
    engine.close()


def test_parked_rows_commit_with_the_position_or_not_at_all(probe_log, monkeypatch):
    url, engine, positions = probe_log
    tag = uuid.uuid4().hex[:8]
    projector = Projector(url, codec.to_domain_event, [Probe(tag, {positions[5]})], batch_size=100,
                          tracking_prefix=f"{tag}:")
    follower = f"{tag}:{Probe.name}"
    real_advance = tracking.advance

    def crash(cur, moves):  # the server goes away as the position is written
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(tracking, "advance", crash)
    try:
        with pytest.raises(psycopg.OperationalError):
            projector.catch_up()
        assert probe_state(url, tag, follower) == ([], [], 0)  # neither the rows, the parked row nor the position
        monkeypatch.setattr(tracking, "advance", real_advance)
        projector.close()
        projector.catch_up()
        rows, parked, position = probe_state(url, tag, follower)
        assert (len(rows), parked, position >= positions[-1]) == (len(positions) - 1, [positions[5]], True)
    finally:
        projector.close()


def test_the_policy_parks_a_cause_the_engine_fails_on_and_acts_on_it_once_after_the_fix(new_database, monkeypatch):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx_a, shop_a, listing_a = ruled_shop(engine, "p-healthy")
    ctx_b, shop_b, listing_b = ruled_shop(engine, "p-failing")
    projector = Projector(url, codec.to_domain_event)
    policy = RepricingPolicy(engine.rules, url, projector_timeout=5)
    real, broken = engine.rules.reprice_listing, {listing_b}

    def reprice_listing(ctx, shop_id, listing_id, *args, **kwargs):
        if listing_id in broken:
            raise ArithmeticError("a bug this listing's data reaches")
        return real(ctx, shop_id, listing_id, *args, **kwargs)

    monkeypatch.setattr(engine.rules, "reprice_listing", reprice_listing)
    try:
        observe(engine, ctx_b, shop_b, listing_b, "18.00")
        observe(engine, ctx_a, shop_a, listing_a, "17.00")
        projector.catch_up()
        policy.catch_up()
        assert policy.position() == position_of_head(url)  # not stuck on b
        assert price_of(engine, listing_a) == Decimal("17.00")
        [(follower, cause_at)] = parked_rows(url)
        assert follower == "repricing"
        with psycopg.connect(url) as conn:
            error = conn.execute("SELECT error FROM streams.parked_events").fetchone()[0]
        assert error == f"listing {listing_b}: ArithmeticError: a bug this listing's data reaches"

        assert policy.retry_parked() == (0, 1)  # still failing: still parked
        broken.clear()  # the bug is fixed
        assert policy.retry_parked() == (1, 0)
        assert price_of(engine, listing_b) == Decimal("18.00")
        policy.rewind(0)  # a replay of the whole log: the cause is found done, no second change
        policy.catch_up()
        changes = [e for e in engine.core.events.get(listing_b) if isinstance(e, Listing.PriceChanged)]
        assert len(changes) == 1 and parked_rows(url) == set()
    finally:
        policy.close()
        projector.close()
        engine.close()


def price_of(engine: PricingEngine, listing: UUID) -> Decimal:
    return engine.core.repository.get(listing).price.amount


def test_a_rebuild_keeps_the_parked_events_of_what_it_replays(new_database):
    from projections.rebuild import rebuild
    from projections.registry import by_name

    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx, shop, listing = ruled_shop(engine, "r-rebuild")
    _, undecodable = poison(engine, ctx, shop, listing)
    poisoned_at = position_of(url, undecodable)
    projector = Projector(url, codec.to_domain_event)
    try:
        projector.catch_up()
        assert parked_rows(url) == {("competitor_prices", poisoned_at)}
        observe(engine, ctx, shop, listing, "17.00")
        rebuild(url, codec.to_domain_event, [by_name("competitor_prices")], batch_size=3)
        assert parked_rows(url) == {("competitor_prices", poisoned_at)}  # the copies lack it too: still parked
        with psycopg.connect(url) as conn:
            facts = conn.execute("SELECT count(*) FROM analytics.competitor_observations").fetchone()[0]
        assert facts == 2  # the absurd-time one and the last one; not the undecodable one
    finally:
        projector.close()
        engine.close()
