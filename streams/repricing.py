"""The automated repricing policy: re-evaluates listings when something that decides their price
happens, issuing automated price changes through `Rules.reprice_listing` (commands/rules.py),
each caused by the event that triggered it.

It runs in one of two ways, with the same per-batch logic (`RepricingPolicy.act_on`):
- in-process (`etsypro serve`, `etsypro reprice`): follows the global event log page by page;
- as a faust worker (`etsypro reprice --kafka`, streams/repricing_worker.py): takes batches of
  the repricing topic, where the relay publishes these events again keyed by shop.
Run one or the other: both are exactly-once per cause, so running both is harmless but does the
work twice.

What triggers an evaluation of a listing (its *cause*):
- a competitor observation of it (CompetitorPriceObserved): cause = that observation event; a
  batch's observations are grouped per listing, the cause being the listing's last observation;
- a revision of its rule (PricingRule.Revised): every listing using the rule; cause = the version;
- the assignment of a rule to it (Listing.RuleAssigned): cause = the assignment event.
Within a page of the log (a batch) only the latest trigger of each listing is acted on: an
evaluation uses everything known up to its trigger, so the older triggers add nothing.

A listing under an optimise-profit rule follows its latest recommendation model run (read from
analytics.model_runs by `streams.optimise.latest_runs`), not competitor prices: observations do
not trigger it (its latest assignment or revision in the batch still does), and a new model run
does, through `streams.optimise.act_on_new_runs` (cause `model_run:<run id>`).

Exactly one change per cause, also across crashes, restarts and replays:
- `reprice_listing` reserves (listing, cause) in the transaction of the change it
  makes (or the refusal it records); a redelivered cause finds it and does nothing;
- the policy records its log position (and its small index, streams.repricing_listings) in one
  transaction per page, after the page's changes committed; a crash re-reads the page;
- the index remembers each listing's latest trigger (forward only), so a replay from an earlier
  position acts only on causes that are still each listing's latest; an older cause — whose
  rule version or assignment may have changed since — is superseded, not evaluated again; and
  should the index not know it yet (a crash between a change and the index's commit), the
  reservation still finds the cause done, whatever rule the listing has by then.

The competitor prices an evaluation sees are the projected facts (projections/observations.py)
up to the trigger's position in the log: the view where the projector got that far, and the
batch's own observation events beyond it. That takes a batch that holds every observation of its
listings after some position (`complete_below`: for a page of the log, where the page starts),
and a view that reached it: when the projector is behind, the policy waits for it (and says so
in `stats.waiting_for`, and in a warning every 10 s). The log-following projector keeps that
view's watermark (`etsypro serve` or `etsypro project`): the policy needs one running, whichever
way the policy itself runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Sequence
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent

import codec
from codec.time_loaders import reading_adapters
from domain.errors import Conflict
from commands.rules import (CHANGED, RepriceResult, Rules, assignment_cause, model_run_cause, observation_cause,
                            rule_cause)
from commands.experiments import Experiments
from domain.facts import ObservationBatch, observation_ref
from domain.listing import Listing
from domain.pricing_rule import PricingRule
from domain.rules import CompetitorPrice, RecommendationRun
from projections import parking
from projections.connection import LazyConnection
from projections.base import Positioned as LogEvent  # (log position, domain event)
from projections.log import EventLog, Page
from projections.observations import PositionedObservation, Wanted, latest, newest_per_competitor, projected_up_to
from projections.projector import follow_log, keep_following
from streams import wire
from streams.optimise import RunSource, latest_runs
from projections.velocity import VelocitySource, velocities
from domain.velocity import Velocity

log = logging.getLogger(__name__)

NAME = "repricing"
DEFAULT_PAGE = 1000
APPLICATION_NAME = "etsypro-repricing"

Observed = ObservationBatch.CompetitorPriceObserved
EVENT_TYPES, EVENT_TOPICS = wire.REPRICING_EVENT_TYPES, wire.REPRICING_EVENT_TOPICS
EXPERIMENT_CHECK_SECONDS = 30.0  # how often running experiments are tended (periods last hours)
RETRIED = (Conflict,)  # with parking.TRANSIENT: what acting on the batch again can fix (a busy listing)

_REST_OF_BATCHES = """
    SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state
    FROM pricing_events e JOIN unnest(%s::uuid[], %s::int8[]) AS b(batch_id, version)
      ON e.originator_id = b.batch_id AND e.originator_version > b.version
    ORDER BY e.notification_id"""


@dataclass(frozen=True)
class Trigger:
    """An event that asks for a listing's re-evaluation."""

    position: int        # the triggering event's position in the global log
    listing_id: UUID
    shop_id: UUID
    cause: str           # what the change will name as its causation id
    correlation_id: str  # carried over from the triggering event
    observed: bool = False  # a competitor observation (optimise-profit listings ignore it)


@dataclass(frozen=True)
class Assignment:
    listing_id: UUID
    shop_id: UUID
    rule_id: UUID | None
    version: int  # the listing's version of the (un)assignment


@dataclass
class Plan:
    """What one page of the log means for the policy (pure: no I/O)."""

    assignments: dict[UUID, Assignment] = field(default_factory=dict)
    triggers: list[Trigger] = field(default_factory=list)
    revisions: list[tuple[int, UUID, str, str]] = field(default_factory=list)  # (position, rule, cause, correlation)
    observed: dict[UUID, list[PositionedObservation]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, events: Iterable[tuple[int, object]], failed: list | None = None) -> Plan:
        """failed: None raises what an event raises; a list collects ((position, event), error)
        for each such event, which then adds nothing to the plan."""
        plan = cls()
        for position, e in events:
            if failed is None:
                plan.add(position, e)
                continue
            try:
                plan.add(position, e)
            except Exception as error:  # noqa: BLE001 - the caller parks it
                failed.append(((position, e), error))
        return plan

    def add(self, position: int, e) -> None:
        """Take in one event; all that can fail is computed before the plan changes."""
        kind = type(e)
        if kind is Observed:
            self._observed(position, e)
        elif kind is Listing.RuleAssigned:
            assignment = Assignment(e.originator_id, UUID(e.meta.shop_id), e.rule_id, e.originator_version)
            trigger = Trigger(position, e.originator_id, UUID(e.meta.shop_id),
                              assignment_cause(e.originator_id, e.originator_version), e.meta.correlation_id)
            self.assignments[e.originator_id] = assignment
            self.triggers.append(trigger)
        elif kind is Listing.RuleUnassigned:
            self.assignments[e.originator_id] = Assignment(e.originator_id, UUID(e.meta.shop_id), None,
                                                           e.originator_version)
        elif kind is PricingRule.Revised:
            self.revisions.append((position, e.originator_id, rule_cause(e.originator_id, e.rule_version),
                                   e.meta.correlation_id))

    def _observed(self, position: int, e) -> None:
        observed = (position, CompetitorPrice(observation_ref(e.originator_id, e.originator_version), e.competitor,
                                              e.price, e.meta.occurred_at))
        # Later observations of the same listing in the page supersede this trigger (latest wins).
        trigger = Trigger(position, e.listing_id, UUID(e.meta.shop_id),
                          observation_cause(e.originator_id, e.originator_version), e.meta.correlation_id, True)
        self.observed[e.listing_id].append(observed)
        self.triggers.append(trigger)

    def latest_per_listing(self, rule_listings: dict[UUID, list[tuple[UUID, UUID]]],
                           observations: bool = True) -> dict[UUID, Trigger]:
        """Each listing's latest trigger: its own events (observations unless told not to), and
        revisions of the rule it uses."""
        latest: dict[UUID, Trigger] = {}
        for t in self.triggers:
            if observations or not t.observed:
                latest[t.listing_id] = t  # triggers are in log order
        for position, rule_id, cause, correlation in self.revisions:
            for listing_id, shop_id in rule_listings.get(rule_id, ()):
                seen = latest.get(listing_id)
                if seen is None or seen.position < position:
                    latest[listing_id] = Trigger(position, listing_id, shop_id, cause, correlation)
        return latest


@dataclass(frozen=True)
class Inputs:
    """What a listing's evaluation reads: competitor prices, or (optimise profit) its latest model run."""

    observations: list[CompetitorPrice]
    run: RecommendationRun | None = None
    velocity: Velocity | None = None  # stock_runway, stale_listing: stock, forecast, last sale


@dataclass
class Stats:
    pages: int = 0
    events_read: int = 0
    position: int = 0
    outcomes: Counter = field(default_factory=Counter)
    failed: int = 0
    last_error: str | None = None
    waiting_for: str | None = None  # set while the policy waits for the projector


class RepricingPolicy:
    """Follows the log; see the module's docstring. `rules` makes the automated changes."""

    def __init__(self, rules: Rules, conninfo: str, *, page_size: int = DEFAULT_PAGE,
                 on_result: Callable[[Trigger, RepriceResult], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 projector_timeout: float | None = None, pause: float = 0.0, runs: RunSource = latest_runs,
                 velocities: VelocitySource = velocities):
        self.rules = rules
        self.runs = runs  # the latest recommendation model run of listings under optimise-profit rules
        self.velocities = velocities  # stock, forecast and last sale of listings under velocity rules
        self.pause = pause  # seconds to let commits gather after a partial page (follow_log)
        self.conninfo = conninfo
        self.page_size = page_size
        self.name = NAME  # one repricing policy per database: its position row and its index go together
        self.on_result = on_result
        self.clock = clock
        self.projector_timeout = projector_timeout  # None: wait for the projector as long as it takes
        self.event_types = EVENT_TYPES
        self.log = EventLog(codec.to_domain_event, [self])
        self.stats = Stats()
        self.retries = parking.RetrySchedule()
        self._db = LazyConnection(conninfo, APPLICATION_NAME)
        self._stop = threading.Event()
        self.experiments = Experiments(rules.core)  # switchback experiments' periods (tend_experiments)
        self._experiments_tended = float("-inf")

    # -- one batch ----------------------------------------------------------------------
    def act_on(self, cur, events: Sequence[LogEvent], complete_below: int, follower: str | None = None,
               isolating: bool = False) -> list[RepriceResult]:
        """Act on a batch of the policy's events, (log position, event) in log order, once each.

        `complete_below`: every observation of the batch's listings after this position, up to
        the batch's triggers, is in the batch (the earlier ones are read from the view, once the
        projector reached it). The changes commit on their own; the index updates in `cur`'s
        transaction, which the caller commits after this returns (never before: a crash then
        acts on the batch again, and finds its causes done).

        A cause the engine cannot act on (refused, or failing) is parked under `follower` (default:
        this policy's name) in `cur`'s transaction. Isolating (after the batch failed as a whole):
        an event that cannot be planned, and a listing whose facts cannot be read, are parked too,
        with a savepoint around each try, so the rest of the batch goes on."""
        failures: list[parking.Failure] = []
        failed = [] if isolating else None
        plan = Plan.of(events, failed)
        failures += [parking.Failure.of(pe, error) for pe, error in failed or ()]
        work = self._work(cur, plan)
        results = self._act(cur, work, plan, complete_below, dict(events), failures, isolating)
        if failures:
            parking.park(cur, follower or self.name, failures)
            self.retries.parked = True
            log.error("repricing: parked %d cause(s), the first at %d: %s", len(failures), failures[0].position,
                      failures[0].error)
        return results

    def step(self) -> int:
        """Act on the next page of the log; returns how many stored events it covered (0 at the head)."""
        self.retry_parked_when_due()
        self.tend_experiments_when_due()
        try:
            return self._step(isolating=False)
        except Exception as error:  # noqa: BLE001
            if parking.is_transient(error, RETRIED):
                raise  # not the page's fault: it is acted on again as a whole (keep_following)
            log.warning("repricing: a page failed (%s); acting on it again, parking the causes that fail",
                        parking.describe(error))
            return self._step(isolating=True)

    def _step(self, isolating: bool) -> int:
        conn = self.connection()
        with conn.transaction(), conn.cursor() as cur:
            after = self._lock_position(cur)
            page = self._read(cur, after)
            if page.last is None:
                return 0
            # the page holds every event after `after`
            results = self.act_on(cur, page.events, after, isolating=isolating)
            if page.undecodable:
                parking.park(cur, self.name, page.undecodable)
                self.retries.parked = True
            self.record_progress(cur, self.name, page.last, len(page.events), results)
        self.stats.pages += 1
        self.stats.events_read += page.rows
        self.stats.position = page.last
        return page.rows

    def _read(self, cur, after: int) -> Page:
        """The next page, extended to the end of an observation batch it would otherwise split."""
        page = self.log.read(cur, after, self.page_size)
        if not page.events or page.events[-1][0] != page.last:
            return page
        more = self.rest_of_batches(cur, [page.events[-1][1]])
        return Page(page.events + more, more[-1][0], page.rows + len(more), page.undecodable) if more else page

    def tend_experiments_when_due(self) -> list[dict]:
        """tend_experiments() at most every EXPERIMENT_CHECK_SECONDS (the log's pages come far more often)."""
        if time.monotonic() - self._experiments_tended < EXPERIMENT_CHECK_SECONDS:
            return []
        self._experiments_tended = time.monotonic()
        return tend_experiments(self.experiments, self.clock())

    # -- parked causes ------------------------------------------------------------------
    def retry_parked(self, follower: str | None = None) -> tuple[int, int]:
        """Act again on the causes parked under `follower` (default: this policy), each on its own,
        in one transaction holding the follower's row; returns (resolved now, still parked). A
        cause since superseded by a later one of its listing is resolved without acting."""
        follower = follower or self.name
        conn = self.connection()
        with conn.transaction(), conn.cursor() as cur:
            self._lock_position(cur, follower)
            positions = parking.parked_positions(cur, follower)
            if not positions:
                self.retries.parked = False
                return 0, 0
            events, undecodable = parking.decode_each(parking.stored_events(cur, positions), self.log.decode)
            for positioned in events:
                self.act_on(cur, [positioned], positioned[0], follower, isolating=True)
            parking.park(cur, follower, undecodable)
            parking.unpark_unless_parked_again(cur, follower, positions)
            remaining = len(parking.parked_positions(cur, follower))
        self.retries.parked = remaining > 0
        log.warning("repricing: retried parked causes of %s: %d resolved, %d still parked", follower,
                    len(positions) - remaining, remaining)
        return len(positions) - remaining, remaining

    def retry_parked_when_due(self, follower: str | None = None) -> None:
        """retry_parked(), when self.retries says it is due."""
        if self.retries.due():
            self.retry_parked(follower)

    def rest_of_batches(self, cur, ends: Iterable[object]) -> list[LogEvent]:
        """The events after `ends` of the observation batches they belong to, in log order. A
        batch's observations are grouped per listing as a whole, so a page or a Kafka batch that
        ends inside one is completed from the store (one save: its events are contiguous in the log)."""
        ends = [e for e in ends if type(e) is Observed]
        if not ends:
            return []
        rows = cur.execute(_REST_OF_BATCHES, [[e.originator_id for e in ends], [e.originator_version for e in ends]],
                           binary=True).fetchall()
        decode = self.log.decode
        return [(position, decode(StoredEvent(batch_id, version, topic, state)))
                for position, batch_id, version, topic, state in rows]

    def _work(self, cur, plan: Plan) -> list[tuple[Trigger, UUID]]:
        """(trigger, rule) of each listing to evaluate: its latest trigger in the batch, unless the
        index knows a later one (a replay, or a batch that arrived late), and only while it has a rule."""
        self._apply_assignments(cur, plan.assignments.values())
        rule_listings: dict[UUID, list[tuple[UUID, UUID]]] = defaultdict(list)
        if plan.revisions:
            rows = cur.execute("SELECT rule_id, listing_id, shop_id FROM streams.repricing_listings"
                               " WHERE rule_id = ANY(%s)", [list({r for _, r, _, _ in plan.revisions})]).fetchall()
            for rule_id, listing_id, shop_id in rows:
                rule_listings[rule_id].append((listing_id, shop_id))
        latest = plan.latest_per_listing(rule_listings)
        if not latest:
            return []
        rows = cur.execute(
            "UPDATE streams.repricing_listings t SET last_trigger = greatest(t.last_trigger, u.position),"
            " updated_at = now() FROM unnest(%s::uuid[], %s::int8[]) AS u(listing_id, position)"
            " WHERE t.listing_id = u.listing_id RETURNING t.listing_id, t.rule_id, t.last_trigger",
            [list(latest), [t.position for t in latest.values()]]).fetchall()
        work = [(latest[listing_id], rule_id) for listing_id, rule_id, last_trigger in rows
                if rule_id is not None and last_trigger == latest[listing_id].position]
        return sorted(self._without_observations_of_model_followers(work, plan, rule_listings),
                      key=lambda w: w[0].position)

    def _without_observations_of_model_followers(self, work: list[tuple[Trigger, UUID]], plan: Plan,
                                                 rule_listings) -> list[tuple[Trigger, UUID]]:
        """An optimise-profit listing whose latest trigger is an observation is acted on for its
        latest other trigger of the batch (assignment, revision), or not at all."""
        rules = {rule_id: self._rule(rule_id) for rule_id in {r for t, r in work if t.observed}}
        followers = {t.listing_id for t, r in work if t.observed and _ignores_observations(rules[r])}
        if not followers:
            return work
        others = plan.latest_per_listing(rule_listings, observations=False)
        return [(others[t.listing_id] if t.listing_id in followers else t, r) for t, r in work
                if t.listing_id not in followers or t.listing_id in others]

    def _apply_assignments(self, cur, assignments: Iterable[Assignment]) -> None:
        rows = list(assignments)
        if rows:
            cur.execute(
                "INSERT INTO streams.repricing_listings AS t (listing_id, shop_id, rule_id, assignment_version)"
                " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::int8[])"
                " ON CONFLICT (listing_id) DO UPDATE SET rule_id = excluded.rule_id,"
                " assignment_version = excluded.assignment_version, updated_at = now()"
                " WHERE excluded.assignment_version > t.assignment_version",
                [[a.listing_id for a in rows], [a.shop_id for a in rows], [a.rule_id for a in rows],
                 [a.version for a in rows]])

    def _act(self, cur, work: list[tuple[Trigger, UUID]], plan: Plan, complete_below: int,
             events: dict[int, object], failures: list[parking.Failure], isolating: bool) -> list[RepriceResult]:
        if not work:
            return []
        now = self.clock()
        if isolating:
            facts: dict[UUID, Inputs] = {}
            failed = parking.isolate(work, lambda chunk: parking.in_savepoint(
                cur.connection, lambda: facts.update(self._facts(cur, chunk, plan, complete_below, now))),
                also_transient=RETRIED)
            failures += [_failure(trigger, events, error) for (trigger, _), error in failed]
            work = [w for w in work if w[0].listing_id in facts]
        else:
            facts = self._facts(cur, work, plan, complete_below, now)
        results = []
        for trigger, _ in work:
            result = self._reprice(trigger, facts.get(trigger.listing_id, Inputs([])), now, events, failures)
            if result is not None:
                results.append(result)
        return results

    def _facts(self, cur, work: list[tuple[Trigger, UUID]], plan: Plan, complete_below: int,
               now: datetime) -> dict[UUID, Inputs]:
        """What each listing's evaluation reads: for an optimise-profit listing its latest model
        run; else its competitor prices up to its trigger (projected facts up to where the
        projector is, plus the batch's own observations after that)."""
        rules = {rule_id: self._rule(rule_id) for rule_id in {r for _, r in work}}
        followers = [t.listing_id for t, rule_id in work if _follows_model_runs(rules[rule_id])]
        inputs = {listing_id: Inputs([], run) for listing_id, run in self._runs_of(cur, followers).items()}
        readers = [t.listing_id for t, rule_id in work if _reads_velocity(rules[rule_id])]
        found = self.velocities(cur, readers) if readers else {}
        inputs |= {listing_id: Inputs([], velocity=found.get(listing_id)) for listing_id in readers}
        work = [(t, rule_id) for t, rule_id in work if t.listing_id not in inputs]
        if not work:
            return inputs
        projected = self._projected_from(cur, complete_below)
        wanted = [Wanted(t.listing_id, _since(rules[rule_id], now), min(t.position, projected)) for t, rule_id in work]
        facts = latest(cur, wanted)
        for trigger, _ in work:
            facts[trigger.listing_id].extend(
                (position, o) for position, o in plan.observed.get(trigger.listing_id, ())
                if projected < position <= trigger.position)
        return inputs | {listing_id: Inputs(newest_per_competitor(found)) for listing_id, found in facts.items()}

    def _runs_of(self, cur, listing_ids: list[UUID]) -> dict[UUID, RecommendationRun | None]:
        """Each listing's latest recommendation model run (None: it has none)."""
        if not listing_ids:
            return {}
        found = self.runs(cur, listing_ids)
        return {listing_id: found.get(listing_id) for listing_id in listing_ids}

    def _projected_from(self, cur, complete_below: int) -> int:
        """Where the projected facts end, once they reach `complete_below` (the batch holds the rest)."""
        started, warned, pause = time.monotonic(), 0.0, 0.002
        while True:
            projected = projected_up_to(cur)
            if projected >= complete_below:
                self.stats.waiting_for = None
                return projected
            waited = time.monotonic() - started
            self.stats.waiting_for = f"projection competitor_prices at {projected}, needed {complete_below}"
            if waited - warned > 10:
                warned = waited
                log.warning("repricing: waiting %.0fs for the projector (%s); is it running?", waited,
                            self.stats.waiting_for)
            if self.projector_timeout is not None and waited > self.projector_timeout:
                raise TimeoutError(f"the projector did not catch up: {self.stats.waiting_for}")
            if self._stop.wait(pause):
                raise InterruptedError("stopped while waiting for the projector")
            pause = min(pause * 2, 0.1)

    def _rule(self, rule_id: UUID) -> PricingRule | None:
        return self.rules.rule(rule_id)  # None cannot be (assigned rules exist); reprice_listing will say

    def _reprice(self, trigger: Trigger, inputs: Inputs, now: datetime,
                 events: dict[int, object], failures: list[parking.Failure]) -> RepriceResult | None:
        try:
            ctx = self.rules.automation_context(trigger.shop_id, trigger.cause, trigger.correlation_id)
            result = self.rules.reprice_listing(ctx, trigger.shop_id, trigger.listing_id, inputs.observations,
                                                trigger.cause, now=now, run=inputs.run, velocity=inputs.velocity)
        except Exception as e:  # noqa: BLE001
            if parking.is_transient(e, RETRIED):
                raise  # a busy listing or the database: retry the batch (changes made are kept)
            # Not something a retry of the batch fixes (a bug, or data that does not fit): park
            # this cause rather than stop automated repricing for everyone.
            self.stats.failed += 1
            failures.append(_failure(trigger, events, e))
            return None
        self.stats.outcomes[result.outcome] += 1
        if self.on_result is not None:
            self.on_result(trigger, result)
        return result

    # -- tracking -----------------------------------------------------------------------
    def _lock_position(self, cur, policy: str | None = None) -> int:
        policy = policy or self.name
        cur.execute("INSERT INTO streams.policy_positions (policy) VALUES (%s) ON CONFLICT DO NOTHING", [policy])
        return cur.execute("SELECT log_position FROM streams.policy_positions WHERE policy = %s FOR UPDATE",
                           [policy], prepare=True).fetchone()[0]

    @staticmethod
    def record_progress(cur, policy: str, position: int, events: int, results: list[RepriceResult]) -> None:
        """Count a batch in `policy`'s row (which must exist). The position only moves forward
        here (`rewind` moves it back): the faust worker's batches may come after earlier ones."""
        changed = sum(1 for r in results if r.outcome == CHANGED)
        cur.execute("UPDATE streams.policy_positions SET log_position = greatest(log_position, %s),"
                    " events_seen = events_seen + %s, evaluations = evaluations + %s, changes = changes + %s,"
                    " updated_at = now() WHERE policy = %s",
                    [position, events, len(results), changed, policy], prepare=True)

    def position(self) -> int:
        with psycopg.connect(self.conninfo) as conn:
            row = conn.execute("SELECT log_position FROM streams.policy_positions WHERE policy = %s",
                               [self.name]).fetchone()
        return row[0] if row else 0

    def rewind(self, position: int) -> None:
        """Act again on the log after `position` (what a redelivery does): causes already acted
        on are found done, superseded ones are skipped."""
        with psycopg.connect(self.conninfo) as conn:
            conn.execute("INSERT INTO streams.policy_positions (policy, log_position) VALUES (%s, %s)"
                         " ON CONFLICT (policy) DO UPDATE SET log_position = excluded.log_position, updated_at = now()",
                         [self.name, position])

    # -- following the log --------------------------------------------------------------
    def interrupt_on(self, stop: threading.Event) -> None:
        """Make a wait for the projector end (InterruptedError) once `stop` is set."""
        self._stop = stop

    def catch_up(self, stop: threading.Event | None = None) -> int:
        """Act on the log up to its head; returns the stored events covered."""
        if stop is not None:
            self.interrupt_on(stop)
        total = 0
        while not self._stop.is_set():
            covered = self.step()
            if covered == 0:
                return total
            total += covered
        return total

    def run(self, stop: threading.Event, idle_timeout: float = 1.0) -> None:
        """Follow the log until `stop` is set, surviving database restarts and failing pages."""
        self.interrupt_on(stop)
        keep_following("repricing", self, stop, lambda: self._follow(stop, idle_timeout))

    def _follow(self, stop: threading.Event, idle_timeout: float) -> None:
        follow_log(self, self.conninfo, APPLICATION_NAME, stop, idle_timeout, self.page_size, self.pause)

    # -- connection ---------------------------------------------------------------------
    def connection(self) -> psycopg.Connection:
        return self._db.get()

    def close(self) -> None:
        self._db.close()


# -- new model runs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunsActedOn:
    """What act_on_new_runs did: a result per listing evaluated, and the listings that failed."""

    results: list[RepriceResult]
    failed: list[tuple[UUID, str]]  # (listing, error): acted on again by the next call
    already: int                    # listings whose latest run had been acted on before


def act_on_new_runs(rules: Rules, conninfo: str, shop_id: UUID | None = None, *, runs: RunSource = latest_runs,
                    now: datetime | None = None, velocity_of: VelocitySource = velocities) -> RunsActedOn:
    """Reprice each listing under an optimise-profit rule (in `shop_id`, or all shops) for its
    latest recommendation model run, with cause `model_run:<run id>`: exactly once per run, however
    often this is called (reprice_listing reserves (listing, cause)). Model runs are derived data,
    not events, so the refresh job (or `serve`, after its scheduled refresh) calls this; a listing
    whose rule the policy has not seen assigned yet gets the same run when the policy reaches it.
    Listings under stock_runway and stale_listing rules are evaluated once per forecast run the
    same way (cause `model_run:<forecast run id>`): the daily refresh is their daily look."""
    now = now or datetime.now(timezone.utc)
    with psycopg.connect(conninfo, application_name=APPLICATION_NAME, context=reading_adapters()) as conn:
        followers = _model_followers(rules, conn, shop_id)
        latest_of = runs(conn.cursor(), [listing_id for listing_id, _ in followers]) if followers else {}
        readers = _model_followers(rules, conn, shop_id, _reads_velocity)
        velocity = velocity_of(conn.cursor(), [listing_id for listing_id, _ in readers]) if readers else {}
    due = [(listing_id, shop, latest_of[listing_id]) for listing_id, shop in followers if listing_id in latest_of]
    due += [(listing_id, shop, velocity[listing_id]) for listing_id, shop in readers
            if listing_id in velocity and velocity[listing_id].forecast is not None]
    done = set()
    for shop in {shop for _, shop, _ in due}:
        done |= rules.acted_on(shop, [(listing_id, _run_cause(run)) for listing_id, s, run in due if s == shop])
    results, failed = [], []
    for listing_id, shop, run in due:
        cause = _run_cause(run)
        if (listing_id, cause) in done:
            continue
        try:
            ctx = rules.automation_context(shop, cause)
            inputs = {"velocity": run} if isinstance(run, Velocity) else {"run": run}
            results.append(rules.reprice_listing(ctx, shop, listing_id, [], cause, now=now, **inputs))
        except Exception as error:  # noqa: BLE001 - one listing's failure must not hold up the others
            log.error("repricing: %s of listing %s: %s", cause, listing_id, parking.describe(error))
            failed.append((listing_id, parking.describe(error)))
    return RunsActedOn(results, failed, len(done))


def tend_experiments(experiments: Experiments, now: datetime) -> list[dict]:
    """Start each running experiment's due period (its prices as automated changes with source
    `experiment`, under the guardrails, cooldowns and stops), or pause it on a price change it did not
    make. Periods are time, not events: the policy calls this from its loop, not per page."""
    results = []
    for experiment_id in experiments.due(now):
        try:
            results.append(experiments.tend(experiment_id, now))
        except Exception as error:  # noqa: BLE001 - one experiment's failure must not hold up the others
            log.error("repricing: experiment %s: %s", experiment_id, parking.describe(error))
            results.append({"experiment_id": str(experiment_id), "outcome": "failed", "error": parking.describe(error)})
    return results


def _model_followers(rules: Rules, conn, shop_id: UUID | None, which=None) -> list[tuple[UUID, UUID]]:
    """(listing, shop) of the listings whose assigned rule follows model runs (or is `which`), as the
    policy's index knows them."""
    which = which or _follows_model_runs
    rows = conn.execute("SELECT listing_id, shop_id, rule_id FROM streams.repricing_listings"
                        " WHERE rule_id IS NOT NULL AND (%(shop)s::uuid IS NULL OR shop_id = %(shop)s)"
                        " ORDER BY listing_id", {"shop": shop_id}).fetchall()
    kinds = {rule_id: which(rules.rule(rule_id)) for rule_id in {r for _, _, r in rows}}
    return [(listing_id, shop) for listing_id, shop, rule_id in rows if kinds[rule_id]]


def _failure(trigger: Trigger, events: dict[int, object], error: BaseException) -> parking.Failure:
    """The parked row of a cause: its triggering event, the listing named in the error."""
    failure = parking.Failure.of((trigger.position, events[trigger.position]), error)
    return parking.Failure(failure.position, failure.originator_id, failure.originator_version, failure.topic,
                           f"listing {trigger.listing_id}: {failure.error}")


def _follows_model_runs(rule: PricingRule | None) -> bool:
    return rule is not None and rule.rule.follows_model_runs


def _reads_velocity(rule: PricingRule | None) -> bool:
    return rule is not None and rule.rule.reads_velocity


def _ignores_observations(rule: PricingRule | None) -> bool:
    return _follows_model_runs(rule) or _reads_velocity(rule)


def _run_cause(run: RecommendationRun | Velocity) -> str:
    """A recommendation run's cause, or a velocity listing's: its forecast run (one look per refresh)."""
    return model_run_cause(run.forecast.run_id if isinstance(run, Velocity) else run.run_id)


def _since(rule: PricingRule | None, now: datetime) -> datetime | None:
    if rule is None or rule.rule.max_age_minutes is None:
        return None
    return now - timedelta(minutes=rule.rule.max_age_minutes)
