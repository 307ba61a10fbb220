"""A command's first try reads listings as this process last committed them, without a query.

The library's aggregate cache fast-forwards a cached aggregate on every load: one query per
command, asking whether another process wrote since (a round trip and a large share of a price
change's CPU). A command that writes the listing it read need not ask first: its
events are stored at the next version only if nobody took that version meanwhile (the event
store's primary key), so a decision made on stale state fails at the write, and the command
decides again on fresh state (commands/engine.py, `execute`).

That covers only decisions that end in a write of every listing read from memory. Any other
outcome of the first try — a refusal, a conflict, nothing to change, a listing read but not written —
might be an artefact of stale state, so it is decided again on fresh state before anyone sees it.
Later tries, and every read outside a command's first try (queries, auditors, the repricing
policy), load through the library's cache as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from copy import deepcopy
from threading import Lock
from typing import Any
from uuid import UUID

from eventsourcing.application import LRUCache, Repository

from domain.listing import Listing

# The listings a command's first try read from memory, by id (None: not in a first try).
_read_from_memory: ContextVar[dict[UUID, int] | None] = ContextVar("read_from_memory", default=None)


class StaleRead(Exception):
    """A first try's decision may rest on stale state: decide again on fresh state."""


class CommittedListings:
    """The last committed state of the listings this process saved (LRU), never mutated in place:
    each is a copy taken at commit, handed out as a copy."""

    def __init__(self, maxsize: int):
        self._listings: LRUCache[UUID, Listing] = LRUCache(maxsize)
        self._lock = Lock()  # a commit must not replace a newer state with an older one

    def remember(self, aggregates: dict[UUID, Any], events: Iterable[Any]) -> None:
        """Keep the listings among a save's aggregates that it wrote events for (a save may name
        an aggregate it did not change, such as an older state read for a decision)."""
        listings = {i: a for i, a in aggregates.items() if isinstance(a, Listing)}
        if not listings:  # a batch's 10,000 events are not walked for nothing
            return
        for listing_id in {e.originator_id for e in events if e.originator_id in listings}:
            committed = deepcopy(listings[listing_id])  # the saver may go on changing its own object
            with self._lock:
                known = self.recall(listing_id, copy=False)
                if known is None or known.version < committed.version:
                    self._listings.put(listing_id, committed)

    def recall(self, listing_id: UUID, copy: bool = True) -> Listing | None:
        try:
            listing = self._listings.get(listing_id)
        except KeyError:
            return None
        return deepcopy(listing) if copy else listing


class PricingRepository(Repository):
    """The library's repository, which a command's first try asks for committed listings first."""

    def __init__(self, *args, committed: CommittedListings, **kwargs):
        super().__init__(*args, **kwargs)
        self.committed = committed

    def get(self, aggregate_id, *, version: int | None = None, **kwargs):
        reads = _read_from_memory.get()
        if reads is not None and version is None:
            listing = self.committed.recall(aggregate_id)
            if listing is not None:
                reads[aggregate_id] = listing.version
                return listing
        return super().get(aggregate_id, version=version, **kwargs)


@contextmanager
def first_try() -> Iterator[dict[UUID, int]]:
    """Within: listings load from memory where they can; yields the ids and versions so read."""
    reads: dict[UUID, int] = {}
    token = _read_from_memory.set(reads)
    try:
        yield reads
    finally:
        _read_from_memory.reset(token)


def check_written(reads: dict[UUID, int], aggregates: Iterable[Any]) -> None:
    """StaleRead unless every listing read from memory is written at the version after the one read,
    where the event store's key refuses the write if the memory was stale."""
    next_version = {a.id: a.pending_events[0].originator_version for a in aggregates if a.pending_events}
    if any(next_version.get(listing_id) != version + 1 for listing_id, version in reads.items()):
        raise StaleRead
