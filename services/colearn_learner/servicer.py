"""The ``colearn.v1.Learner`` service: protocol in, protocol out; the model host does the work.

Each method maps failures to status codes in one place (``_guarded``): a learner error carries its own
code, a broken weights stream is INVALID_ARGUMENT, and only a fault of the learner itself is INTERNAL.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from colearn_contract import CONTRACT, __version__, criteria
from colearn_contract.daemon_threads import DaemonThreads
from colearn_contract.json_limits import shown
from colearn_contract.model_stream import iter_model_parts, wire_name
from colearn_contract.parameters import ParametersError, from_struct, to_struct
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_contract.weight_stream import (
    EncodedWeights,
    TruncatedStreamError,
    WeightsMessage,
    WeightsStreamError,
    assemble,
    wire_parts,
)
from colearn_learner.errors import InvalidParametersError, LearnerBusyError, StatusError
from colearn_learner.factory import MliFactory
from colearn_learner.metrics import LearnerMetrics
from colearn_learner.model_files import REQUESTABLE
from colearn_learner.model_host import LearnerStatus, ModelHost
from colearn_learner.stream_deadline import within_deadline

_log = logging.getLogger(__name__)


#: How long a truncated upload waits to learn whether its client cancelled: gRPC may end the stream before
#: it reports the cancellation (BENCHMARKS.md, "Code figures"). A client that really stopped early
#: waits this long for its INVALID_ARGUMENT.
_CANCELLATION_SETTLE_SECONDS = 0.2
#: The longest status message a learner sends. gRPC carries the message in trailing metadata, which a
#: client refuses beyond 16 KiB (it then reports RESOURCE_EXHAUSTED instead of the real status); the
#: values a message repeats are cut far shorter (``json_limits.shown``), this is the backstop.
MAX_DETAILS = 2000
#: The send deadlines' watchdogs: kept from one send to the next, where a ``threading.Timer`` would
#: start a thread for each.
_WATCHDOGS = DaemonThreads("learner-send-watchdog")


def _cancelled_soon(context: grpc.ServicerContext) -> bool:
    deadline = time.monotonic() + _CANCELLATION_SETTLE_SECONDS
    while context.is_active() and time.monotonic() < deadline:
        time.sleep(0.005)
    return not context.is_active()


def _abort(context: grpc.ServicerContext, method: str, exc: Exception) -> None:
    def abort(code: grpc.StatusCode, details: str) -> None:
        context.abort(code, shown(details, MAX_DETAILS))

    # gRPC may end a cancelled upload's request stream before it marks the call cancelled; without the
    # wait, a client that hung up would be counted as a client mistake (INVALID_ARGUMENT).
    if not context.is_active() or (isinstance(exc, TruncatedStreamError) and _cancelled_soon(context)):
        # The client cancelled or its deadline passed while we read its stream: no fault of the learner,
        # and nobody is left to answer; the code is for the metrics and the logs.
        expired = (context.time_remaining() or 0) <= 0
        abort(grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED, str(exc))
    if isinstance(exc, StatusError):
        abort(exc.code, str(exc))
    if isinstance(exc, WeightsStreamError):
        abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad weights stream: {exc}")
    _log.exception("%s failed", method)
    abort(grpc.StatusCode.INTERNAL, f"{method} failed inside the learner: {type(exc).__name__}: {exc}")


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    name = method.__name__
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: LearnerServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:
                _abort(context, name, exc)

        return stream

    @functools.wraps(method)
    def unary(self: LearnerServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort(context, name, exc)

    return unary


def _model_call(method: Callable[..., Any]) -> Callable[..., Any]:
    """Takes one of the limited slots for calls that use the model, or answers RESOURCE_EXHAUSTED.

    Calls that wait for the model lock each hold a worker thread; without a limit, a queue of them could
    take every thread and leave health checks unanswered, and Kubernetes would restart a busy learner.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: LearnerServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._model_slot():
                yield from method(self, request, context)

        return stream

    @functools.wraps(method)
    def unary(self: LearnerServicer, request: Any, context: grpc.ServicerContext) -> Any:
        with self._model_slot():
            return method(self, request, context)

    return unary


class LearnerServicer(pb_grpc.LearnerServicer):
    def __init__(
        self,
        factory: MliFactory,
        host: ModelHost,
        metrics: LearnerMetrics,
        *,
        max_weights_bytes: int,
        part_bytes: int,
        max_model_calls: int,
        stream_timeout_seconds: float = 300.0,
    ) -> None:
        self._max_model_calls = max_model_calls
        self._model_slots = threading.BoundedSemaphore(max_model_calls)
        self._factory = factory
        self._host = host
        self._metrics = metrics
        self._max_weights_bytes = max_weights_bytes
        self._part_bytes = part_bytes
        self._stream_timeout_seconds = stream_timeout_seconds

    @contextlib.contextmanager
    def _model_slot(self) -> Iterator[None]:
        if not self._model_slots.acquire(blocking=False):
            raise LearnerBusyError(
                f"this learner is already serving {self._max_model_calls} model calls; try again later"
            )
        try:
            yield
        finally:
            self._model_slots.release()

    @_guarded
    def QueryVersion(
        self, request: pb.QueryVersionRequest, context: grpc.ServicerContext
    ) -> pb.QueryVersionResponse:
        return pb.QueryVersionResponse(version=__version__, contract=CONTRACT)

    @_guarded
    def QuerySupportedSystem(
        self, request: pb.QuerySupportedSystemRequest, context: grpc.ServicerContext
    ) -> pb.QuerySupportedSystemResponse:
        factory = self._factory
        loaders = [
            pb.DataloaderSpec(
                name=name,
                default_parameters=to_struct(defaults, f"the defaults of dataloader {name}"),
                required_parameters=factory.get_required_parameters(name),
            )
            for name, defaults in sorted(factory.get_dataloaders().items())
        ]
        compat = factory.get_compatibilities()
        models = [
            pb.ModelSpec(
                name=name,
                default_parameters=to_struct(defaults, f"the defaults of model {name}"),
                compatible_dataloaders=compat.get(name, []),
            )
            for name, defaults in sorted(factory.get_models().items())
        ]
        return pb.QuerySupportedSystemResponse(dataloaders=loaders, models=models)

    @_guarded
    @_model_call
    def MLSetup(self, request: pb.MLSetupRequest, context: grpc.ServicerContext) -> pb.MLSetupResponse:
        if not request.model_name:
            valid = ", ".join(sorted(self._factory.get_models()))
            raise InvalidParametersError(f"model_name is required; valid models: {valid}")
        if not request.dataloader_name:
            valid = ", ".join(sorted(self._factory.get_dataloaders()))
            raise InvalidParametersError(f"dataloader_name is required; valid dataloaders: {valid}")
        try:
            model_params = from_struct(request.model_parameters, "model_parameters")
            dataloader_params = from_struct(request.dataloader_parameters, "dataloader_parameters")
        except ParametersError as exc:
            raise InvalidParametersError(str(exc)) from None
        result = self._host.setup(
            request.model_name, model_params, request.dataloader_name, dataloader_params
        )
        return pb.MLSetupResponse(unchanged=result.unchanged, weights_sha256=result.weights_sha256)

    @contextlib.contextmanager
    def _send_deadline(self, context: grpc.ServicerContext) -> Iterator[None]:
        # A client that stops reading blocks the send (HTTP/2 flow control) and would keep this call's
        # model slot; past the stream deadline the call is cancelled, which ends the send and frees it.
        sent = threading.Event()
        seconds = self._stream_timeout_seconds
        _WATCHDOGS.run(lambda: sent.wait(seconds) or context.cancel())
        try:
            yield
        finally:
            sent.set()

    def _send(self, weights: EncodedWeights, method: str, context: grpc.ServicerContext) -> Iterator[bytes]:
        """The weights' parts as serialized messages (``wire_parts``; the server sends them as they are)."""
        counter = self._metrics.weight_bytes.labels("out", method)
        with self._send_deadline(context):
            sent = 0
            for wire in wire_parts(weights, self._part_bytes):
                yield wire
                chunk = min(self._part_bytes, weights.size - sent)
                sent += chunk
                counter.inc(chunk)

    def _receive(self, messages: Iterator[WeightsMessage], method: str) -> EncodedWeights:
        self._host.require_ready()
        # The size cap is checked on the first part, before any buffer is allocated; the deadline bounds
        # how long a sender may hold this call (and its model slot) with a stream that never ends.
        received = within_deadline(messages, self._stream_timeout_seconds, f"the {method} stream")
        weights = assemble((message.part for message in received), self._max_weights_bytes)
        self._metrics.weight_bytes.labels("in", method).inc(weights.size)
        return weights

    @_guarded
    @_model_call
    def ProposeWeights(
        self, request: pb.ProposeWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:  # serialized ProposeWeightsResponse messages
        yield from self._send(self._host.propose(), "ProposeWeights", context)

    @_guarded
    @_model_call
    def TestWeights(
        self, request_iterator: Iterator[pb.TestWeightsRequest], context: grpc.ServicerContext
    ) -> pb.TestWeightsResponse:
        weights = self._receive(request_iterator, "TestWeights")
        verdict = self._host.test(weights)
        response = pb.TestWeightsResponse(
            proposal_id=weights.proposal_id,
            vote_score=verdict.vote_score,
            test_score=verdict.test_score,
            criterion=criteria.to_wire(verdict.criterion),
        )
        if verdict.vote is not None:
            response.vote = verdict.vote
        return response

    @_guarded
    @_model_call
    def SetWeights(
        self, request_iterator: Iterator[pb.SetWeightsRequest], context: grpc.ServicerContext
    ) -> pb.SetWeightsResponse:
        status = self._host.set_weights(self._receive(request_iterator, "SetWeights"))
        return pb.SetWeightsResponse(weights_sha256=status.weights_sha256)

    @_guarded
    @_model_call
    def AcceptProposal(
        self, request: pb.AcceptProposalRequest, context: grpc.ServicerContext
    ) -> pb.AcceptProposalResponse:
        if not request.proposal_id:
            raise InvalidParametersError("proposal_id is required")
        status = self._host.accept(request.proposal_id)
        return pb.AcceptProposalResponse(
            weights_sha256=status.weights_sha256, accepted_rounds=status.accepted_rounds
        )

    @_guarded
    @_model_call
    def GetCurrentWeights(
        self, request: pb.GetCurrentWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:  # serialized GetCurrentWeightsResponse messages
        yield from self._send(self._host.current_weights(), "GetCurrentWeights", context)

    @_guarded
    @_model_call
    def GetCurrentModel(
        self, request: pb.GetCurrentModelRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetCurrentModelResponse]:
        if request.format not in REQUESTABLE:
            valid = ", ".join(wire_name(f) for f in REQUESTABLE)
            raise InvalidParametersError(f"unknown format {request.format}; valid: {valid}")
        model_file = self._host.current_model_file(request.format)
        counter = self._metrics.weight_bytes.labels("out", "GetCurrentModel")
        size = len(memoryview(model_file.data).cast("B"))
        with self._send_deadline(context):
            sent = 0
            for message in iter_model_parts(model_file, self._part_bytes):
                yield message
                chunk = min(self._part_bytes, size - sent)  # reading message.data would copy it
                sent += chunk
                counter.inc(chunk)

    @_guarded
    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        return status_message(self._host.status)


def status_message(status: LearnerStatus) -> pb.GetStatusResponse:
    message = pb.GetStatusResponse(
        ready=status.ready,
        model_name=status.model_name,
        dataloader_name=status.dataloader_name,
        accepted_rounds=status.accepted_rounds,
        weights_sha256=status.weights_sha256,
        criterion=criteria.to_wire(status.criterion),
        busy=status.busy,
    )
    if status.vote_score is not None:
        message.vote_score = status.vote_score
    if status.test_score is not None:
        message.test_score = status.test_score
    return message
