"""The Etsy call budget on a virtual clock, property-based: whatever limits Etsy's headers tell
between calls, the next call waits a whole interval of the limit last told (a limit lowered
mid-stream re-spaces the slot already planned for the old one)."""

from __future__ import annotations

import httpx
from hypothesis import given
from hypothesis import strategies as st

from streams.etsy_client import PACE, Budget


class VirtualClock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@given(st.lists(st.integers(min_value=1, max_value=200), min_size=2, max_size=40))
def test_each_call_is_spaced_by_the_limit_last_told(limits):
    clock = VirtualClock()
    budget = Budget(per_second=limits[0], clock=clock, sleep=clock.sleep)
    slots = []
    for limit in limits:
        budget.take()
        slots.append(clock.now)
        budget.told(httpx.Headers({"x-limit-per-second": str(limit), "x-remaining-this-second": str(limit)}))
    for (at, told), next_at in zip(zip(slots, limits), slots[1:]):
        assert next_at - at >= 1 / (told * PACE) - 1e-9


@given(st.integers(min_value=2, max_value=50), st.integers(min_value=1, max_value=49))
def test_no_second_holds_more_calls_than_the_limit_after_it_is_lowered(high, low):
    clock = VirtualClock()
    budget = Budget(per_second=high, clock=clock, sleep=clock.sleep)
    slots = []
    for i in range(3 * high):
        budget.take()
        slots.append(clock.now)
        budget.told(httpx.Headers({"x-limit-per-second": str(high if i < high else min(low, high)),
                                   "x-remaining-this-second": "1"}))
    lowered = slots[high:]  # every call after the headers told the lower limit
    for start in lowered:
        assert sum(1 for at in lowered if start <= at < start + 1) <= min(low, high)
