"""The automated repricing policy as a faust-streaming worker (`etsypro reprice --kafka`): the same
per-batch logic as the in-process policy (RepricingPolicy.act_on, streams/repricing.py), fed from
the repricing topic the relay fills when started with `--repricing-topic` (streams/relay.py,
wire.repricing_topic) instead of the log.

Order. Kafka orders records per partition only, while the policy needs each listing's rule
assignments, its rule's revisions and its observations in log order. All of those belong to the
listing's shop (rules, listings and observation batches are per shop), and the repricing topic is
keyed by shop: per shop, its records are in log order within one partition. A relay restart
republishes from its recorded position, so a partition reads as runs of increasing positions that
may step back; the policy's index (streams.repricing_listings: each listing's latest trigger and
assignment, forward only) makes a republished cause either found done or superseded.

Completeness. An evaluation sees the listing's competitor prices up to its trigger: from the
projected view up to where the projector is, and from the batch beyond that. For one partition's
run of records in a batch, every observation of its shops from the run's first position on (up
to any of the run's triggers) is in the run, and the earlier ones were in earlier records, so in
the view once the projector passed them. Hence `complete_below` = the greatest, over the batch's
partitions, of (first position of the run - 1): the worker waits for the projector to get there
(and warns every 10 s while it does). The competitor_prices view is kept by the log-following
projector (`etsypro serve` or `etsypro project`): one must run, as for the in-process policy.
A batch that ends inside an observation batch is completed from the event store, as a page of
the log is: one observation batch is grouped per listing as a whole.

Delivery. Per batch of records: one transaction for the index and the counters, after the price
changes (each reserved per cause in its own transaction) committed; the records are acknowledged
to Kafka only after that commit. A crash re-delivers the batch: its causes are found done. A
listing too busy to change (Conflict) or a database outage retries the batch with back-off; any
other error parks the causes that fail (projections/parking.py) in the transaction of the
counters, and the rest of the batch goes on; parked causes are retried every minute. SIGTERM does not
wait for the batch in hand (it may be waiting for the projector): it stays unacknowledged and
comes again. The counters go to
streams.policy_positions under the app id (log_position: the greatest position seen), apart from
the in-process policy's row ('repricing'); both share the index.

Run the in-process policy (`etsypro serve`, `etsypro reprice`) or this worker, not both: both
are exactly-once per cause, so running both is harmless, but every evaluation is done twice.
Workers of one app id share the topic's partitions (so its shops) as one consumer group.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from typing import Sequence

import faust
import psycopg
from eventsourcing.persistence import OperationalError as StoreUnavailable
from mode.supervisors import CrashingSupervisor

from domain.errors import Conflict
from commands.rules import RepriceResult, Rules
from projections import parking
from streams import wire
from streams.repricing import EVENT_TOPICS, EXPERIMENT_CHECK_SECONDS, LogEvent, RepricingPolicy
from streams.sink import retry_batch
from streams.workers import WorkerConfig, new_app, record_of, run_app

log = logging.getLogger(__name__)

DEFAULT_APP_ID = "etsypro-repricing"
RETRIED = (Conflict, psycopg.OperationalError, StoreUnavailable)  # what retrying the batch can fix


class KafkaRepricing:
    """Acts on batches of the repricing topic's records. Plain psycopg and the policy, no faust:
    the worker calls act_retrying() from a thread."""

    def __init__(self, policy: RepricingPolicy, name: str = DEFAULT_APP_ID):
        self.policy = policy
        self.name = name  # the policy's row in streams.policy_positions
        # One batch at a time, even if a cancelled agent's thread is still finishing one (faust
        # restarts agents on a rebalance).
        self._busy = threading.Lock()
        self._row_exists = False

    def act(self, records: Sequence[wire.Record]) -> list[RepriceResult]:
        """Act on the records' events; the index and the counters commit once the changes did.
        A batch that fails for a reason retrying cannot fix is acted on again with the failing
        causes parked (parking.py), in the transaction of the counters."""
        with self._busy:
            events, undecodable = self._decoded(records)
            if not events and not undecodable:
                return []
            self.policy.retry_parked_when_due(self.name)
            try:
                return self._act(records, events, undecodable, isolating=False)
            except Exception as error:  # noqa: BLE001
                if parking.is_transient(error, RETRIED):
                    raise
                log.warning("repricing worker %s: a batch failed (%s); acting on it again, parking the causes"
                            " that fail", self.name, parking.describe(error))
                return self._act(records, events, undecodable, isolating=True)

    def _act(self, records: Sequence[wire.Record], events: list[LogEvent], undecodable: list[parking.Failure],
             isolating: bool) -> list[RepriceResult]:
        conn = self.policy.connection()
        with conn.transaction(), conn.cursor() as cur:
            events = _merged(events, self.policy.rest_of_batches(cur, _run_ends(records, events)))
            results = self.policy.act_on(cur, events, complete_below(records), self.name, isolating)
            parking.park(cur, self.name, undecodable)
            self._count(cur, events, undecodable, results)
        self._counted(events, undecodable)
        return results

    def retry_parked(self) -> tuple[int, int]:
        """Act again on the causes this worker parked; returns (resolved now, still parked)."""
        with self._busy:
            return self.policy.retry_parked(self.name)

    def act_retrying(self, records: Sequence[wire.Record], stop: threading.Event, max_backoff: float = 5.0
                     ) -> list[RepriceResult]:
        """act(), retried while the database is unreachable or a listing is too busy: the batch
        must not be skipped. Ends (InterruptedError) once `stop` is set."""
        self.policy.interrupt_on(stop)

        def shown(error: str) -> None:
            self.policy.stats.last_error = error

        return retry_batch(lambda: self.act(records), RETRIED, f"repricing worker {self.name}", self.policy.close,
                           stop, max_backoff, on_error=shown)

    def _decoded(self, records: Sequence[wire.Record]) -> tuple[list[LogEvent], list[parking.Failure]]:
        """(position, domain event) of the policy's records, in log order, once each (the relay
        may have published an event twice); and a Failure for each that does not decode."""
        stored = {}
        for r in records:
            if r.event_topic in EVENT_TOPICS and r.position not in stored:
                stored[r.position] = r.stored_event()
        return parking.decode_each(sorted(stored.items(), key=lambda ps: ps[0]), self.policy.log.decode)

    def _count(self, cur, events: list[LogEvent], undecodable: list[parking.Failure],
               results: list[RepriceResult]) -> None:
        if not self._row_exists:
            cur.execute("INSERT INTO streams.policy_positions (policy) VALUES (%s) ON CONFLICT DO NOTHING", [self.name])
        self.policy.record_progress(cur, self.name, _last(events, undecodable), len(events), results)

    def _counted(self, events: list[LogEvent], undecodable: list[parking.Failure]) -> None:
        """After the commit: the counters' row exists, and the batch shows in the stats."""
        self._row_exists = True
        stats = self.policy.stats
        stats.pages += 1
        stats.events_read += len(events)
        stats.position = max(stats.position, _last(events, undecodable))


def _last(events: list[LogEvent], undecodable: list[parking.Failure]) -> int:
    return max([pe[0] for pe in events[-1:]] + [f.position for f in undecodable])


def _runs(records: Sequence[wire.Record]) -> dict[tuple[str, int], list[wire.Record]]:
    """Each partition's records in the batch, in offset order."""
    runs: dict[tuple[str, int], list[wire.Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.offset):
        runs[r.topic, r.partition].append(r)
    return runs


def complete_below(records: Sequence[wire.Record]) -> int:
    """The position after which the batch holds every observation its triggers need (see the
    module's docstring): the greatest of (first position - 1) over its partitions' runs."""
    return max(run[0].position - 1 for run in _runs(records).values())


def _run_ends(records: Sequence[wire.Record], events: list[LogEvent]) -> list[object]:
    """The event of each partition run's last record: where an observation batch may be cut."""
    by_position = dict(events)
    return [by_position[run[-1].position] for run in _runs(records).values() if run[-1].position in by_position]


def _merged(events: list[LogEvent], more: list[LogEvent]) -> list[LogEvent]:
    if not more:
        return events
    return sorted({**dict(events), **dict(more)}.items(), key=lambda pe: pe[0])


def create_app(config: WorkerConfig, rules: Rules) -> faust.App:
    """The worker's faust app; `rules` makes the changes."""
    # stream_wait_empty off: on SIGTERM faust would otherwise wait for the batch in hand before
    # stopping the agent, for ever if that batch waits for a projector that is not running. The
    # batch is left unacknowledged instead (its causes are found done when it comes again).
    app, topic = new_app(config, wire.repricing_topic(config.prefix), stream_wait_empty=False)
    repricing = KafkaRepricing(RepricingPolicy(rules, config.conninfo), name=config.app_id)

    # CrashingSupervisor: an error that retrying cannot fix stops the worker instead of
    # restarting the agent past the batch it could not act on.
    @app.agent(topic, name="reprice", concurrency=1, supervisor_strategy=CrashingSupervisor)
    async def reprice(stream):
        stop = threading.Event()
        try:
            async for events in stream.noack_take(config.batch, within=config.within):
                records = [record_of(e.message) for e in events]
                # In a thread: the event loop keeps heartbeating and fetching meanwhile.
                await asyncio.to_thread(repricing.act_retrying, records, stop)
                for event in events:  # committed: Kafka may move on
                    await stream.ack(event)
        finally:
            stop.set()  # the agent is stopped: a wait for the projector in the thread ends too

    # Experiment periods are time, not events: tended on a timer, as the log-following policy does in its loop.
    @app.timer(EXPERIMENT_CHECK_SECONDS)
    async def tend_experiments():
        await asyncio.to_thread(repricing.policy.tend_experiments_when_due)

    return app


def run(config: WorkerConfig, rules: Rules, loglevel: str = "warning") -> None:
    """Run a worker until SIGINT/SIGTERM (never returns: faust's Worker exits the process)."""
    run_app(config, [wire.repricing_topic(config.prefix)], lambda: create_app(config, rules), loglevel)
