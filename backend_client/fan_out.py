"""Calls many learners at once, so that a round lasts as long as its slowest learner, not their sum."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")

# Threads only wait on the network here, so one per learner is cheap; the bound keeps a 1,000-learner
# fleet from starting 1,000 threads.
MAX_CONCURRENT_CALLS = 64

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's threads did not come along, and its lock may be held."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _threads() -> ThreadPoolExecutor:
    """The process's fan-out threads, kept between calls: starting a thread per call and per learner
    was a measurable part of the fixed cost of a small round (BENCHMARKS.md, issue 16). The executor
    itself sets no bound (``fan_out`` bounds each call), so that two fan-outs at once, or one inside
    another, never wait for each other's threads: each gets the threads it would have started itself. A
    thread is started only when none is idle, so the pool holds as many as the busiest moment needed. A
    forked child starts its own (``_forget_pool``)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=sys.maxsize, thread_name_prefix="fan-out")
        return _pool


def fan_out(call: Callable[[int], _T], indices: Iterable[int]) -> dict[int, _T | BaseException]:
    """Runs ``call(i)`` for every index concurrently, at most ``MAX_CONCURRENT_CALLS`` at a time; each
    result is a value or the exception it raised."""
    indices = list(indices)
    if not indices:
        return {}
    pool = _threads()
    slots = threading.BoundedSemaphore(MAX_CONCURRENT_CALLS)
    futures: dict[int, Future[_T]] = {}
    for i in indices:
        slots.acquire()
        futures[i] = pool.submit(call, i)
        futures[i].add_done_callback(lambda _: slots.release())
    return {i: (f.exception() or f.result()) for i, f in futures.items()}
