"""The faust-streaming worker: the same projection handlers as the in-process projector, fed from
the Kafka topics the relay fills (streams/relay.py), for scaling projection work out over
machines. Start one or more with `etsypro worker`; they share the topics' partitions as one
consumer group (the app id), which is also the sink's name in streams.sink_offsets.

One agent takes batches of records from all its topics and hands each batch to the sink
(streams/sink.py), which applies them and their offsets in one PostgreSQL transaction. Faust's
own acknowledgement (and so the offset it commits to Kafka) comes only after that commit, so the
group's committed offsets never run ahead of what the views hold; the offsets in PostgreSQL are
the truth, and records below them are skipped when redelivered. Should the consumer ever pass
over records anyway (the group's offsets ahead of the views), the sink refuses the gap when the
partition's next record arrives, and the worker seeks the partition back to its own offset.

Per-aggregate order is all the projections need (see streams/sink.py): one agent instance per
worker (concurrency 1) keeps each partition's records in order.

Workers maintain the same live tables as the in-process projector. Run one or the other for
them (`ETSYPRO_PROJECTOR=off` on the servers when workers run): both are idempotent per event,
so running both is harmless, but it does the work twice.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import faust
from faust.types import TP
from mode.supervisors import CrashingSupervisor

from projections.base import Projection
from projections.log import Decoder
from projections.registry import ALL
from streams import wire
from streams.faust_config import faust_settings
from streams.sink import Sink

log = logging.getLogger(__name__)

DEFAULT_APP_ID = "etsypro-projections"


@dataclass(frozen=True)
class WorkerConfig:
    conninfo: str
    bootstrap_servers: str
    app_id: str = DEFAULT_APP_ID       # the consumer group, and the sink's name in streams.sink_offsets
    batch: int = 2000                  # records per transaction at most
    within: float = 0.1                # seconds to wait for a batch to fill
    prefix: str = wire.DEFAULT_PREFIX
    partitions: int = wire.DEFAULT_PARTITIONS  # used when the worker creates the topics first
    datadir: str | None = None         # faust's data directory (no tables are kept: a temp dir will do)


def topics_for(projections: Sequence[Projection], prefix: str = wire.DEFAULT_PREFIX) -> list[str]:
    return wire.kafka_topics_for((t for p in projections for t in p.event_types), prefix)


def new_app(config: WorkerConfig, *topics: str, **settings) -> tuple[faust.App, faust.TopicT]:
    """A faust app of the config's id (its consumer group) and its topics of raw records."""
    datadir = Path(config.datadir) if config.datadir else Path(tempfile.mkdtemp(prefix="etsypro-faust-"))
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(config.app_id, datadir=str(datadir), **faust_settings(config.bootstrap_servers, **settings))
    return app, app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def create_app(config: WorkerConfig, decode: Decoder, projections: Sequence[Projection] = ALL) -> faust.App:
    app, topic = new_app(config, *topics_for(projections, config.prefix))
    sink = Sink(config.conninfo, decode, name=config.app_id, projections=projections)
    rewinds = _Rewinds(app)

    # CrashingSupervisor: an error that retrying cannot fix and the sink could not pin on events
    # (which it parks) stops the worker instead of restarting the agent past the batch.
    @app.agent(topic, name="project", concurrency=1, supervisor_strategy=CrashingSupervisor)
    async def project(stream):
        async for events in stream.noack_take(config.batch, within=config.within):
            records = [record_of(e.message) for e in events]
            # In a thread: the event loop keeps heartbeating and fetching during the transaction.
            applied = await asyncio.to_thread(sink.apply_retrying, records)
            for event in events:  # committed (or skipped as applied before): Kafka may move on
                await stream.ack(event)
            if applied.rewind:
                await rewinds.seek(applied.rewind)

    return app


def record_of(message) -> wire.Record:
    return wire.Record.of(message.topic, message.partition, message.offset, message.key, message.value,
                          message.headers or ())


class _Rewinds:
    """Seeks partitions back to the first record the sink has not applied. Records fetched before
    a seek still arrive after it, each showing the same gap: one seek per target and second."""

    def __init__(self, app: faust.App):
        self.app = app
        self._last: dict[tuple[str, int], tuple[int, float]] = {}

    async def seek(self, rewind: dict[tuple[str, int], int]) -> None:
        now = time.monotonic()
        for (topic, partition), offset in rewind.items():
            last = self._last.get((topic, partition))
            if last and last[0] == offset and now - last[1] < 1.0:
                continue
            log.warning("kafka sink %s: the consumer passed over %s[%d] from offset %d, not applied yet;"
                        " seeking back to it", self.app.conf.id, topic, partition, offset)
            await self.app.consumer.seek(TP(topic, partition), offset)
            self._last[topic, partition] = (offset, now)


def run(config: WorkerConfig, decode: Decoder, projections: Sequence[Projection] = ALL,
        loglevel: str = "warning") -> None:
    """Run a worker until SIGINT/SIGTERM (never returns: faust's Worker exits the process)."""
    run_app(config, topics_for(projections, config.prefix), lambda: create_app(config, decode, projections), loglevel)


def run_app(config: WorkerConfig, topics: Sequence[str], make_app: Callable[[], faust.App], loglevel: str) -> None:
    """Run the app make_app() returns until SIGINT/SIGTERM, its topics created first."""
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)  # faust's Worker runs on this loop
    # Create the topics before subscribing: Tansu (and Kafka with auto-create on) would otherwise
    # create them on first sight with its default partition count.
    loop.run_until_complete(wire.ensure_topics(config.bootstrap_servers, topics, config.partitions))
    for name in ("faust", "mode", "aiokafka"):  # their chatter at the asked level; ours stays at the root's
        logging.getLogger(name).setLevel(loglevel.upper())
    # override_logging=False: the process's logging stays as `etsypro` configured it (ETSYPRO_LOG_FORMAT).
    faust.Worker(make_app(), loglevel=loglevel, loop=loop, override_logging=False).execute_from_commandline()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: faust spends most of a record's cost in the event loop (tasks and
    callbacks per message), which uvloop makes markedly cheaper."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
