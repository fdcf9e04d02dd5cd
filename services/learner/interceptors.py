"""A server interceptor that counts and times every RPC by method and status code."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from colearn_contract import SERVICE_NAME
from colearn_learner.errors import BadRequestError
from colearn_learner.metrics import LearnerMetrics


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _wrap_behavior(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> grpc.RpcMethodHandler:
    """The same handler with its one behavior (whichever of the four kinds it is) wrapped."""
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: wrap(behavior)})
    return handler


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

        return _wrap_behavior(handler, timed_stream if handler.response_streaming else timed)


class _Undecodable:
    def __init__(self, error: Exception) -> None:
        self.error = error


class RequestDecodingInterceptor(grpc.ServerInterceptor):
    """Answers a request that does not parse with INVALID_ARGUMENT.

    gRPC-Python answers such a request with INTERNAL ("Exception deserializing request!") before any
    handler runs; malformed bytes are the client's mistake, and the client should be told so.
    """

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        if handler.request_streaming and not handler_call_details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler  # only the learner's own streaming handlers map BadRequestError to a status
        deserialize = handler.request_deserializer
        method = handler_call_details.method

        def tolerant(data: bytes) -> Any:
            try:
                return deserialize(data)
            except Exception as exc:
                return _Undecodable(exc)

        def refuse(context: grpc.ServicerContext, request: _Undecodable) -> None:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request does not parse: {request.error}"
            )

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(request: Any, context: grpc.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    refuse(context, request)
                return behavior(request, context)

            return checked

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                def parsed() -> Iterator[Any]:
                    for request in requests:
                        if isinstance(request, _Undecodable):
                            raise BadRequestError(
                                f"{method}: a streamed message does not parse: {request.error}"
                            )
                        yield request

                return behavior(parsed(), context)

            return checked

        handler = handler._replace(request_deserializer=tolerant)
        return _wrap_behavior(handler, streaming if handler.request_streaming else unary)
