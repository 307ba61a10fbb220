"""The event codec: domain events <-> the bytes the event store holds, one definition for every
side. The write application encodes with it; the projector, the relay, the sinks, the workers and
every reader decode with it, without building the write application.

Events are stored by the eventsourcing library's JSON transcoder plus the transcodings below (our
value objects); each event's topic is its class's module path and name, so domain classes stay
where they are (or their old topic is registered). Connections that read stored times
use `time_loaders.reading_adapters()`, which reads any time PostgreSQL holds.
"""

from __future__ import annotations

import json
from dataclasses import fields
from decimal import Decimal
from functools import lru_cache
from json.encoder import encode_basestring
from operator import attrgetter
from uuid import UUID

from eventsourcing.persistence import (DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, StoredEvent, Transcoder,
                                       Transcoding, UUIDAsHex)
from eventsourcing.utils import get_topic

from domain.facts import ObservationBatch, SalesBatch
from domain.listing import Automation, Guardrails
from domain.meta import EventMeta
from domain.money import Money
from domain.orders import OrderBatch
from domain.rules import RecommendationRun, Rule


# -- how our value objects are stored inside events -------------------------------------------
class MoneyAsDict(Transcoding):
    type = Money
    name = "money"

    def encode(self, obj: Money) -> list[str]:
        return [str(obj.amount), obj.currency]

    def decode(self, data: list[str]) -> Money:
        return Money(Decimal(data[0]), data[1])


class EventMetaAsDict(Transcoding):
    type = EventMeta
    name = "meta"

    def encode(self, obj: EventMeta) -> dict:
        # A literal rather than a loop over the fields: this runs once per event, 10,000 per batch.
        return {"shop_id": obj.shop_id, "actor_id": obj.actor_id, "actor_kind": obj.actor_kind,
                "source": obj.source, "reason": obj.reason, "command_id": obj.command_id,
                "correlation_id": obj.correlation_id, "causation_id": obj.causation_id,
                "occurred_at": obj.occurred_at}

    def decode(self, data: dict) -> EventMeta:
        return EventMeta(**data)


class GuardrailsAsDict(Transcoding):
    type = Guardrails
    name = "guardrails"

    def encode(self, obj: Guardrails) -> dict:
        # Automation limits are written only when set: guardrails without them keep their old form.
        limits = {name: getattr(obj, name) for name in AUTOMATION_LIMITS if getattr(obj, name) is not None}
        return {"floor": obj.floor, "ceiling": obj.ceiling, "cost": obj.cost, **limits}

    def decode(self, data: dict) -> Guardrails:
        return Guardrails(**data)


AUTOMATION_LIMITS = ("min_margin", "max_step_percent", "max_daily_changes", "cooldown_minutes")


class SlotsAsDict(Transcoding):
    """A slotted value object as a dict of its fields; `tuples` come back as tuples, not lists.
    `added` fields (defaulting to None, added after events were stored) are written only when set:
    objects without them keep their old stored form, and old events decode to the default."""

    tuples: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    def encode(self, obj) -> dict:
        return {f: getattr(obj, f) for f in self.type.__slots__
                if f not in self.added or getattr(obj, f) is not None}

    def decode(self, data: dict):
        return self.type(**{**data, **{f: tuple(data[f]) for f in self.tuples}})


class RuleAsDict(SlotsAsDict):
    type = Rule
    name = "rule"
    tuples = ("include", "exclude")
    added = ("max_run_age_hours", "days")


class AutomationAsDict(SlotsAsDict):
    type = Automation
    name = "automation"
    tuples = ("clamps", "reasons", "observations")
    added = ("model_run", "experiment", "inputs")


class RecommendationRunAsDict(SlotsAsDict):
    type = RecommendationRun
    name = "recommendation_run"


TRANSCODINGS = (MoneyAsDict(), EventMetaAsDict(), GuardrailsAsDict(), RuleAsDict(), AutomationAsDict(),
                RecommendationRunAsDict())


# -- the mapper, with direct paths for the events recorded 10,000 at a time ------------------
class PricingMapper(Mapper):
    """The library's mapper, except that the facts recorded in bulk (competitor observations,
    sales and returns, orders) are written by string templates instead of the JSON encoder
    walking nested dicts with per-object callbacks (most of a batch's encoding time). The bytes
    are exactly those the library's transcoder writes (tests/test_transcodings.py holds each
    template to that), so every reader decodes them the ordinary way."""

    def to_stored_event(self, domain_event) -> StoredEvent:
        template = _TEMPLATES.get(type(domain_event))
        if template is None or self.compressor or self.cipher:
            return super().to_stored_event(domain_event)
        topic, encode = template
        return StoredEvent(domain_event.originator_id, domain_event.originator_version, topic, encode(domain_event))


_PLAIN_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # the transcoder's settings


# Each writes the transcoder's output for one event, field order included. What a batch shares
# (its time, the meta's provenance, listing ids, sources, days) is encoded once and cached.
def _observed_json(e) -> bytes:
    return (f'{{"timestamp":{_datetime_json(e.timestamp)},"listing_id":{_uuid_json(e.listing_id)},'
            f'"competitor":{encode_basestring(e.competitor)},"price":{_money_json(e.price)},'
            f'"source":{_json_str(e.source)},{_meta_json(e.meta)}}}').encode()


def _sale_json(e) -> bytes:
    """SalesBatch.Sold and .Returned."""
    return (f'{{"timestamp":{_datetime_json(e.timestamp)},"listing_id":{_uuid_json(e.listing_id)},'
            f'"quantity":{int.__repr__(e.quantity)},"unit_price":{_money_json(e.unit_price)},'
            f'"order_id":{encode_basestring(e.order_id)},"transaction_id":{encode_basestring(e.transaction_id)},'
            f'{_meta_json(e.meta)}}}').encode()


def _order_json(e) -> bytes:
    """OrderBatch.OrderRecorded."""
    totals = ",".join(f"{encode_basestring(name)}:{_money_json(money)}" for name, money in e.totals.items())
    return (f'{{"timestamp":{_datetime_json(e.timestamp)},"order_id":{encode_basestring(e.order_id)},'
            f'"buyer":{_optional_str(e.buyer)},"items":{_optional_int(e.items)},"status":{_optional_str(e.status)},'
            f'"totals":{{{totals}}},{_meta_json(e.meta)}}}').encode()


def _money_json(money: Money) -> str:
    return f'{{"_type_":"{MoneyAsDict.name}","_data_":["{money.amount}",{_json_str(money.currency)}]}}'


def _meta_json(m: EventMeta) -> str:
    return (f'"meta":{{"_type_":"{EventMetaAsDict.name}","_data_":{_meta_head(*_provenance(m))}'
            f'"occurred_at":{_moment_json(m.occurred_at, m.occurred_at.utcoffset())}}}}}')


def _optional_str(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _optional_int(value: int | None) -> str:
    return "null" if value is None else int.__repr__(value)


def _iso_json(value) -> str:
    return f'{{"_type_":"{DatetimeAsISO.name}","_data_":"{value.isoformat()}"}}'


_datetime_json = lru_cache(maxsize=64)(_iso_json)  # a batch's events share its timestamp (always UTC)


@lru_cache(maxsize=4096)
def _moment_json(value, offset) -> str:
    """A business time (sales share their days), cached by instant and offset: the same instant
    at another offset is an equal datetime but writes other text."""
    return _iso_json(value)


# The string encoder of ensure_ascii=False; cached for the few values a batch repeats (sources,
# currencies), not for competitor references or ids, which rarely repeat (a miss costs 2.5x a call).
_json_str = lru_cache(maxsize=4096)(encode_basestring)


@lru_cache(maxsize=4096)
def _uuid_json(value: UUID) -> str:
    return f'{{"_type_":"{UUIDAsHex.name}","_data_":"{value.hex}"}}'


# EventMeta's fields before occurred_at (its last), in the order EventMetaAsDict writes them.
_PROVENANCE_FIELDS = tuple(f.name for f in fields(EventMeta))[:-1]
_provenance = attrgetter(*_PROVENANCE_FIELDS)


@lru_cache(maxsize=64)
def _meta_head(*provenance) -> str:
    """Every meta field before occurred_at (the same for a whole batch), as `{"shop_id":...,`."""
    return _PLAIN_JSON.encode(dict(zip(_PROVENANCE_FIELDS, provenance, strict=True)))[:-1] + ","


_TEMPLATES = {cls: (get_topic(cls), encode) for cls, encode in (
    (ObservationBatch.CompetitorPriceObserved, _observed_json), (SalesBatch.Sold, _sale_json),
    (SalesBatch.Returned, _sale_json), (OrderBatch.OrderRecorded, _order_json))}


def transcoder() -> Transcoder:
    """The library's JSON transcoder with its own transcodings and ours, as the write side registers them."""
    json_transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), *TRANSCODINGS):
        json_transcoder.register(transcoding)
    return json_transcoder


def new_mapper() -> PricingMapper:
    return PricingMapper(transcoder=transcoder())


_MAPPER = new_mapper()
# Stored event -> domain event (upcast on the way): what every follower and reader is given to decode.
to_domain_event = _MAPPER.to_domain_event
