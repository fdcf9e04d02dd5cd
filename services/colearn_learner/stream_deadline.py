"""A server-side deadline for receiving one client stream, so that a stalled sender cannot hold a model slot.

gRPC-Python blocks the handler's thread inside ``next(request_iterator)`` until the next message comes,
and a server cannot set a deadline on a call: only the client can. A client that opens ``TestWeights``,
sends one part and then goes quiet (a hung process, a half-open connection, a deliberate slowloris)
would hold a worker thread and one of the few model slots until the client's own deadline, if it set
one at all. So the messages are read on a helper thread and handed over through a small queue, and the
handler waits on that queue only until the stream's deadline. When the deadline passes, the handler
answers DEADLINE_EXCEEDED and returns; the end of the call then ends the helper's read as well.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

from colearn_contract.daemon_threads import DaemonThreads
from colearn_learner.errors import StreamDeadlineError

_T = TypeVar("_T")
_END = object()
_HANDOFF_DEPTH = 2  # parts read ahead of the consumer: enough to overlap the network with hashing
_PUT_POLL_SECONDS = 0.2  # how often a reader blocked on a full queue checks that the consumer still wants it
#: The helper threads, kept from one stream to the next rather than started for each.
_READERS = DaemonThreads("learner-stream-reader")


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def within_deadline(messages: Iterator[_T], seconds: float, what: str) -> Iterator[_T]:
    """Yields ``messages`` as they come, and raises ``StreamDeadlineError`` once ``seconds`` have passed
    since the first ``next()`` without the stream having ended. Errors of the stream itself (a cancelled
    call, a message that does not parse) come out unchanged, in order."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=_HANDOFF_DEPTH)
    abandoned = threading.Event()

    def hand_over(item: object) -> bool:
        while not abandoned.is_set():
            try:
                handoff.put(item, timeout=_PUT_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for message in messages:
                if not hand_over(message):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in the handler's thread
            hand_over(_Failure(exc))
            return
        hand_over(_END)

    deadline = time.monotonic() + seconds
    _READERS.run(read)
    try:
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise queue.Empty
                item = handoff.get(timeout=remaining)
            except queue.Empty:
                raise StreamDeadlineError(
                    f"{what} did not finish within this learner's stream deadline of {seconds:g} s "
                    "(stream_timeout_seconds); the stream was cut off"
                ) from None
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        abandoned.set()
