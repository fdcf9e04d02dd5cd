"""Calls many learners at once, so that a round lasts as long as its slowest learner, not their sum."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")

# Threads only wait on the network here, so one per learner is cheap; the bound keeps a 1,000-learner
# fleet from starting 1,000 threads.
MAX_CONCURRENT_CALLS = 64


def fan_out(call: Callable[[int], _T], indices: Iterable[int]) -> dict[int, _T | BaseException]:
    """Runs ``call(i)`` for every index concurrently; each result is a value or the exception it raised."""
    indices = list(indices)
    if not indices:
        return {}
    with ThreadPoolExecutor(
        max_workers=min(MAX_CONCURRENT_CALLS, len(indices)), thread_name_prefix="fan-out"
    ) as pool:
        futures = {i: pool.submit(call, i) for i in indices}
    return {i: (f.exception() or f.result()) for i, f in futures.items()}
