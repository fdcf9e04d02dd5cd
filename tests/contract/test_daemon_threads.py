"""``DaemonThreads``: tasks run on daemon threads that are kept for the next task; tasks that run at once
each get a thread; an escaping exception reaches ``threading.excepthook`` and the thread serves on."""

from __future__ import annotations

import queue
import threading

import pytest
from fork_kit import needs_fork, passes_in_forked_child

from colearn_contract.daemon_threads import DaemonThreads

WAIT = 30  # seconds; only a hang would wait this long


def ran_on(pool: DaemonThreads) -> tuple[threading.Thread, str]:
    """The thread a task ran on, and its name while it ran."""
    done: queue.SimpleQueue[tuple[threading.Thread, str]] = queue.SimpleQueue()
    pool.run(lambda: done.put((threading.current_thread(), threading.current_thread().name)))
    return done.get(timeout=WAIT)


def test_a_thread_is_kept_for_the_next_task() -> None:
    pool = DaemonThreads("test-kept")
    first, name = ran_on(pool)
    assert first is not threading.current_thread() and first.daemon and name == "test-kept"
    # The thread marks itself idle just after its task: a second thread may start meanwhile, never more.
    later = {id(t): t for t, _ in (ran_on(pool) for _ in range(10))}
    assert len({id(first), *later}) <= 2


def test_a_thread_bears_the_pool_s_name_only_while_it_works() -> None:
    pool = DaemonThreads("test-named")
    release = threading.Event()
    pool.run(release.wait, WAIT)
    working = [t for t in threading.enumerate() if t.name == "test-named"]
    assert len(working) == 1
    release.set()
    waited = threading.Event()
    for _ in range(WAIT * 100):  # a hang guard, not a timing assertion
        if working[0].name == "test-named (idle)":
            break
        waited.wait(0.01)
    assert working[0].name == "test-named (idle)" and working[0].is_alive()


def test_tasks_that_run_at_once_each_get_a_thread() -> None:
    pool = DaemonThreads("test-together")
    everyone = threading.Barrier(5, timeout=WAIT)  # four tasks and this test, all waiting together
    for _ in range(4):
        pool.run(everyone.wait)
    everyone.wait()


def test_an_escaping_exception_reaches_the_excepthook(monkeypatch: pytest.MonkeyPatch) -> None:
    hooked: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.put(args.exc_value))
    pool = DaemonThreads("test-raises")

    def fail() -> None:
        raise RuntimeError("boom")

    pool.run(fail)
    error = hooked.get(timeout=WAIT)
    assert isinstance(error, RuntimeError) and str(error) == "boom"
    assert ran_on(pool)[1] == "test-raises"  # the pool still serves


@needs_fork
def test_a_forked_child_starts_threads_of_its_own() -> None:
    pool = DaemonThreads("test-fork")
    ran_on(pool)  # an idle thread in the parent, which the child does not get
    assert passes_in_forked_child(lambda: ran_on(pool)[1] == "test-fork")
