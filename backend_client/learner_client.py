"""``LearnerClient``: the machine-learning interface of a remote learner, over one reused gRPC channel.

The client never decodes weights to relay them: what it gets from one learner it checks and relays to the
others as ``RelayedWeights``, the serialized parts as they came, so that N learners get the same bytes
objects. A user who wants to look at them can: ``mli_get_current_weights().weights`` is also a mapping of
tensor name to numpy array, decoded on first access, equal to other weights when the digests are, and
``save``-able as a safetensors file (``colearn_contract.serialized_weights``). ``get_current_model``
fetches the model as a framework-native file (``.keras``, or a safetensors ``state_dict``), as bytes.
Every call has a deadline; idempotent calls are retried on UNAVAILABLE by gRPC's own retry policy (see
``colearn_runtime.grpc_options``). ``ClientSecurity`` adds TLS (mTLS with a client
certificate) and the bearer token; a TLS file that cannot be used fails ``start()`` before any connection.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from backend_client.errors import LearnerError, LearnerUnavailableError, from_rpc_error
from colearn_contract import SERVICE_NAME, criteria
from colearn_contract.json_limits import quoted
from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.model_stream import FORMATS, ModelFile, ModelStreamError, assemble_model_file
from colearn_contract.parameters import from_struct, struct_from_json
from colearn_contract.serialized_weights import SerializedWeights, serialized
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_contract.weight_relay import ArrivingWeights, RelayedWeights, receive_relayed
from colearn_contract.weight_stream import DEFAULT_PART_BYTES, MIB, WeightsStreamError
from colearn_runtime.grpc_options import channel_options
from colearn_runtime.transport_security import ClientSecurity

_T = TypeVar("_T")


@dataclass(frozen=True)
class Deadlines:
    """Seconds each kind of call may take before the learner counts as not answering."""

    connect: float = 10.0
    query: float = 10.0
    setup: float = 600.0
    propose: float = 3600.0
    test: float = 600.0
    transfer: float = 600.0


@dataclass(frozen=True)
class RemoteStatus:
    ready: bool
    model_name: str
    dataloader_name: str
    accepted_rounds: int
    weights_sha256: str
    vote_score: float | None
    test_score: float | None
    criterion: str
    busy: bool


class _WeightsMethods:
    """The four weights methods with their parts as wire bytes: received unparsed and sent unserialized,
    so that the client relays what it received without building it again for each learner."""

    def __init__(self, channel: grpc.Channel) -> None:
        def path(method: str) -> str:
            return f"/{SERVICE_NAME}/{method}"

        self.ProposeWeights = channel.unary_stream(
            path("ProposeWeights"), request_serializer=pb.ProposeWeightsRequest.SerializeToString
        )
        self.GetCurrentWeights = channel.unary_stream(
            path("GetCurrentWeights"), request_serializer=pb.GetCurrentWeightsRequest.SerializeToString
        )
        self.TestWeights = channel.stream_unary(
            path("TestWeights"), response_deserializer=pb.TestWeightsResponse.FromString
        )
        self.SetWeights = channel.stream_unary(
            path("SetWeights"), response_deserializer=pb.SetWeightsResponse.FromString
        )


class LearnerClient(MachineLearningInterface):
    def __init__(
        self,
        name: str,
        address: str,
        *,
        deadlines: Deadlines | None = None,
        max_message_bytes: int = 16 * MIB,
        max_weights_bytes: int = 4096 * MIB,
        part_bytes: int = DEFAULT_PART_BYTES,
        security: ClientSecurity | None = None,
    ) -> None:
        self.name = name
        self.security = security or ClientSecurity()
        self.address = address
        self.deadlines = deadlines or Deadlines()
        self._max_message_bytes = max_message_bytes
        self._max_weights_bytes = max_weights_bytes
        self._part_bytes = part_bytes
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.LearnerStub | None = None
        self._weights: _WeightsMethods | None = None

    def __repr__(self) -> str:
        return f"LearnerClient({self.name!r}, {self.address!r})"

    # -- connection ---------------------------------------------------------------------------------

    def start(self) -> LearnerClient:
        """Opens the channel and waits until the learner accepts connections."""
        if self._channel is None:
            # Never plaintext in place of TLS: an unusable TLS file raises TransportSecurityError here.
            self._channel = self.security.channel(self.address, channel_options(self._max_message_bytes))
            self._stub = pb_grpc.LearnerStub(self._channel)
            self._weights = _WeightsMethods(self._channel)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.deadlines.connect)
        except grpc.FutureTimeoutError:
            raise LearnerUnavailableError(
                self.name, self.address, "connect", grpc.StatusCode.UNAVAILABLE,
                f"no connection within {self.deadlines.connect} s",
            ) from None  # fmt: skip
        return self

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel, self._stub, self._weights = None, None, None

    def __enter__(self) -> LearnerClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stub(self) -> pb_grpc.LearnerStub:
        if self._stub is None:
            raise RuntimeError(f"{self!r} is not started; call start() first")
        return self._stub

    @property
    def _weights_methods(self) -> _WeightsMethods:
        if self._weights is None:
            raise RuntimeError(f"{self!r} is not started; call start() first")
        return self._weights

    def _call(self, method: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except (grpc.RpcError, WeightsStreamError) as exc:
            raise self._translated(method, exc) from None
        except grpc.FutureCancelledError:
            raise LearnerUnavailableError(
                self.name,
                self.address,
                method,
                grpc.StatusCode.CANCELLED,
                "cancelled: the relayed stream broke",
            ) from None

    def _translated(self, method: str, exc: Exception) -> Exception:
        """A failed call as the ``LearnerError`` that names this learner, the method and the status."""
        if isinstance(exc, grpc.RpcError):
            return from_rpc_error(self.name, self.address, method, exc)
        if isinstance(exc, WeightsStreamError):
            return LearnerError(self.name, self.address, method, None, f"bad weights stream: {exc}")
        return exc

    # -- queries ------------------------------------------------------------------------------------

    def get_version(self) -> str:
        response = self._call(
            "QueryVersion",
            lambda: self.stub.QueryVersion(pb.QueryVersionRequest(), timeout=self.deadlines.query),
        )
        return response.version

    def get_supported_system(self) -> dict[str, Any]:
        """Dataloaders and models with their default parameters, and which model takes which dataloader."""
        response = self._call(
            "QuerySupportedSystem",
            lambda: self.stub.QuerySupportedSystem(
                pb.QuerySupportedSystemRequest(), timeout=self.deadlines.query
            ),
        )
        return {
            "data_loaders": {d.name: from_struct(d.default_parameters) for d in response.dataloaders},
            "required_parameters": {d.name: list(d.required_parameters) for d in response.dataloaders},
            "model_architectures": {m.name: from_struct(m.default_parameters) for m in response.models},
            "compatibilities": {m.name: list(m.compatible_dataloaders) for m in response.models},
        }

    def get_status(self) -> RemoteStatus:
        r = self._call(
            "GetStatus", lambda: self.stub.GetStatus(pb.GetStatusRequest(), timeout=self.deadlines.query)
        )
        return RemoteStatus(
            ready=r.ready,
            model_name=r.model_name,
            dataloader_name=r.dataloader_name,
            accepted_rounds=r.accepted_rounds,
            weights_sha256=r.weights_sha256,
            vote_score=r.vote_score if r.HasField("vote_score") else None,
            test_score=r.test_score if r.HasField("test_score") else None,
            criterion=criteria.from_wire(r.criterion),
            busy=r.busy,
        )

    def setup_ml(
        self,
        dataset_loader_name: str,
        dataset_loader_parameters: str,
        model_arch_name: str,
        model_parameters: str,
    ) -> str:
        """Sets up the model and data; returns the sha256 of the learner's initial weights. The parameters
        are JSON objects, as in colearn; text that is not one raises ``ParametersError`` (a ValueError)."""
        request = pb.MLSetupRequest(
            dataloader_name=dataset_loader_name,
            dataloader_parameters=struct_from_json(dataset_loader_parameters, "dataset_loader_parameters"),
            model_name=model_arch_name,
            model_parameters=struct_from_json(model_parameters, "model_parameters"),
        )
        response = self._call("MLSetup", lambda: self.stub.MLSetup(request, timeout=self.deadlines.setup))
        return response.weights_sha256

    # -- the machine-learning interface ---------------------------------------------------------------

    def _receive(self, method: str, responses: Callable[[], Iterator[bytes]]) -> RelayedWeights:
        return self._call(method, lambda: receive_relayed(responses(), self._max_weights_bytes))

    def mli_propose_weights(self) -> Weights[SerializedWeights]:
        relayed = self._receive(
            "ProposeWeights",
            lambda: self._weights_methods.ProposeWeights(
                pb.ProposeWeightsRequest(), timeout=self.deadlines.propose
            ),
        )
        return Weights(weights=relayed)

    def start_proposal(self) -> Weights[ArrivingWeights]:
        """Asks for a proposal and returns at once: its parts can be relayed to the voters while they
        arrive (``ArrivingWeights``). A failed call, or a broken stream, raises from the weights' methods
        as the ``LearnerError`` that ``mli_propose_weights`` would raise."""
        call = self._weights_methods.ProposeWeights(
            pb.ProposeWeightsRequest(), timeout=self.deadlines.propose
        )
        return Weights(
            weights=ArrivingWeights(
                call, self._max_weights_bytes, error=functools.partial(self._translated, "ProposeWeights")
            )
        )

    def mli_test_weights(self, weights: Weights[SerializedWeights]) -> ProposedWeights:
        encoded = serialized(weights)
        if isinstance(encoded, ArrivingWeights):
            # A proposal that is all in (a small one, in one part) is sent whole, by a blocking call: the
            # relay's future call costs the channel a thread of gRPC's to poll it (BENCHMARKS.md, issue 16).
            encoded = encoded.whole_if_in() or encoded
        parts = encoded.serialized_parts(self._part_bytes)
        if isinstance(encoded, ArrivingWeights):  # relayed while it arrives: cancelled if it breaks
            cancelled = threading.Event()
            call = self._weights_methods.TestWeights.future(
                _until_cancelled(encoded, parts, cancelled, self.deadlines.test), timeout=self.deadlines.test
            )

            def cancel() -> None:
                call.cancel()
                cancelled.set()

            encoded.on_failure(cancel)
            r = self._call("TestWeights", call.result)
        else:
            r = self._call(
                "TestWeights", lambda: self._weights_methods.TestWeights(parts, timeout=self.deadlines.test)
            )
        return ProposedWeights(
            weights=weights,
            vote_score=r.vote_score if r.HasField("vote_score") else None,
            test_score=r.test_score if r.HasField("test_score") else None,
            vote=r.vote if r.HasField("vote") else None,
            criterion=criteria.from_wire(r.criterion),
        )

    def mli_accept_weights(self, weights: Weights[SerializedWeights]) -> None:
        """Accepts a cached proposal by id; sends the weights only when the learner does not hold them."""
        encoded = serialized(weights)
        if encoded.proposal_id:
            request = pb.AcceptProposalRequest(proposal_id=encoded.proposal_id)
            try:
                self._call(
                    "AcceptProposal",
                    lambda: self.stub.AcceptProposal(request, timeout=self.deadlines.transfer),
                )
                return
            except LearnerError as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
        self._call(
            "SetWeights",
            lambda: self._weights_methods.SetWeights(
                encoded.serialized_parts(self._part_bytes), timeout=self.deadlines.transfer
            ),
        )

    def mli_get_current_weights(self) -> Weights[SerializedWeights]:
        relayed = self._receive(
            "GetCurrentWeights",
            lambda: self._weights_methods.GetCurrentWeights(
                pb.GetCurrentWeightsRequest(), timeout=self.deadlines.transfer
            ),
        )
        return Weights(weights=relayed)

    def get_current_model(self, model_format: str = "") -> ModelFile:
        """The learner's current model as one framework-native file (``GetCurrentModel``): a ``.keras``
        zip, or a safetensors file of a torch ``state_dict`` or a scikit-learn estimator's arrays.

        ``model_format`` is ``"keras"``, ``"safetensors"`` or ``""`` for the model's own. The stream is
        checked as weights are (framing, the size cap, its sha256) before the file is handed back; the
        bytes are never loaded here, so the backend needs no framework to fetch them. The learner
        answers FAILED_PRECONDITION (a ``LearnerError``) when its model has no such file."""
        if model_format not in ("", *FORMATS):
            raise ValueError(
                f"unknown model file format {quoted(model_format)}; valid: {', '.join(FORMATS)} "
                "(or empty for the model's own)"
            )
        wanted = FORMATS.get(model_format, pb.MODEL_FORMAT_UNSPECIFIED)
        request = pb.GetCurrentModelRequest(format=wanted)

        def fetch() -> ModelFile:
            responses = self.stub.GetCurrentModel(request, timeout=self.deadlines.transfer)
            try:
                return assemble_model_file(responses, self._max_weights_bytes, wanted)
            except ModelStreamError:
                responses.cancel()  # nobody reads the rest of a stream that is already refused
                raise

        try:
            return self._call("GetCurrentModel", fetch)
        except ModelStreamError as exc:
            raise LearnerError(
                self.name, self.address, "GetCurrentModel", None, f"bad model file stream: {exc}"
            ) from None


def _until_cancelled(
    arriving: ArrivingWeights, parts: Iterator[bytes], cancelled: threading.Event, timeout: float | None
) -> Iterator[bytes]:
    """A voter's request stream of a relayed proposal. If the proposal breaks, the stream never ends
    cleanly: it stays open until its call is cancelled, so the voter cannot take a stream that was cut
    (or had bytes past its end) for a whole one, even when the break comes before the cancel was
    registered."""
    yield from parts
    if arriving.failed:
        cancelled.wait(timeout)


class ExampleGRPCLearnerClient(LearnerClient):
    """colearn's name for the gRPC learner client, kept so that the tutorial runs unchanged."""
