"""A server interceptor that counts and times every RPC by method and status code."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from colearn_learner.metrics import LearnerMetrics


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code_of(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()
    if code is None and not failed:
        code = grpc.StatusCode.OK
    elif code is None:
        # A client that went away mid-call leaves no code behind; the call did not fail on its own.
        code = grpc.StatusCode.UNKNOWN if context.is_active() else grpc.StatusCode.CANCELLED
    return code.name


class MetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: LearnerMetrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        labels = (service, method, _rpc_type(handler))
        metrics = self._metrics

        def finish(context: grpc.ServicerContext, start: float, failed: bool) -> None:
            code = _code_of(context, failed)
            metrics.rpc_handled.labels(*labels, code).inc()
            metrics.rpc_seconds.labels(*labels, code).observe(time.perf_counter() - start)

        def timed(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
                metrics.rpc_started.labels(*labels).inc()
                start = time.perf_counter()
                failed = True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    finish(context, start, failed)

            return wrapper

        def timed_stream(
            behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        ) -> Callable[..., Any]:
            def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                metrics.rpc_started.labels(*labels).inc()
                start = time.perf_counter()
                failed = True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    finish(context, start, failed)

            return wrapper

        wrap = timed_stream if handler.response_streaming else timed
        if handler.unary_unary:
            return handler._replace(unary_unary=wrap(handler.unary_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=wrap(handler.unary_stream))
        if handler.stream_unary:
            return handler._replace(stream_unary=wrap(handler.stream_unary))
        return handler._replace(stream_stream=wrap(handler.stream_stream))
