"""The competitor price feed worker: consumes a Kafka topic of third-party price records and hands
each batch to an intake (commands/competitor_feed.py FeedIntake, given by the caller: nothing
here issues commands), committing the consumer group's offsets only after the intake returned.

At-least-once: a crash between the intake and the commit delivers the batch again, and the
intake records each observation once whatever delivers it (identities reserved with the facts).
A record the intake refuses (unknown shop or listing, a bad price...) is logged with its topic,
partition and offset and passed over: a bad record never stops the feed. Database or broker
outages are retried whole, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg import OperationalError as ConnectionLost

from streams import wire

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "feeds.competitor-prices"
DEFAULT_GROUP = "etsypro-competitor-feed"
# Tansu joins a group in half a session timeout (docs/streams.md): short timeouts from the start.
GROUP_TIMINGS = dict(session_timeout_ms=6000, heartbeat_interval_ms=1000, rebalance_timeout_ms=10000)


@dataclass(frozen=True)
class FeedConfig:
    bootstrap_servers: str
    topic: str = DEFAULT_TOPIC
    group: str = DEFAULT_GROUP
    batch: int = 5000  # records per intake call at most
    partitions: int = wire.DEFAULT_PARTITIONS  # when the worker creates the topic
    retry_pause_s: float = 1.0


class FeedWorker:
    """`run()` until `stop()`; `intake(records) -> report` runs in a thread (the database)."""

    def __init__(self, config: FeedConfig, intake: Callable[[list], Any], record_of: Callable[[Any], Any]):
        self.config, self.intake, self.record_of = config, intake, record_of
        self._stop = asyncio.Event()
        self.reports: list = []  # every batch's report, for whoever watches (tests, the CLI's summary)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, idle_stop_s: float | None = None) -> None:
        """Consume until stopped (or, with idle_stop_s, until nothing arrived for that long)."""
        await wire.ensure_topics(self.config.bootstrap_servers, [self.config.topic], self.config.partitions)
        consumer = AIOKafkaConsumer(self.config.topic, bootstrap_servers=self.config.bootstrap_servers,
                                    group_id=self.config.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **GROUP_TIMINGS)
        await consumer.start()
        quiet_since = time.monotonic()
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.config.batch)
                messages = [m for batch in batches.values() for m in batch]
                if not messages:
                    if idle_stop_s is not None and time.monotonic() - quiet_since > idle_stop_s:
                        return
                    continue
                await self._take(messages)
                await consumer.commit()  # only now: a crash before it delivers the batch again
                quiet_since = time.monotonic()
        finally:
            await consumer.stop()

    async def _take(self, messages: list) -> None:
        records = [self.record_of(m) for m in messages]
        while True:
            try:
                report = await asyncio.to_thread(self.intake, records)
                break
            except (OperationalError, InterfaceError, ConnectionLost, OSError, KafkaError) as e:  # an outage: again, later
                log.warning("competitor feed: %s; retrying the batch of %d records", e, len(records))
                await asyncio.sleep(self.config.retry_pause_s)
        for where, why in report.rejected:
            log.warning("competitor feed: record %s refused: %s", where, why)
        self.reports.append(report)
