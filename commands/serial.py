"""One writer at a time per aggregate within a process.

Without it, concurrent commands on one hot listing in one process all decided on the same
version, all but one lost at the event store's key, and the losers raced again: with sixteen
clients some ran out of retries (a Conflict) although no client asked for optimistic concurrency.
Held around a command's decide-and-save, these locks leave the retries to races with other
processes (another worker, `etsypro reprice`, another host).

The locks are striped: a fixed array, each aggregate id hashed to one stripe, so memory stays
flat however many aggregates a process touches (two aggregates may share a stripe: they then
wait for each other, which costs time, never correctness). A command holding several stripes
acquires them in ascending order, so two commands can never wait for each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from threading import RLock
from types import TracebackType

STRIPES = 1024
WAIT_SECONDS = 30.0  # longer than any one save can hold a stripe (each try's database lock wait is bounded)


class WriterBusy(Exception):
    """A stripe stayed held for WAIT_SECONDS: the writers ahead of this one are stuck."""


class WriterLocks:
    """The process's stripes; `hold()` gives one command's hold on some of them."""

    def __init__(self, stripes: int = STRIPES, wait_seconds: float = WAIT_SECONDS):
        # Re-entrant: a command run from inside another's decision must not wait for itself.
        self._locks = [RLock() for _ in range(stripes)]
        self.wait_seconds = wait_seconds

    def stripes_of(self, aggregate_ids: Iterable) -> set[int]:
        return {hash(aggregate_id) % len(self._locks) for aggregate_id in aggregate_ids}

    def hold(self, aggregate_ids: Iterable = ()) -> "Hold":
        return Hold(self).extend(aggregate_ids)

    def acquire(self, stripe: int) -> bool:
        return self._locks[stripe].acquire(timeout=self.wait_seconds)

    def release(self, stripe: int) -> None:
        self._locks[stripe].release()


class Hold:
    """The stripes one command holds; a context manager that releases them all."""

    def __init__(self, locks: WriterLocks):
        self._locks, self._held = locks, []

    def extend(self, aggregate_ids: Iterable) -> "Hold":
        """Also hold these aggregates' stripes. A stripe below one already held cannot be waited for
        in order, so then all are released and taken again in ascending order."""
        wanted = self._locks.stripes_of(aggregate_ids) - set(self._held)
        if not wanted:
            return self
        if self._held and min(wanted) < self._held[-1]:
            wanted |= set(self._held)
            self.release()
        for stripe in sorted(wanted):
            if not self._locks.acquire(stripe):
                self.release()
                raise WriterBusy
            self._held.append(stripe)
        return self

    def release(self) -> None:
        while self._held:
            self._locks.release(self._held.pop())

    def __enter__(self) -> "Hold":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
