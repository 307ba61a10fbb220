"""Prometheus metrics (`GET /metrics`): what the API does, counted where it happens, and what the
followers have done, read from the database when scraped.

Counted in the process: requests by route template and status with latency, commands by name and
outcome, retries (commands decided again), events per type, 429s, login refusals and lockouts, pool usage.
Read at scrape time (one worker answers for all): each projection's and policy's lag in events and
seconds, the relay's and the Kafka sinks' positions. With `serve --workers N` every worker counts
into files under PROMETHEUS_MULTIPROC_DIR (api/server.py sets it before the workers start) and a
scrape sums them: whichever worker answers, the figures are the whole server's.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import threading
from dataclasses import dataclass
from typing import Callable

import psycopg
from fastapi.routing import APIRoute
from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from domain.errors import CommandRefused, Conflict, DomainError
from projections.lag import lag, policy_lags
from projections.registry import ALL

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets from a cached read (~1 ms) to a 10,000-observation batch (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOGIN_ROUTES = frozenset({"/auth/login", "/auth/login/mfa"})
POOL_EVERY_S = 1.0  # pool gauges are refreshed at most this often, by whichever request ends next

REQUESTS = Counter("etsypro_http_requests", "HTTP requests answered, by route template and status",
                   ["method", "route", "status"])
LATENCY = Histogram("etsypro_http_request_duration_seconds", "Time from request to the end of the answer",
                    ["method", "route"], buckets=LATENCY_BUCKETS)
RATE_LIMITED = Counter("etsypro_http_rate_limited", "Requests refused with 429 (too many attempts)", ["route"])
LOGIN_REFUSED = Counter("etsypro_login_refusals", "Logins refused (wrong secret, unknown user or locked account)",
                        ["step"])
COMMANDS = Counter("etsypro_commands", "Commands handled, by name and outcome "
                   "(done, replayed from the idempotency record, refused, conflict)", ["command", "outcome"])
RETRIES = Counter("etsypro_command_retries", "Commands decided again: after losing a race to another writer, "
                  "or to check on fresh state a refusal made on the listing as this process remembered it")
EVENTS = Counter("etsypro_events", "Events committed by this server's commands, by type", ["type"])
LOCKOUTS = Counter("etsypro_account_lockouts", "Accounts locked after repeated failed logins")
POOL = Gauge("etsypro_pool_connections", "Database connections of the server's pools (summed over workers)",
             ["pool", "state"], multiprocess_mode="livesum")


def event_type(event) -> str:
    """'Listing.PriceChanged': the class as the domain names it, without the module."""
    return type(event).__qualname__


def count_events(events) -> None:
    """The engine's on_commit listener: every committed event by type; lockouts on their own."""
    for event in events:
        name = event_type(event)
        _child(EVENTS, name).inc()
        if name == "Account.Locked":
            LOCKOUTS.inc()


def instrument(engine) -> None:
    """Count the engine's commands, their outcomes and retries, and its committed events. Wraps the
    core's own methods on this instance (once, however many apps share the engine)."""
    core = engine.core
    if getattr(core, "_metered", False):
        return
    core._metered = True
    core.on_commit.append(count_events)
    core.execute = _counted_execute(core.execute)
    core._decide = _counted_decide(core._decide)


def _counted_execute(execute: Callable) -> Callable:
    def counted(ctx, name, *args, **kwargs):
        try:
            result = execute(ctx, name, *args, **kwargs)
        except Conflict:
            COMMANDS.labels(name, "conflict").inc()
            raise
        except (DomainError, CommandRefused):
            COMMANDS.labels(name, "refused").inc()
            raise
        _child(COMMANDS, name, "replayed" if result.replayed else "done").inc()
        return result

    return counted


def _counted_decide(decide: Callable) -> Callable:
    def counted(decision, first: bool):
        if not first:  # WriteCore._tries decides again only after a lost race or a stale read
            RETRIES.inc()
        return decide(decision, first=first)

    return counted


def route_template(scope) -> str:
    """The matched route's path template ('/shops/{shop_id}'), never the URL: bounded label values."""
    route = scope.get("route")
    return route.path if isinstance(route, APIRoute) else "unmatched"


@dataclass
class Pools:
    """The pools whose usage the gauges show: name -> psycopg_pool.ConnectionPool (or None)."""

    pools: dict
    checked: float = 0.0

    def refresh(self, now: float) -> None:
        if now - self.checked < POOL_EVERY_S:
            return
        self.checked = now
        for name, pool in self.pools.items():
            stats = pool.get_stats() if pool is not None else {}
            size = stats.get("pool_size", 0)
            POOL.labels(name, "size").set(size)
            POOL.labels(name, "in_use").set(size - stats.get("pool_available", 0))
            POOL.labels(name, "waiting").set(stats.get("requests_waiting", 0))


@functools.lru_cache(maxsize=4096)
def _child(metric, *labels):
    """A metric's child for these label values, looked up once (labels() takes a lock each call)."""
    return metric.labels(*labels)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    _child(REQUESTS, method, route, status).inc()
    _child(LATENCY, method, route).observe(seconds)
    if status == 429:
        RATE_LIMITED.labels(route).inc()
    elif status == 401 and route in LOGIN_ROUTES:
        LOGIN_REFUSED.labels("password" if route == "/auth/login" else "second_factor").inc()


class FollowerCollector:
    """Figures read from the database at scrape time: each follower's lag and the Kafka path's
    positions. One short connection per scrape, so a scrape never waits for the API's pools."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo

    def collect(self):
        up = GaugeMetricFamily("etsypro_database_up", "Whether the scrape could read the followers' figures (1) or not (0)")
        try:
            figures = self._read()
        except psycopg.Error:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _follower_families(figures[0])
        yield from _kafka_families(*figures[1:])

    def _read(self):
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5,
                             options="-c statement_timeout=5000") as conn:
            followers = [("projection", x) for x in lag(conn, [p.name for p in ALL])]
            followers += [("policy", x) for x in policy_lags(conn)]
            relays = conn.execute("SELECT relay, log_position, events_published FROM streams.relay_positions").fetchall()
            sinks = conn.execute("SELECT sink, topic, partition, last_offset, records_applied"
                                 " FROM streams.sink_offsets").fetchall()
        return followers, relays, sinks


def _follower_families(followers):
    head = GaugeMetricFamily("etsypro_log_head", "Latest committed position of the event log")
    head.add_metric([], followers[0][1].head if followers else 0)
    events = GaugeMetricFamily("etsypro_follower_lag_events", "Committed events a follower has not applied",
                               labels=["follower", "kind"])
    seconds = GaugeMetricFamily("etsypro_follower_lag_seconds",
                                "How long the oldest event a follower has not applied has waited", labels=["follower", "kind"])
    position = GaugeMetricFamily("etsypro_follower_position", "Last log position a follower applied",
                                 labels=["follower", "kind"])
    parked = GaugeMetricFamily("etsypro_follower_parked", "Events a follower parked with their error",
                               labels=["follower", "kind"])
    for kind, x in followers:
        events.add_metric([x.projection, kind], x.events_behind)
        seconds.add_metric([x.projection, kind], x.seconds_behind)
        position.add_metric([x.projection, kind], x.log_position)
        parked.add_metric([x.projection, kind], x.parked)
    return head, events, seconds, position, parked


def _kafka_families(relays, sinks):
    relay_position = GaugeMetricFamily("etsypro_relay_position", "Last log position the broker acknowledged",
                                       labels=["relay"])
    published = GaugeMetricFamily("etsypro_relay_events_published", "Events the relay has published",
                                  labels=["relay"])
    for relay, position, count in relays:
        relay_position.add_metric([relay], position)
        published.add_metric([relay], count)
    offset = GaugeMetricFamily("etsypro_sink_offset", "Last Kafka offset a sink applied",
                               labels=["sink", "topic", "partition"])
    applied = GaugeMetricFamily("etsypro_sink_records_applied", "Kafka records a sink has applied",
                                labels=["sink", "topic", "partition"])
    for sink, topic, partition, last_offset, records in sinks:
        offset.add_metric([sink, topic, str(partition)], last_offset)
        applied.add_metric([sink, topic, str(partition)], records)
    return relay_position, published, offset, applied


_scrape_lock = threading.Lock()  # prometheus_client's multiprocess reader is not meant to run twice at once


def exposition(conninfo: str) -> bytes:
    """The text format of every metric: this process's (or every worker's) and the database's."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = _with_process_registry(registry)
    registry.register(FollowerCollector(conninfo))
    with _scrape_lock:
        return generate_latest(registry)


def _with_process_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """The default registry's collectors (ours, and the process's CPU and memory) in a fresh one."""

    class _Default:
        def collect(self):
            return REGISTRY.collect()

    registry.register(_Default())
    return registry


@dataclass(frozen=True)
class MetricsAccess:
    """Who may scrape: the bearer of `token` when one is set; otherwise loopback clients only."""

    token: str | None = None

    def allows(self, client: str, authorization: str | None) -> bool:
        if self.token:
            return hmac.compare_digest((authorization or "").encode(), f"Bearer {self.token}".encode())
        try:
            return ipaddress.ip_address(client).is_loopback
        except ValueError:
            return False
