"""The faust.App settings every worker here uses: at-least-once delivery that works on any Kafka,
including the Tansu broker the tests and benchmarks start (bench/broker.py)."""

from __future__ import annotations

from typing import Any


def faust_settings(bootstrap_servers: str | None = None, **overrides: Any) -> dict[str, Any]:
    """faust.App keyword arguments that work (and join quickly) against Tansu.

    Plain at-least-once: sinks must be idempotent and track their position transactionally.
    """
    settings: dict[str, Any] = {
        # Short timeouts from the very first start: Tansu's joins take half a session timeout
        # (docs/streams.md).
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
