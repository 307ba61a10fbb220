"""The relay: publishes every event of the global log to Kafka, in log order, and records how far
it got only after the broker acknowledged.

    events (PostgreSQL, commit order) --page--> producer --acks--> record position (PostgreSQL)

A restart resumes after the recorded position, so an event is never skipped; the events of a
page that was published but not yet recorded are published again. Those duplicates are harmless:
every sink skips offsets it applied and every projection is idempotent per event (see
projections/base.py). Each event goes to its aggregate type's topic keyed by the aggregate id
(streams/wire.py), so one aggregate's events stay in version order within one partition; the
producer keeps one request in flight per broker, so retries never reorder them.

With `repricing_events` (`etsypro relay --repricing-topic`), the events the repricing policy
reads go to one more topic (wire.repricing_topic), keyed by the shop they belong to, so each
shop's are in log order within one partition (what the policy's faust worker,
streams/repricing_worker.py, relies on). The relay does not decode events: the
shop of each comes from the audit index (event_index, written in the event's transaction), one
query per page that has such events.

One relay per name publishes at a time: it holds a PostgreSQL advisory lock on the connection
that records its position, and a second relay of the same name stands by until it is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import psycopg
from eventsourcing.persistence import Notification

from projections import parking
from projections.log import PAGE_SQL
from projections.projector import CHANNEL
from streams import wire

log = logging.getLogger(__name__)

DEFAULT_PAGE = 5000
APPLICATION_NAME = "etsypro-relay"


@dataclass
class RelayStats:
    position: int = 0          # last log position the broker acknowledged (and we recorded)
    published: int = 0         # events published by this process (duplicates after a restart included)
    pages: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.monotonic)


class Relay:
    def __init__(self, conninfo: str, bootstrap_servers: str, *, name: str = "default",
                 page_size: int = DEFAULT_PAGE, prefix: str = wire.DEFAULT_PREFIX,
                 partitions: int = wire.DEFAULT_PARTITIONS, linger_ms: int = 5,
                 repricing_events: frozenset[str] = frozenset()):
        self.conninfo = conninfo
        self.bootstrap_servers = bootstrap_servers
        self.name = name
        self.page_size = page_size
        self.prefix = prefix
        self.partitions = partitions
        self.linger_ms = linger_ms
        # Event topics also published to the repricing topic (REPRICING_EVENT_TOPICS for the
        # repricing worker; none by default: only `reprice --kafka` reads it).
        self.repricing_events = repricing_events
        self.repricing_topic = wire.repricing_topic(prefix)
        self.stats = RelayStats()
        self._created: set[str] = set()  # Kafka topics known to exist
        self._tracked: set[str] = set()  # topics whose metadata the session's producer keeps (_track)

    # -- running ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, idle_timeout: float = 1.0) -> None:
        """Publish the log and follow it until `stop` is set, surviving database and broker outages."""
        from aiokafka.errors import KafkaError

        backoff = 0.1
        while not stop.is_set():
            try:
                await self._session(stop, idle_timeout, follow=True)
                backoff = 0.1
            except (psycopg.Error, KafkaError, OSError) as e:
                self.stats.last_error = f"{type(e).__name__}: {e}"
                log.warning("relay %s: %s; retrying in %.1fs", self.name, self.stats.last_error, backoff)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    async def catch_up(self) -> int:
        """Publish up to the head of the log, then return the recorded position."""
        await self._session(asyncio.Event(), 0.0, follow=False)
        return self.stats.position

    async def _session(self, stop: asyncio.Event, idle_timeout: float, follow: bool) -> None:
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                         application_name=APPLICATION_NAME) as conn, \
                await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                      application_name=f"{APPLICATION_NAME}-listen") as listener:
            if not await self._lock(conn, stop):
                return
            self.stats.position = await self._recorded_position(conn)
            # LISTEN before reading: a commit during a page leaves its notification queued.
            await listener.execute(f"LISTEN {CHANNEL}")
            producer, self._tracked = self._producer(), set()
            try:
                await producer.start()  # inside: a start that fails must still close what it opened
                retries = parking.RetrySchedule()
                while not stop.is_set():
                    if retries.due():
                        await self.retry_parked(conn, producer)
                    page = await self._read_page(conn)
                    if page:
                        parked = await self._publish(conn, producer, page)
                        await self._record(conn, page, parked)
                    if len(page) < self.page_size:
                        if not follow:
                            return
                        await _wait_for_notify(listener, stop, idle_timeout)
            finally:
                await producer.stop()

    # -- one page -----------------------------------------------------------------------
    async def _read_page(self, conn: psycopg.AsyncConnection) -> list[Notification]:
        """The next page of the log after the recorded position (the projector's query)."""
        cur = await conn.execute(PAGE_SQL, [self.stats.position, self.page_size], binary=True)
        return [Notification(originator_id, version, topic, bytes(state), position)
                for position, originator_id, version, topic, state in await cur.fetchall()]

    async def _publish(self, conn: psycopg.AsyncConnection, producer, page: Sequence[Notification]
                       ) -> list[parking.Failure]:
        """Send the page and wait until the broker acknowledged every event of it. An event the
        broker refuses for what it is (too large, say) fails alike on every retry: the page is
        sent again one record at a time, and those events are returned, to be parked."""
        records = [(wire.kafka_topic(n.topic, self.prefix), n.state, wire.key(n), wire.headers(n), n) for n in page]
        records += [(self.repricing_topic, n.state, shop, wire.headers_keyed_by_other(n), n)
                    for n, shop in await self._repricing_records(conn, page)]
        topics = {topic for topic, *_ in records}
        await self._ensure_topics(topics)
        await self._track(producer, topics)
        try:
            pending = [await producer.send(topic, value, key=key, headers=headers)
                       for topic, value, key, headers, _ in records]
            await asyncio.gather(*pending)
            return []
        except _unpublishable() as e:
            log.warning("relay %s: the broker refused a record (%s); sending the page one record at a time",
                        self.name, parking.describe(e))
        return await self._publish_one_by_one(producer, records)

    async def _publish_one_by_one(self, producer, records: list) -> list[parking.Failure]:
        """Every record that the broker takes (again: duplicates are harmless), and a Failure for each event of
        a record it refuses."""
        failures: dict[int, parking.Failure] = {}
        for topic, value, key, headers, n in records:
            try:
                await (await producer.send(topic, value, key=key, headers=headers))
            except _unpublishable() as e:
                failures[n.id] = parking.Failure(n.id, n.originator_id, n.originator_version, n.topic,
                                                 parking.describe(e))
        for f in failures.values():
            log.error("relay %s: parked event %d (%s): %s", self.name, f.position, f.topic, f.error)
        return list(failures.values())

    async def retry_parked(self, conn: psycopg.AsyncConnection, producer) -> tuple[int, int]:
        """Publish the events this relay parked again; returns (published now, still parked). Each
        reaches its topics out of log order: sinks apply facts once whatever the order and the
        price board by aggregate version; the repricing worker finds an older cause superseded."""
        follower = self.parked_as
        cur = await conn.execute("SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state"
                                 " FROM streams.parked_events p JOIN pricing_events e ON e.notification_id = p.log_position"
                                 " WHERE p.follower = %s ORDER BY 1", [follower], binary=True)
        page = [Notification(id=i, originator_id=o, originator_version=v, topic=t, state=bytes(s))
                for i, o, v, t, s in await cur.fetchall()]
        if not page:
            return 0, 0
        failures = await self._publish(conn, producer, page)
        async with conn.transaction():
            statement, params = parking.park_statement(follower, failures)
            if failures:
                await conn.execute(statement, params)
            await conn.execute(parking.UNPARK_UNLESS_PARKED_AGAIN, [follower, [n.id for n in page]])
        log.warning("relay %s: retried parked events: %d published, %d still parked", self.name,
                    len(page) - len(failures), len(failures))
        return len(page) - len(failures), len(failures)

    @property
    def parked_as(self) -> str:
        return f"relay:{self.name}"

    async def _repricing_records(self, conn: psycopg.AsyncConnection,
                                 page: Sequence[Notification]) -> list[tuple[Notification, bytes]]:
        """(event, shop id as the key) of the page's events for the repricing topic, in log order.
        An event without a shop (none of these types should be) keeps its aggregate id as key."""
        wanted = [n for n in page if n.topic in self.repricing_events]
        if not wanted:
            return []
        # Joined on unnest, as PricingRecorder.reserved looks up many keys (see why there).
        cur = await conn.execute("SELECT i.notification_id, i.shop_id FROM unnest(%s::int8[]) AS wanted(id)"
                                 " JOIN event_index i ON i.notification_id = wanted.id WHERE i.shop_id IS NOT NULL",
                                 [[n.id for n in wanted]])
        shops = dict(await cur.fetchall())
        return [(n, str(shops[n.id]).encode() if n.id in shops else wire.key(n)) for n in wanted]

    async def _ensure_topics(self, names: set[str]) -> None:
        new = names - self._created
        if new:
            await wire.ensure_topics(self.bootstrap_servers, new, self.partitions)
            self._created |= new

    async def _track(self, producer, topics: set[str]) -> None:
        """Have this session's producer keep these topics' metadata (and wait until it has it).

        aiokafka's client asks for every topic's metadata until it tracks one, and from then on
        for the tracked ones only, replacing what it knew. A topic learnt from an every-topic
        answer and sent to without being tracked was dropped once a send to a new topic started
        the tracking: its queued batches then waited for a leader for ever, and the page's acks
        never came. That was the relay's stall with --repricing-topic: the repricing topic is
        created after the producer starts, beside topics a faust worker had already created."""
        if not topics <= self._tracked:
            self._tracked |= topics
            await producer.client.set_topics(self._tracked)

    async def _record(self, conn: psycopg.AsyncConnection, page: Sequence[Notification],
                      parked: Sequence[parking.Failure] = ()) -> None:
        """The new position, and the events parked on the way, in one transaction."""
        last = page[-1].id
        async with conn.transaction():
            if parked:
                await conn.execute(*parking.park_statement(self.parked_as, parked))
            await conn.execute(
                "UPDATE streams.relay_positions SET log_position = %s, events_published = events_published + %s,"
                " updated_at = now() WHERE relay = %s", [last, len(page) - len(parked), self.name])
        self.stats.position = last
        self.stats.published += len(page)
        self.stats.pages += 1

    # -- helpers ------------------------------------------------------------------------
    def _producer(self):
        from aiokafka import AIOKafkaProducer

        # acks="all": recorded positions are durable on the broker. No idempotent producer:
        # Tansu refuses it (see streams/faust_config.py), and sinks tolerate duplicates anyway.
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all", enable_idempotence=False,
                                linger_ms=self.linger_ms, max_batch_size=256 * 1024,
                                client_id=f"{APPLICATION_NAME}-{self.name}")

    async def _lock(self, conn: psycopg.AsyncConnection, stop: asyncio.Event) -> bool:
        """Take this relay name's advisory lock for the session; False if stopped while waiting."""
        await conn.execute("INSERT INTO streams.relay_positions (relay) VALUES (%s) ON CONFLICT DO NOTHING",
                           [self.name])
        waiting = False
        while not stop.is_set():
            cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                     [f"{APPLICATION_NAME}:{self.name}"])
            if (await cur.fetchone())[0]:
                return True
            if not waiting:
                log.info("relay %s: another relay of this name is publishing; standing by", self.name)
                waiting = True
            await _sleep_unless(stop, 1.0)
        return False

    async def _recorded_position(self, conn: psycopg.AsyncConnection) -> int:
        cur = await conn.execute("SELECT log_position FROM streams.relay_positions WHERE relay = %s", [self.name])
        return (await cur.fetchone())[0]


async def _wait_for_notify(listener: psycopg.AsyncConnection, stop: asyncio.Event, timeout: float) -> None:
    async for _ in listener.notifies(timeout=timeout, stop_after=1):
        pass
    async for _ in listener.notifies(timeout=0.0):  # drain the rest: one page reads them all
        pass


def _unpublishable() -> tuple[type[BaseException], ...]:
    """What the broker answers about a record itself, not about its own state: retrying the page cannot help."""
    from aiokafka import errors

    return (errors.MessageSizeTooLargeError, errors.RecordTooLargeError, errors.RecordListTooLargeError,
            errors.CorruptRecordException, errors.UnsupportedForMessageFormatError)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
