"""Third-party competitor price feeds on Kafka: each record one observation, a JSON object

    {"shop_id": "...", "sku": "MUG-BLUE", "competitor": "etsy:shop/ClayAndCo/98765",
     "price": "21.95", "currency": "GBP", "observed_at": "2026-11-25T09:30:00Z", "source": "pricefeed"}

naming the listing by `listing_id`, `external_id` or `sku`, like a competitor-prices CSV line. A
batch of records goes through the very same path as that CSV import (commands/etsy_import.py
CompetitorPricesImport): the command models' and the domain's checks, then
`record_feed_observations`, which reserves each observation's identity with its batch. So Kafka's
at-least-once delivery (a record redelivered after a crash, a producer sending twice) records
each observation once; records naming an unknown shop or listing, or refused values, are
reported with their topic, partition and offset and never stop the feed."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from commands.context import CommandContext
from commands.csv_files import COMPETITOR_PRICES, Table
from commands.etsy_import import CompetitorPricesImport
from commands.marketplace_facts import MarketplaceFacts
from domain.meta import Actor, ActorKind
from domain.shop import Shop

FIELDS = tuple(c.name for c in COMPETITOR_PRICES.columns)


@dataclass(frozen=True)
class FeedRecord:
    topic: str
    partition: int
    offset: int
    value: bytes

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class FeedReport:
    records: int = 0
    recorded: int = 0
    already_recorded: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (topic[partition]@offset, why)

    def add(self, other: FeedReport) -> None:
        for name in ("records", "recorded", "already_recorded", "duplicates", "out_of_order"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected += other.rejected


class FeedIntake:
    """Takes batches of feed records; remembers each (listing, competitor)'s latest time across
    batches, to count records that arrive out of order (recorded all the same: they are facts)."""

    def __init__(self, facts: MarketplaceFacts, actor_id: str = "feed:competitor-prices"):
        self.facts, self.actor = facts, Actor(actor_id, ActorKind.SERVICE)
        self.latest: dict = {}
        self._tenants: dict[UUID, str | None] = {}

    def take(self, records: list[FeedRecord]) -> FeedReport:
        report, by_shop = FeedReport(records=len(records)), defaultdict(list)
        for record in records:
            shop, row = self._parsed(record)
            if shop is None:
                report.rejected.append((record.where, row))
            else:
                by_shop[shop].append((record, row))
        for shop, rows in by_shop.items():
            report.add(self._take_shop(shop, rows))
        return report

    def _parsed(self, record: FeedRecord) -> tuple[UUID | None, dict | str]:
        try:
            body = json.loads(record.value)
            shop = UUID(str(body["shop_id"]))
        except (ValueError, TypeError, KeyError):
            return None, "not a JSON object with a shop_id"
        if not isinstance(body, dict) or any(isinstance(body.get(n), (dict, list, bool)) for n in FIELDS):
            return None, "fields must be strings or numbers"
        return shop, {n: "" if body.get(n) is None else str(body[n]) for n in FIELDS}

    def _take_shop(self, shop: UUID, rows: list[tuple[FeedRecord, dict]]) -> FeedReport:
        report = FeedReport()
        tenant = self._tenant(shop)
        if tenant is None:
            report.rejected += [(record.where, f"no shop {shop}") for record, _ in rows]
            return report
        ctx = CommandContext(actor=self.actor, tenant_id=tenant)
        table = Table(COMPETITOR_PRICES, {n: n for n in FIELDS}, [(i + 1, row) for i, (_, row) in enumerate(rows)])
        importer = CompetitorPricesImport(self.facts, ctx, shop, b"", rows[0][0].topic, skip_invalid=True)
        importer.latest = self.latest
        summary = importer.run(table)
        report.recorded, report.already_recorded = summary.recorded, summary.already_recorded
        report.duplicates, report.out_of_order = summary.duplicates, summary.out_of_order
        report.rejected += [(rows[p.line - 1][0].where, f"{p.column}: {p.detail}" if p.column else p.detail)
                            for p in summary.problems]
        return report

    def _tenant(self, shop: UUID) -> str | None:
        if shop not in self._tenants:
            try:
                found = self.facts.core.repository.get(shop)
            except AggregateNotFoundError:
                found = None
            self._tenants[shop] = found.tenant_id if isinstance(found, Shop) else None
        return self._tenants[shop]
