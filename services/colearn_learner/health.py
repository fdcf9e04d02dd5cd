"""gRPC health for a learner: the process and the model are reported separately.

Service ``""`` is SERVING once the server listens (liveness). Service ``colearn.v1.Learner`` is SERVING
only while a model is set up (readiness for rounds). On shutdown both turn NOT_SERVING first, so that
load balancers and the backend stop sending work before the server stops taking calls.

``Watch`` streams are non-blocking: an open one holds no worker thread, so any number of watchers (they
need no token) cannot take the threads that serve rounds and probes. Every interceptor keeps that flag
(``colearn_learner.interceptors``). At shutdown, once the watchers have been told NOT_SERVING, their
streams are ended, so that they do not hold the server open for the whole grace period.

gRPC's send for a non-blocking stream waits until the message is handed to the transport, and grpcio's
health servicer sends while it holds its lock; a watcher that goes away at that moment needs the same
lock in gRPC's event thread, which the send waits for: a deadlock. So the watchers' messages go out on
one sender thread of their own, in order, and nothing sends while holding a lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from colearn_contract import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Watch:
    """One open Watch stream: its responses go out in order on the sender thread, and ``end()`` closes it
    with OK, once."""

    def __init__(self, send: Callable[[Any], None], sender: ThreadPoolExecutor) -> None:
        self._send = send
        self._sender = sender
        self._lock = threading.Lock()
        self._ended = False

    def send(self, response: Any) -> None:
        with self._lock:
            if self._ended:
                return  # the stream is closed: gRPC answers a second status with an error
            self._ended = response is None
            with contextlib.suppress(RuntimeError):  # the sender stopped: the server is gone
                self._sender.submit(self._send, response)

    def end(self) -> None:
        self.send(None)


class _EndableHealthServicer(health.HealthServicer):
    """grpcio's health servicer, whose open Watch streams can be ended at shutdown."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._watches: set[_Watch] = set()
        self._watches_lock = threading.Lock()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner-health-watch")

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> Any:
        if send_response_callback is None:  # a server without non-blocking support: a blocking stream
            return super().Watch(request, context)
        watch = _Watch(send_response_callback, self._sender)
        with self._watches_lock:
            self._watches.add(watch)

        def forget() -> None:
            with self._watches_lock:
                self._watches.discard(watch)

        context.add_callback(forget)
        return super().Watch(request, context, watch.send)

    def end_watches(self) -> None:
        with self._watches_lock:
            watches = list(self._watches)
        for watch in watches:
            watch.end()

    def close(self) -> None:
        """Stops the sender thread once the server has stopped (a send to a stopped server returns)."""
        self._sender.shutdown(wait=False)


class LearnerHealth:
    def __init__(self) -> None:
        self.servicer = _EndableHealthServicer()
        self.servicer.set("", NOT_SERVING)
        self.servicer.set(SERVICE_NAME, NOT_SERVING)

    def listening(self) -> None:
        self.servicer.set("", SERVING)

    def model_ready(self, ready: bool) -> None:
        self.servicer.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)

    def shutting_down(self) -> None:
        """Every service turns NOT_SERVING for good; watchers are told so."""
        self.servicer.enter_graceful_shutdown()

    def end_watches(self) -> None:
        """Closes every open Watch stream (with OK), so that none holds the server open while it drains."""
        self.servicer.end_watches()

    def close(self) -> None:
        self.servicer.close()
