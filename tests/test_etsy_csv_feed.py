"""The competitor price feed on Kafka (streams/competitor_feed.py, commands/competitor_feed.py) against
a real Kafka-compatible broker (Tansu) and PostgreSQL: valid records recorded once, whatever
redelivers them; bad ones (unknown shop or listing, bad values, not JSON) reported by offset,
never stopping the feed; out-of-order records counted and recorded."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from bench.broker import TansuBroker, find_tansu_binary
from commands import models
from commands.competitor_feed import FeedIntake, FeedRecord
from commands.context import CommandContext
from commands.marketplace_facts import MarketplaceFacts
from domain.facts import ObservationBatch
from domain.meta import Actor
from streams.competitor_feed import FeedConfig, FeedWorker
from test_etsy_csv import events_of

pytestmark = pytest.mark.skipif(find_tansu_binary() is None, reason="tansu broker binary not found")
TOPIC = "feeds.competitor-prices"


def observation(shop, **overrides) -> bytes:
    body = {"shop_id": str(shop), "sku": "MUG-BLUE", "competitor": "etsy:shop/ClayAndCo/98765", "price": "21.95",
            "currency": "GBP", "observed_at": "2026-11-25T09:30:00Z", "source": "pricefeed"}
    return json.dumps({**body, **overrides}).encode()


async def produce(bootstrap: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    from streams import wire

    await wire.ensure_topics(bootstrap, [TOPIC], 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # not idempotent: Tansu refuses that
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TOPIC, value, key=b"feed")  # one partition: order kept
    finally:
        await producer.stop()


def consume(engine, bootstrap: str, group: str) -> FeedWorker:
    intake = FeedIntake(MarketplaceFacts(engine.core, engine.listings))
    worker = FeedWorker(FeedConfig(bootstrap, TOPIC, group, batch=4, partitions=2), intake.take,
                        lambda m: FeedRecord(m.topic, m.partition, m.offset, m.value))
    asyncio.run(worker.run(idle_stop_s=2.0))
    return worker


def total(worker: FeedWorker, name: str) -> int:
    return sum(getattr(r, name) for r in worker.reports)


def test_the_feed_records_each_observation_once_and_reports_bad_records(engine):
    ctx = CommandContext(actor=Actor("pytest-feed"), tenant_id=f"feed-{uuid.uuid4().hex[:10]}")
    shop = uuid.UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Feedshop", currency="GBP")).body["shop_id"])
    engine.listings.register_listings(ctx, shop, models.RegisterListings(listings=[
        models.ListingSpec(external_id="1234567890", sku="MUG-BLUE", title="Mug", price="24.00", currency="GBP"),
        models.ListingSpec(external_id="1234567891", sku="BOWL-STONE", title="Bowl", price="18.50", currency="GBP")]))
    values = [
        observation(shop),
        observation(shop, price="22.50", observed_at="2026-11-26T09:30:00Z"),
        observation(shop),  # the producer sent it twice
        observation(shop, price="21.00", observed_at="2026-11-24T09:30:00Z"),  # older than the above: out of order
        observation(shop, sku=None, external_id="1234567891", competitor="etsy:shop/Kilnworks/1"),
        observation(shop, sku="NOT-OURS"),
        observation(shop, price="abc"),
        observation(shop, price="-1.00"),
        observation(uuid.uuid4()),
        b"not json",
    ]
    with TansuBroker() as broker:
        asyncio.run(produce(broker.bootstrap_servers, values))
        first = consume(engine, broker.bootstrap_servers, "feed-a")
        assert total(first, "records") == len(values)
        recorded = events_of(engine, shop, ObservationBatch.CompetitorPriceObserved)
        assert total(first, "recorded") == len(recorded) == 4
        assert sorted(str(e.price.amount) for e in recorded) == ["21.00", "21.95", "21.95", "22.50"]
        assert total(first, "out_of_order") == 1  # one partition: the records arrive in the order sent
        assert {(e.source, e.meta.source) for e in recorded} == {("pricefeed", "import")}
        rejected = dict((why, where) for r in first.reports for where, why in r.rejected)
        assert len(rejected) == 5, rejected
        reasons = " | ".join(rejected)
        for expected in ("no listing of this shop is 'NOT-OURS'", "price: not a number: 'abc'", "must be greater than zero",
                         "no shop", "not a JSON object"):
            assert expected in reasons, reasons
        assert all(where.startswith(f"{TOPIC}[") and "@" in where for where in rejected.values())

        again = consume(engine, broker.bootstrap_servers, "feed-b")  # a new group: every record delivered again
        assert (total(again, "recorded"), total(again, "already_recorded")) == (0, 4)
    assert len(events_of(engine, shop, ObservationBatch.CompetitorPriceObserved)) == 4
