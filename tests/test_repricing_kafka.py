"""The repricing policy as a faust worker (streams/repricing_worker.py), on real PostgreSQL and,
where a broker is needed, a real Kafka-compatible one (Tansu).

- one batch of the repricing topic, without a broker: the records are decoded through their
  originator header, duplicates count once, observations beyond the projector come from the
  batch, an observation batch cut at the end is completed from the store, the worker waits for
  a projector behind the batch's runs, and a redelivered batch changes nothing — also when the
  listing's rule was revised or replaced after a crash that had left its changes made but the
  index not committed;
- the relay publishes the policy's events once more, keyed by shop, in log order per shop;
- end to end (`etsypro relay`, `etsypro reprice --kafka`, the projector in this process): an
  observation undercut by the rule leads to exactly one automated change caused by it; the relay
  republishing the whole log leads to none more; the worker killed with SIGKILL inside a batch's
  transaction mid-stream and restarted: every listing's automated changes name distinct causes,
  and every final price is the rule's result on the latest observations.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from uuid import UUID

import psycopg
import pytest

import codec
from api.routers.repricing import observations_from_view
from read.dry_run import ListingPage, dry_run, saved_rule
from read.side import ReadSide
from commands import models
from commands import rule_models as m
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands.rules import CHANGED, DUPLICATE, observation_cause, rule_cause
from conftest import listing_spec
from domain.listing import Listing
from domain.meta import Actor
from projections.observations import projected_up_to
from projections.projector import InBackground, Projector
from streams import wire
from streams.relay import Relay
from streams.repricing import EVENT_TOPICS, RepricingPolicy
from streams.repricing_worker import DEFAULT_APP_ID, KafkaRepricing, complete_below
from test_kafka_path import broker, etsypro, head, needs_broker, read_all, stop, wait_for  # noqa: F401


@dataclass
class RuledShop:
    shop_id: UUID
    listings: list[UUID]
    rule_id: UUID
    ctx: CommandContext
    spec: dict


def ruled_shop(engine: PricingEngine, tenant: str, listings: int = 3, **rule) -> RuledShop:
    """A shop whose listings (20.00, floor 10, ceiling 40) all follow one competitor-reactive rule."""
    ctx = CommandContext(actor=Actor("pytest"), tenant_id=tenant)
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name=f"Shop {tenant}", currency="GBP")).body["shop_id"])
    registered = engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate(
        {"listings": [listing_spec(i) for i in range(listings)]}))
    ids = [UUID(x["listing_id"]) for x in registered.body["listings"]]
    spec = {"name": "auto", "kind": "beat_lowest", "percent": "5", "max_age_minutes": None, **rule}
    rule_id = UUID(engine.rules.define_rule(ctx, shop, m.DefineRule(**spec)).body["rule_id"])
    engine.rules.assign_rule(ctx, shop, m.AssignRule(rule_id=rule_id, listing_ids=ids))
    return RuledShop(shop, ids, rule_id, ctx, spec)


def observe(engine: PricingEngine, shop: RuledShop, *observations: tuple[UUID, str, str]) -> UUID:
    """(listing, competitor, price) each, observed now; returns the batch id."""
    at = datetime.now(timezone.utc).isoformat()
    result = engine.listings.record_observations(shop.ctx, shop.shop_id, models.RecordObservations.model_validate({
        "observations": [{"listing_id": str(listing), "competitor": competitor, "price": price, "currency": "GBP",
                          "observed_at": at} for listing, competitor, price in observations]}))
    return UUID(result.body["batch_id"])


def revise(engine: PricingEngine, shop: RuledShop, **changes) -> None:
    shop.spec = {**shop.spec, **changes}
    engine.rules.revise_rule(shop.ctx, shop.shop_id, shop.rule_id, m.ReviseRule(**shop.spec))


def automated(engine: PricingEngine, listing: UUID) -> list:
    return [e for e in engine.core.events.get(listing)
            if isinstance(e, (Listing.PriceChanged, Listing.AutomatedChangeRefused)) and e.meta.source == "rule"]


def policy_records(engine: PricingEngine, after: int, shop: RuledShop, offset: int = 0) -> list[wire.Record]:
    """The shop's policy events after `after` as the relay puts them on the repricing topic."""
    records = []
    for n in engine.core.recorder.select_notifications(after + 1, 1_000_000):
        if n.topic in EVENT_TOPICS:
            records.append(wire.Record.of(wire.repricing_topic(), 0, offset + len(records), str(shop.shop_id).encode(),
                                          n.state, wire.headers_keyed_by_other(n)))
    return records


def counters(url: str, policy: str = DEFAULT_APP_ID) -> dict:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT log_position, events_seen, evaluations, changes FROM streams.policy_positions"
                           " WHERE policy = %s", [policy]).fetchone()
    return dict(zip(("log_position", "events_seen", "evaluations", "changes"), row or (0, 0, 0, 0)))


def projected(url: str) -> int:
    with psycopg.connect(url) as conn:
        return projected_up_to(conn.cursor())


# -- one batch, no broker ---------------------------------------------------------------------------
def test_a_batch_uses_observations_beyond_the_projector_and_completes_a_cut_observation_batch(new_database):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    shop = ruled_shop(engine, "k-batch", listings=2, kind="match_lowest", percent=None)
    a, b = shop.listings
    projector = Projector(url, codec.to_domain_event)
    worker = KafkaRepricing(RepricingPolicy(engine.rules, url, projector_timeout=0.5), name="unit")
    stop = threading.Event()
    try:
        observe(engine, shop, (a, "r1", "24.00"))
        projector.catch_up()
        earlier = policy_records(engine, 0, shop)  # the assignments, a's first observation
        worker.act_retrying(earlier, stop)
        projector.catch_up()
        projected = head(url)
        revise(engine, shop, name="match, again")  # a trigger of both listings, superseded below
        first = observe(engine, shop, (a, "r2", "22.00"), (a, "r1", "26.00"), (b, "r1", "30.00"))  # not projected
        records = policy_records(engine, projected, shop, offset=len(earlier))
        assert len(records) == 4 and records[1].stored_event().originator_id == first  # the header names it
        assert complete_below(records) == projected  # the run starts right after what the view holds

        # The batch ends inside the observation batch (b's observation is cut off), and holds a's
        # first observation twice (as after a relay restart).
        cut = [records[0], records[1], records[2], records[1]]
        results = {r.listing_id: r for r in worker.act_retrying(cut, stop)}
        assert (results[str(a)].outcome, results[str(a)].price) == (CHANGED, "22.00")  # r1 at 26.00, from the batch
        assert (results[str(b)].outcome, results[str(b)].price) == (CHANGED, "30.00")  # from the store
        assert results[str(a)].cause == observation_cause(first, 3)  # the listing's last in the batch
        assert results[str(b)].cause == observation_cause(first, 4)

        # The rest of the observation batch arrives in the next batch, then everything again
        # (a batch that starts there needs the view up to there: the projector catches up).
        projector.catch_up()
        again = worker.act_retrying(records[3:], stop) + worker.act_retrying(records, stop)
        assert {r.outcome for r in again} == {DUPLICATE}
        assert [[str(e.price.amount) for e in automated(engine, x)] for x in (a, b)] == [["24.00", "22.00"], ["30.00"]]
        assert counters(url, "unit")["changes"] == 3

        # A run whose earlier events the view does not hold yet: the worker waits for the projector.
        second = observe(engine, shop, (a, "r3", "21.00"))
        later = policy_records(engine, records[-1].position, shop, offset=records[-1].offset + 1)
        with pytest.raises(TimeoutError, match="competitor_prices"):
            worker.act(later)
        projector.catch_up()
        [result] = worker.act(later)
        assert (result.outcome, result.price, result.cause) == (CHANGED, "21.00", observation_cause(second, 2))
    finally:
        worker.policy.close()
        projector.close()
        engine.close()


@pytest.mark.parametrize("meanwhile", ["rule revised", "listing moved to another rule"])
def test_a_batch_acted_on_again_after_a_crash_makes_no_second_change_for_its_cause(new_database, monkeypatch,
                                                                                     meanwhile):
    """The crash falls between the batch's change and the commit of the policy's index; before the
    batch comes again, the listing's rule changes (revised, or another rule assigned). Its cause is
    found done whatever rule the listing has by then; the rule's change acts as its own cause."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    shop = ruled_shop(engine, f"k-crash-{meanwhile[:5]}", listings=1)
    [a] = shop.listings
    projector = Projector(url, codec.to_domain_event)
    worker = KafkaRepricing(RepricingPolicy(engine.rules, url), name="unit")
    try:
        batch = observe(engine, shop, (a, "r1", "20.00"))
        projector.catch_up()
        records = policy_records(engine, 0, shop)

        def crash(*_):
            raise RuntimeError("killed before the index committed")

        with monkeypatch.context() as patched:
            patched.setattr(worker.policy, "record_progress", crash)
            with pytest.raises(RuntimeError):
                worker.act(records)
        assert [str(e.price.amount) for e in automated(engine, a)] == ["19.00"]  # beat 20.00 by 5%

        if meanwhile == "rule revised":
            revise(engine, shop, percent="10")
            then_cause = rule_cause(shop.rule_id, 2)
        else:
            other = engine.rules.define_rule(shop.ctx, shop.shop_id, m.DefineRule(**{**shop.spec, "percent": "10"}))
            engine.rules.assign_rule(shop.ctx, shop.shop_id, m.AssignRule(rule_id=UUID(other.body["rule_id"]), listing_ids=[a]))
            then_cause = None  # the assignment's own cause, named below
        projector.catch_up()
        assert [r.outcome for r in worker.act(records)] == [DUPLICATE]  # redelivered: found done
        [result] = worker.act(policy_records(engine, records[-1].position, shop, offset=len(records)))
        then_cause = then_cause or result.cause
        assert (result.outcome, result.price, result.cause) == (CHANGED, "18.00", then_cause)
        assert [e.meta.causation_id for e in automated(engine, a)] == [observation_cause(batch, 2), then_cause]
    finally:
        worker.policy.close()
        projector.close()
        engine.close()


def test_complete_below_is_the_latest_start_of_a_partition_run():
    def record(partition: int, offset: int, position: int) -> wire.Record:
        return wire.Record("t", partition, offset, b"k", b"", {wire.POSITION: str(position).encode()})

    # Partition 1 reads 40, 41, then 30 again (a relay restart republished): its run starts at 40.
    batch = [record(0, 7, 12), record(1, 3, 41), record(0, 8, 50), record(1, 2, 40), record(1, 4, 30)]
    assert complete_below(batch) == 39


# -- the relay ------------------------------------------------------------------------------------
@needs_broker
def test_the_relay_publishes_the_policys_events_keyed_by_shop_in_log_order(new_database, broker):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    shops = [ruled_shop(engine, f"k-relay-{i}") for i in range(3)]
    rng = random.Random(5)
    for round_ in range(12):
        shop = rng.choice(shops)
        observe(engine, shop, *[(rng.choice(shop.listings), f"rival-{rng.randrange(3)}", f"{rng.randrange(15, 35)}.00")
                                for _ in range(rng.randrange(1, 5))])
        if round_ % 4 == 0:
            revise(engine, shop, percent=str(3 + round_))
            for rule_id in (None, shop.rule_id):  # unassigned, then assigned again
                engine.rules.assign_rule(shop.ctx, shop.shop_id, m.AssignRule(rule_id=rule_id, listing_ids=shop.listings[:1]))
    try:
        asyncio.run(Relay(url, broker.bootstrap_servers, page_size=7,
                          repricing_events=EVENT_TOPICS).catch_up())
        records = asyncio.run(read_all(broker.bootstrap_servers, [wire.repricing_topic()]))
        with psycopg.connect(url) as conn:
            expected = dict(conn.execute(
                "SELECT e.notification_id, i.shop_id FROM pricing_events e JOIN event_index i USING (notification_id)"
                " WHERE e.topic = ANY(%s) ORDER BY 1", [list(EVENT_TOPICS)]).fetchall())
            stored = {n: (o, v) for n, o, v in conn.execute(
                "SELECT notification_id, originator_id, originator_version FROM pricing_events")}
    finally:
        engine.close()

    positions = [wire.Record.of(r.topic, r.partition, r.offset, r.key, r.value, r.headers).position for r in records]
    assert sorted(positions) == sorted(expected), "each of the policy's events once, and nothing else"
    kinds = {wire.Record.of(r.topic, 0, 0, r.key, r.value, r.headers).event_topic.rsplit(".", 1)[-1] for r in records}
    assert kinds == {"CompetitorPriceObserved", "Revised", "RuleAssigned", "RuleUnassigned"}
    partition_of, by_partition = {}, defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        record = wire.Record.of(r.topic, r.partition, r.offset, r.key, r.value, r.headers)
        assert UUID(record.key.decode()) == expected[record.position]  # keyed by the event's shop
        stored_event = record.stored_event()
        assert (stored_event.originator_id, stored_event.originator_version) == stored[record.position]
        assert partition_of.setdefault(record.key, r.partition) == r.partition  # one shop, one partition
        by_partition[r.partition].append(record.position)
    assert len(partition_of) == len(shops)
    assert all(p == sorted(p) for p in by_partition.values()), "each shop's events in log order"


# -- end to end -----------------------------------------------------------------------------------
IN_A_BATCH = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'etsypro-repricing'
      AND state = 'idle in transaction' AND backend_xid IS NOT NULL  -- its index updated, its changes being made"""


def kill_inside_a_batch(url: str, proc, log, until: float) -> bool:
    """SIGKILL the worker while a batch's transaction is open (its changes commit one by one
    meanwhile, the index and the counters at the end). False if not seen before `until`."""
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < until:
            assert proc.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
            if conn.execute(IN_A_BATCH).fetchone():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.001)
    return False


def acted_on_latest_observations(url: str, listings: list[UUID]) -> bool:
    """Whether the policy's index shows every listing acted on up to its latest observation (it
    commits after the batch's changes did), once the view holds every observation."""
    if projected(url) < head(url):
        return False
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM streams.repricing_listings l JOIN (SELECT listing_id, max(log_position) AS latest"
            "  FROM analytics.competitor_observations GROUP BY 1) o USING (listing_id)"
            " WHERE l.listing_id = ANY(%s) AND l.last_trigger = o.latest", [listings]).fetchone()[0] == len(listings)


class Stream:
    """Observation batches of random listings and competitors, written on a thread until told to
    stop (and at least `least` of them), each listing observed at least once."""

    def __init__(self, engine: PricingEngine, shops: list[RuledShop], least: int):
        self.engine, self.shops, self.least = engine, shops, least
        self.written = 0
        self.enough = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        rng = random.Random(17)
        try:
            for shop in self.shops:
                observe(self.engine, shop, *[(x, "rival-0", "30.00") for x in shop.listings])
            while self.written < self.least or not self.enough.is_set():
                shop = rng.choice(self.shops)
                observe(self.engine, shop, *[(rng.choice(shop.listings), f"rival-{rng.randrange(4)}",
                                              f"{rng.randrange(1200, 3800) / 100:.2f}")
                                             for _ in range(rng.randrange(1, 6))])
                self.written += 1
                time.sleep(0.01)
        except BaseException as e:  # noqa: BLE001 - shown by join()
            self.error = e

    def join(self) -> None:
        self.enough.set()
        self._thread.join(120)
        assert self.error is None, self.error

    def alive(self) -> bool:
        return self._thread.is_alive()


@needs_broker
def test_the_worker_acts_once_per_cause_through_republishing_and_a_kill(new_database, broker, tmp_path):
    url = new_database()
    engine = PricingEngine(url, pool_size=4)
    shops = [ruled_shop(engine, "k-e2e-a"), ruled_shop(engine, "k-e2e-b", kind="offset_from_average",
                                                         direction="below")]
    listings = [x for s in shops for x in s.listings]
    projector = InBackground.projector(Projector(url, codec.to_domain_event)).start()
    relay = etsypro(url, broker, tmp_path, "relay.log", "relay", "--repricing-topic")
    workers = [etsypro(url, broker, tmp_path, "worker-1.log", "reprice", "--kafka", "--batch", "50")]
    try:
        # An observation undercut by the rule: one automated change, caused by that observation.
        started = time.monotonic()
        shop, a = shops[0], shops[0].listings[0]
        batch = observe(engine, shop, (a, "etsy:rival", "18.00"))
        wait_for(lambda: automated(engine, a), 60, "the automated change", workers[0], tmp_path / "worker-1.log")
        print(f"\nfirst automated change {time.monotonic() - started:.1f}s after the worker's spawn")
        [change] = automated(engine, a)
        assert (str(change.price.amount), change.meta.causation_id) == ("17.10", observation_cause(batch, 2))

        # The relay publishes everything again: nothing changes a second time.
        seen = counters(url)["events_seen"]
        stop(relay, tmp_path / "relay.log")
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE streams.relay_positions SET log_position = 0")
            republished = conn.execute("SELECT count(*) FROM pricing_events WHERE topic = ANY(%s)",
                                       [list(EVENT_TOPICS)]).fetchone()[0]
        relay = etsypro(url, broker, tmp_path, "relay.log", "relay", "--repricing-topic")
        wait_for(lambda: counters(url)["events_seen"] >= seen + republished, 60, "the worker to read them again",
                 workers[0], tmp_path / "worker-1.log")
        assert [len(automated(engine, x)) for x in listings] == [1] + [0] * (len(listings) - 1)

        # A stream of observations; the worker killed inside a batch while it flows, restarted after.
        changes_before = counters(url)["changes"]
        stream = Stream(engine, shops, least=60).start()
        wait_for(lambda: stream.written >= 30 and counters(url)["changes"] >= changes_before + 5, 60,
                 "the worker to act on the stream", workers[0], tmp_path / "worker-1.log")
        killed = kill_inside_a_batch(url, workers[0], tmp_path / "worker-1.log", time.monotonic() + 30)
        assert killed and stream.alive(), "the worker was not killed inside a batch, mid-stream"
        time.sleep(0.5)  # more observations while it is down
        stream.join()
        acted_before_restart = counters(url)
        restarted = time.monotonic()
        workers.append(etsypro(url, broker, tmp_path, "worker-2.log", "reprice", "--kafka", "--batch", "50"))
        wait_for(lambda: acted_on_latest_observations(url, listings), 90, "the restarted worker to catch up",
                 workers[1], tmp_path / "worker-2.log")
        print(f"{stream.written} observation batches; the restarted worker caught up"
              f" {time.monotonic() - restarted:.1f}s after its spawn; counters before it {acted_before_restart},"
              f" after {counters(url)}")
        made = {x: [e.meta.causation_id for e in automated(engine, x)] for x in listings}
        print(f"automated changes per listing: {[len(causes) for causes in made.values()]}")
        for x, causes in made.items():
            assert len(causes) == len(set(causes)), f"listing {x} acted on a cause twice: {causes}"
        reads = ReadSide(engine.core.conninfo)
        for s in shops:  # each final price is the rule's result on the latest observations
            tried = saved_rule(reads.aggregates, s.ctx, s.shop_id, s.rule_id, None)
            judged = dry_run(reads.aggregates, s.ctx, s.shop_id, tried, ListingPage(s.listings),
                             observations_from_view(reads.pool))
            for x in judged["listings"]:
                assert (x["outcome"], x["price_after"]) == ("unchanged", x["price"]), x
        reads.close()

        # With the projector stopped, the worker waits for it; SIGTERM still ends it at once.
        projector.stop()
        observe(engine, shop, (a, "etsy:rival", "11.00"))
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for(lambda: conn.execute(IN_A_BATCH).fetchone(), 30, "the worker to wait for the projector",
                     workers[1], tmp_path / "worker-2.log")
        stop(workers[1], tmp_path / "worker-2.log")
        assert automated(engine, a)[-1].meta.causation_id == made[a][-1]  # left for when the projector is back
    finally:
        for proc in [relay, *workers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        projector.stop()
        engine.close()
