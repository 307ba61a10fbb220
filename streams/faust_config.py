"""The faust.App settings every worker here uses: at-least-once delivery that works on any Kafka,
including the Tansu broker the tests and benchmarks start (bench/broker.py)."""

from __future__ import annotations

from typing import Any


def faust_settings(bootstrap_servers: str | None = None, **overrides: Any) -> dict[str, Any]:
    """faust.App keyword arguments that work (and join quickly) against Tansu.

    Plain at-least-once: sinks must be idempotent and track their position transactionally.
    """
    settings: dict[str, Any] = {
        # Tansu completes a JoinGroup round only after session_timeout / 2 (measured), so faust's
        # default 60 s session means a 30 s+ join; 6 s gives a 3 s join. Tansu also ignores
        # LeaveGroup: after a stop or a crash the old member lingers for a session timeout, so
        # a restart within that window joins in ~12 s. Keep these from the very first start.
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 10.0,
        # Note: the `faust worker` CLI overrides this with its --with-web default; pass
        # --without-web there too, or it binds 0.0.0.0:6066.
        "web_enabled": False,
        # exactly_once turns on aiokafka's idempotent producer + transactions, which fail on
        # Tansu (InitProducerId answers UnknownError). at_least_once leaves them off; so must
        # any plain AIOKafkaProducer (enable_idempotence=False, its default).
        "processing_guarantee": "at_least_once",
        "topic_replication_factor": 1,  # a single broker
        # A new consumer group must start at the beginning of the log, never skip events.
        "consumer_auto_offset_reset": "earliest",
    }
    if bootstrap_servers:
        settings["broker"] = f"kafka://{bootstrap_servers}"
    settings.update(overrides)
    return settings
