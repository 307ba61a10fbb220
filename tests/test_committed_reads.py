"""A command's first try decides on the listing as this process last committed it, without a query
(commands/committed.py). Two engines on one database stand for two worker processes: each change
made through one leaves the other's memory stale, and every answer must still be the one fresh
state gives."""

from __future__ import annotations

from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate

from commands import models
from commands.context import CommandContext
from commands.core import SNAPSHOT_EVERY
from commands.engine import PricingEngine
from domain.errors import Conflict
from domain.errors import DomainError
from domain.listing import Listing
from domain.meta import Actor
from domain.money import Money

CTX = CommandContext(actor=Actor("tester"), tenant_id="committed-reads")


@pytest.fixture
def engines(new_database):
    url = new_database()
    first, second = PricingEngine(url, pool_size=2), PricingEngine(url, pool_size=2)
    yield first, second
    first.close()
    second.close()


@pytest.fixture
def listing(engines) -> tuple[UUID, UUID]:
    """(shop, listing) at 20.00 within 10.00-40.00, saved through the first engine (which remembers it)."""
    first, _ = engines
    shop = UUID(first.listings.open_shop(CTX, models.OpenShop(name="Mugs", currency="GBP")).body["shop_id"])
    registered = first.listings.register_listings(CTX, shop, models.RegisterListings.model_validate({"listings": [
        {"external_id": "e1", "sku": "S1", "title": "Mug", "price": "20.00", "currency": "GBP",
         "floor": "10.00", "ceiling": "40.00"}]}))
    return shop, UUID(registered.body["listings"][0]["listing_id"])


def set_price(engine: PricingEngine, shop: UUID, listing: UUID, price: str, **extra):
    return engine.listings.set_price(CTX, shop, listing, models.SetPrice(price=price, currency="GBP", **extra)).body


def set_floor(engine: PricingEngine, shop: UUID, listing: UUID, floor: str):
    return engine.listings.set_guardrails(CTX, shop, listing, models.SetGuardrails(floor=floor, ceiling="40.00",
                                                                          currency="GBP")).body


def changes(engine: PricingEngine, listing: UUID) -> list[tuple[int, str, str]]:
    return [(e.originator_version, str(e.previous.amount), str(e.price.amount))
            for e in engine.core.events.get(listing) if isinstance(e, Listing.PriceChanged)]


def selects_while(engine: PricingEngine, action) -> int:
    """How many times `action` read a stream's events from the database."""
    calls, select = [], engine.core.recorder.select_events
    engine.core.recorder.select_events = lambda *a, **kw: calls.append(a) or select(*a, **kw)
    try:
        action()
    finally:
        del engine.core.recorder.select_events
    return len(calls)


def test_a_change_to_a_listing_this_process_saved_last_reads_nothing_first(engines, listing):
    first, _ = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    assert selects_while(first, lambda: set_price(first, shop, listing_id, "22.00")) == 0
    assert changes(first, listing_id)[-1] == (3, "21.00", "22.00")


def test_a_change_after_another_process_wrote_lands_after_it_and_names_its_price(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")   # the first remembers version 2
    set_price(second, shop, listing_id, "25.00")  # version 3, unknown to the first
    answer = set_price(first, shop, listing_id, "22.00")
    assert (answer["version"], answer["changed"]) == (4, True)
    assert changes(first, listing_id) == [(2, "20.00", "21.00"), (3, "21.00", "25.00"), (4, "25.00", "22.00")]


def test_the_version_another_process_moved_to_is_the_expected_one(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    set_price(second, shop, listing_id, "25.00")
    assert set_price(first, shop, listing_id, "22.00", expected_version=3)["version"] == 4


def test_an_expected_version_the_memory_still_shows_is_refused_with_the_current_one(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    set_price(second, shop, listing_id, "25.00")
    with pytest.raises(Conflict) as refused:
        set_price(first, shop, listing_id, "22.00", expected_version=2)
    assert refused.value.extra["current_version"] == 3
    assert changes(first, listing_id)[-1] == (3, "21.00", "25.00")


def test_a_price_another_process_made_legal_is_accepted(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    set_floor(second, shop, listing_id, "5.00")
    assert set_price(first, shop, listing_id, "8.00")["version"] == 4


def test_a_price_another_process_made_illegal_is_refused(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    set_floor(second, shop, listing_id, "15.00")
    with pytest.raises(DomainError):
        set_price(first, shop, listing_id, "12.00")
    assert len(changes(first, listing_id)) == 1


def test_the_price_the_memory_shows_is_set_again_when_another_process_changed_it(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    set_price(second, shop, listing_id, "25.00")
    answer = set_price(first, shop, listing_id, "21.00")  # unchanged in the first's memory, not in fact
    assert (answer["changed"], answer["price"], answer["version"]) == (True, "21.00", 4)


def test_reads_outside_a_command_see_other_processes_writes(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    set_price(second, shop, listing_id, "25.00")
    assert str(first.core.listing(CTX, shop, listing_id).price.amount) == "25.00"


def test_the_memory_is_a_copy_a_saver_cannot_change_afterwards(engines, listing):
    first, _ = engines
    shop, listing_id = listing
    mine = first.core.listing(CTX, shop, listing_id)
    mine.change_price(Money.price("23.00", "GBP"), CTX.meta(shop))
    first.core.save(mine)  # version 2, remembered
    mine.price = Money.price("99.00", "GBP")  # changed after the save, never saved
    set_price(first, shop, listing_id, "22.00")
    assert changes(first, listing_id)[-1] == (3, "23.00", "22.00")


def test_only_what_a_save_wrote_is_remembered(engines, listing):
    first, second = engines
    shop, listing_id = listing
    set_price(first, shop, listing_id, "21.00")
    second.core.save(second.core.repository.get(listing_id, version=1))  # an old state, nothing to store
    assert second.core.repository.committed.recall(listing_id) is None
    set_price(second, shop, listing_id, "22.00")
    assert second.core.repository.committed.recall(listing_id).version == 3


def test_a_listings_snapshot_is_its_committed_state_taken_without_reading_its_events(engines, listing):
    first, second = engines
    shop, listing_id = listing
    for n in range(1, SNAPSHOT_EVERY - 1):  # versions 2 .. SNAPSHOT_EVERY - 1
        set_price(first, shop, listing_id, f"{20 + n % 7}.50")
    assert selects_while(first, lambda: set_price(first, shop, listing_id, "31.00")) == 0  # the snapshot's version
    [snapshot] = first.core.snapshots.get(listing_id, desc=True, limit=1)
    assert snapshot.originator_version == SNAPSHOT_EVERY
    replayed = project_aggregate(None, second.core.events.get(listing_id, lte=SNAPSHOT_EVERY))  # events only
    assert snapshot.state == Listing.Snapshot.take(replayed).state
