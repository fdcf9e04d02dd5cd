"""Server interceptors: metrics for every RPC, the bearer-token check, tolerant request decoding, and
responses a handler serialized itself.

A handler's behavior may be *non-blocking* (gRPC's ``experimental_non_blocking`` attribute, set by the
health servicer's ``Watch``): it gets a ``send_response_callback`` keyword, returns at once and sends its
responses later, so that an open stream holds no worker thread. Every wrapper here passes that keyword on
and keeps the attribute; a wrapper that dropped it would make each open ``Watch`` hold a thread, and a
few dozen watchers (health needs no token) would starve every other call.
"""

from __future__ import annotations

import functools
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from colearn_contract import SERVICE_NAME
from colearn_contract.json_limits import shown
from colearn_learner.errors import BadRequestError
from colearn_learner.metrics import LearnerMetrics, rpc_type
from colearn_runtime.transport_security import AUTHORIZATION


def non_blocking(behavior: Callable[..., Any]) -> bool:
    return bool(getattr(behavior, "experimental_non_blocking", False))


def _wrap_behavior(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> grpc.RpcMethodHandler:
    """The same handler with its one behavior (whichever of the four kinds it is) wrapped. The wrapper
    keeps the behavior's attributes (``functools.wraps``), the non-blocking flag among them."""
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: functools.wraps(behavior)(wrap(behavior))})
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
        labels = (service, method, rpc_type(handler.request_streaming, handler.response_streaming))
        metrics = self._metrics

        def finish(context: grpc.ServicerContext, start: float, failed: bool) -> None:
            code = _code_of(context, failed)
            metrics.rpc_handled.labels(*labels, code).inc()
            metrics.rpc_seconds.labels(*labels).observe(time.perf_counter() - start)

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

        def timed_non_blocking(behavior: Callable[..., Any]) -> Callable[..., Any]:
            """The call ends later, when its stream closes: it is timed to that moment. The server ended
            it (OK) when it sent the final ``None``; otherwise the client went away (CANCELLED)."""

            def wrapper(
                request: Any, context: grpc.ServicerContext, send_response_callback: Callable[[Any], None]
            ) -> Any:
                metrics.rpc_started.labels(*labels).inc()
                start = time.perf_counter()
                ended_by_server = threading.Event()

                def send(response: Any) -> None:
                    if response is None:
                        ended_by_server.set()
                    send_response_callback(response)

                def closed() -> None:
                    code = grpc.StatusCode.OK if ended_by_server.is_set() else grpc.StatusCode.CANCELLED
                    metrics.rpc_handled.labels(*labels, code.name).inc()
                    metrics.rpc_seconds.labels(*labels).observe(time.perf_counter() - start)

                context.add_callback(closed)
                return behavior(request, context, send_response_callback=send)

            return wrapper

        if any(non_blocking(b) for b in (handler.unary_stream, handler.stream_stream) if b is not None):
            return _wrap_behavior(handler, timed_non_blocking)
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
        deserialize = handler.request_deserializer
        method = handler_call_details.method
        # The learner's own handlers map BadRequestError to its status; others (reflection) get an abort.
        own = method.startswith(f"/{SERVICE_NAME}/")

        def tolerant(data: bytes) -> Any:
            try:
                return deserialize(data)
            except Exception as exc:
                return _Undecodable(exc)

        def refuse(context: grpc.ServicerContext, request: _Undecodable) -> None:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method}: the request does not parse: {shown(str(request.error))}",
            )

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(request: Any, context: grpc.ServicerContext, **non_blocking: Any) -> Any:
                if isinstance(request, _Undecodable):
                    refuse(context, request)
                return behavior(request, context, **non_blocking)

            return checked

        def streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                def parsed() -> Iterator[Any]:
                    for request in requests:
                        if isinstance(request, _Undecodable) and own:
                            raise BadRequestError(
                                f"{method}: a streamed message does not parse: {shown(str(request.error))}"
                            )
                        if isinstance(request, _Undecodable):
                            refuse(context, request)
                        yield request

                return behavior(parsed(), context)

            return checked

        handler = handler._replace(request_deserializer=tolerant)
        return _wrap_behavior(handler, streaming if handler.request_streaming else unary)


class SerializedResponsesInterceptor(grpc.ServerInterceptor):
    """Lets the learner's streaming handlers yield responses they serialized themselves, as ``bytes``.

    The weights streams send parts framed without protobuf copying their data (``wire_parts``): each is
    already the serialized message, which the method's serializer would refuse. Messages still go through
    the method's own serializer.
    """

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if (
            handler is None
            or not handler.response_streaming
            or handler.response_serializer is None
            or not handler_call_details.method.startswith(f"/{SERVICE_NAME}/")
        ):
            return handler
        serialize = handler.response_serializer

        def serialized(response: Any) -> bytes:
            return response if type(response) is bytes else serialize(response)

        return handler._replace(response_serializer=serialized)


# Probes carry no token: Kubernetes' grpc probe cannot send one.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Answers a call without ``authorization: Bearer <token>`` with UNAUTHENTICATED.

    Health stays open; everything else, reflection included, needs the token. The comparison takes the
    same time however much of a guess is right (``hmac.compare_digest``). A refused call never reaches the
    request deserializer or the servicer: its bytes are not even parsed.
    """

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    def _authorized(self, metadata: tuple[tuple[str, Any], ...] | None) -> bool:
        presented = b""
        for key, value in metadata or ():
            if key == AUTHORIZATION:
                text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                scheme, _, token = text.partition(" ")
                if scheme.lower() == "bearer":
                    presented = token.strip().encode("latin-1", "replace")
                break
        # compare_digest also runs for an absent header, so that its absence costs the same time.
        return hmac.compare_digest(presented, self._expected) and bool(presented)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(_OPEN_PREFIXES) or self._authorized(handler_call_details.invocation_metadata):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED says no more than the token check would
        return _refusing(handler, method)


def _refusing(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED without reading a request."""
    details = f"{method} needs 'authorization: Bearer <token>' metadata with this learner's token"

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, details)

    def refuse_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, details)
        yield  # pragma: no cover - abort raises

    behavior = refuse_stream if handler.response_streaming else refuse
    build = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    # No deserializer: the raw bytes are handed over unread (and never looked at).
    return build(behavior, request_deserializer=None, response_serializer=handler.response_serializer)
