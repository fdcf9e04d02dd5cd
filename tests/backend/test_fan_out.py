"""``fan_out``: every call's result or exception by index, at most ``MAX_CONCURRENT_CALLS`` at a time per
call, and threads kept between calls without one fan-out ever waiting for another's threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fork_kit import needs_fork, passes_in_forked_child

from backend_client import fan_out as fan_out_module
from backend_client.fan_out import fan_out


def test_every_result_and_every_exception_by_index() -> None:
    def call(i: int) -> int:
        if i == 2:
            raise ValueError("two")
        return i * 10

    outcomes = fan_out(call, range(4))
    assert sorted(outcomes) == [0, 1, 2, 3]
    assert [outcomes[i] for i in (0, 1, 3)] == [0, 10, 30]
    assert isinstance(outcomes[2], ValueError)
    assert fan_out(call, []) == {}


def test_at_most_the_bound_at_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fan_out_module, "MAX_CONCURRENT_CALLS", 3)
    lock = threading.Lock()
    running, peak = 0, 0
    full = threading.Barrier(3, timeout=30)  # the first three must all be running together

    def call(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if i < 3:
            full.wait()
        with lock:
            running -= 1
        return i

    outcomes = fan_out(call, range(20))
    assert outcomes == {i: i for i in range(20)}
    assert peak == 3


@pytest.fixture
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A pool of its own, with no threads that other tests left idle."""
    monkeypatch.setattr(fan_out_module, "_pool", None)
    yield
    pool = fan_out_module._pool
    if pool is not None:
        pool.shutdown()


def test_threads_are_kept_between_calls(fresh_pool: None) -> None:
    used = [fan_out(lambda i: threading.current_thread(), range(2)) for _ in range(10)]
    threads = {id(t): t for outcome in used for t in outcome.values()}  # the objects stay alive: ids differ
    assert threading.current_thread() not in threads.values()
    # A thread per call and learner would be 20. Two run each call; a third or fourth may start when a
    # call comes before an earlier call's thread has marked itself idle.
    assert len(threads) <= 4


def test_a_fan_out_inside_a_fan_out_gets_threads_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fan_out_module, "MAX_CONCURRENT_CALLS", 2)
    everyone = threading.Barrier(4, timeout=30)  # two outer calls, each waiting on two inner ones

    def inner(i: int) -> int:
        everyone.wait()
        return i

    def outer(i: int) -> dict[int, int | BaseException]:
        return fan_out(inner, [2 * i, 2 * i + 1])

    outcomes = fan_out(outer, range(2))
    assert outcomes == {0: {0: 0, 1: 1}, 1: {2: 2, 3: 3}}


@needs_fork
def test_a_forked_child_gets_threads_of_its_own() -> None:
    fan_out(lambda i: i, [0])  # the parent's pool exists, with a thread
    # The child's copy of the pool has no threads; a fan-out must still finish.
    assert passes_in_forked_child(lambda: fan_out(lambda i: i + 1, range(3)) == {0: 1, 1: 2, 2: 3})
