"""How an event of the global log travels on Kafka: its topic, key, value and headers.

One Kafka topic per aggregate type (`pricing.listing`, `pricing.sales_batch`, ...), keyed by the
aggregate's id, so all events of one aggregate land in one partition in version order, and a
worker subscribes only to the aggregate types its projections read. The value is the stored
event's state exactly as the event store holds it (the write side's mapper decodes it); the
headers carry the rest of the stored event and its position in the global log, so a sink can
rebuild the very StoredEvent the in-process projector reads, and key its facts by the same
position.

One more topic, `pricing.repricing`, carries again the events the repricing policy reads
(streams/repricing.py), keyed by the shop they belong to rather than by aggregate: the policy needs
one listing's rule assignment, its rule's revisions and its observations in log order, and those
come from three aggregates of one shop. Its records carry the aggregate's id in a header, since
the key no longer is it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence
from uuid import UUID

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.utils import get_topic

from domain.facts import ObservationBatch
from domain.listing import Listing
from domain.pricing_rule import PricingRule

DEFAULT_PREFIX = "pricing"
DEFAULT_PARTITIONS = 8  # the most workers that can share one topic

EVENT_TOPIC = "event-topic"       # the library's topic: module:Class.Event
POSITION = "log-position"         # pricing_events.notification_id, decimal
VERSION = "originator-version"    # the aggregate's version, decimal
ORIGINATOR = "originator-id"      # the aggregate's id, on records keyed by something else (the shop)

# The events the repricing policy reads, also carried on the repricing topic.
REPRICING_EVENT_TYPES = (ObservationBatch.CompetitorPriceObserved, PricingRule.Revised, Listing.RuleAssigned,
                         Listing.RuleUnassigned)
REPRICING_EVENT_TOPICS = frozenset(get_topic(t) for t in REPRICING_EVENT_TYPES)  # as the event store names them


@functools.cache  # called for every event the relay publishes
def kafka_topic(event_topic: str, prefix: str = DEFAULT_PREFIX) -> str:
    """'domain.listing:Listing.PriceChanged' -> 'pricing.listing' (one topic per aggregate type)."""
    module, _, qualname = event_topic.partition(":")
    owner = qualname.split(".")[0] if "." in qualname else module.rsplit(".", 1)[-1]
    return f"{prefix}.{re.sub(r'(?<!^)(?=[A-Z])', '_', owner).lower()}"


def repricing_topic(prefix: str = DEFAULT_PREFIX) -> str:
    """The topic of the repricing policy's events, keyed by shop (in log order per shop)."""
    return f"{prefix}.repricing"


def kafka_topics_for(event_types: Iterable[type], prefix: str = DEFAULT_PREFIX) -> list[str]:
    return sorted({kafka_topic(get_topic(t), prefix) for t in event_types})


def key(notification: StoredEvent) -> bytes:
    return str(notification.originator_id).encode()


def headers(notification: Notification) -> list[tuple[str, bytes]]:
    return [(EVENT_TOPIC, notification.topic.encode()), (POSITION, str(notification.id).encode()),
            (VERSION, str(notification.originator_version).encode())]


def headers_keyed_by_other(notification: Notification) -> list[tuple[str, bytes]]:
    """The headers of a record whose key is not the aggregate's id: they name the aggregate."""
    return [*headers(notification), (ORIGINATOR, str(notification.originator_id).encode())]


@dataclass(frozen=True)
class Record:
    """One Kafka record as a sink sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: Mapping[str, bytes]

    @classmethod
    def of(cls, topic: str, partition: int, offset: int, key: bytes, value: bytes,
           headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes]) -> Record:
        return cls(topic, partition, offset, key, value, dict(headers))

    @property
    def event_topic(self) -> str:
        return self.headers[EVENT_TOPIC].decode()

    @property
    def position(self) -> int:
        return int(self.headers[POSITION])

    def stored_event(self) -> StoredEvent:
        originator = self.headers.get(ORIGINATOR, self.key)
        return StoredEvent(UUID(originator.decode()), int(self.headers[VERSION]), self.event_topic, self.value)


async def ensure_topics(bootstrap_servers: str, names: Iterable[str], partitions: int = DEFAULT_PARTITIONS,
                        replication_factor: int = 1) -> None:
    """Create the topics that do not exist yet. Events are history: never expire them (a new
    sink replays its topics from offset 0)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor, topic_configs={"retention.ms": "-1"}) for name in names])
        # Errors come back in the response, not as exceptions. 36: the topic already exists.
        failed = [(name, code, message) for name, code, message in response.topic_errors if code not in (0, 36)]
        if failed:
            raise RuntimeError(f"could not create Kafka topics: {failed}")
    finally:
        await admin.close()
