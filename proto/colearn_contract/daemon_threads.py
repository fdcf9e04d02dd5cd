"""Daemon threads that are kept for the next task instead of ending with each one.

A learner reads every upload on a helper thread and a backend relays every proposal on one: a thread
started per call, on a busy machine, waits to be scheduled before the call can go on, and that was a
measurable part of the fixed cost of a small round (BENCHMARKS.md, issue 16). ``DaemonThreads.run``
hands a task to an idle thread, or starts one when none is idle, so each thread is started once and the
number kept is the most that were ever busy at once. A thread bears the pool's name while it runs a task,
and that name with " (idle)" while it waits for the next: what a thread dump or a test sees is what works.

The threads are daemon threads, as the threads they replace were: a task that never ends (a stream that
hangs) does not hold the process at exit. A task's exceptions are its own to handle: one that escapes
goes to ``threading.excepthook``, as it would from a thread of its own, and the thread goes on serving.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

_Task = tuple[Callable[..., object], tuple[object, ...]]


class DaemonThreads:
    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._idle = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget_threads)

    def _forget_threads(self) -> None:
        """In a forked child: the parent's threads did not come along, and its lock may be held."""
        self._lock, self._tasks, self._idle = threading.Lock(), queue.SimpleQueue(), 0

    def run(self, target: Callable[..., object], *args: object) -> None:
        """Runs ``target(*args)`` on an idle thread, or on a new one when none is idle."""
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that thread is promised to this task: every queued task has a taker
            tasks = self._tasks
            tasks.put((target, args))
        if start:
            threading.Thread(target=self._serve, args=(tasks,), name=self._name, daemon=True).start()

    def _serve(self, tasks: queue.SimpleQueue[_Task]) -> None:
        me = threading.current_thread()
        while True:
            target, args = tasks.get()
            me.name = self._name
            try:
                target(*args)
            except BaseException as exc:  # as from a thread of its own; this thread goes on serving
                threading.excepthook(
                    threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, threading.current_thread()))
                )
            del target, args
            me.name = f"{self._name} (idle)"
            with self._lock:
                if tasks is not self._tasks:
                    return  # the pool was replaced (only in a forked child, whose threads these are not)
                self._idle += 1
