"""``LearnerClient`` against real gRPC servers on 127.0.0.1: the learner itself, and small servers that
misbehave on purpose (a call that never answers, a broken weights stream)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from conftest import free_port
from wire_kit import serving

from backend_client import (
    Deadlines,
    ExampleGRPCLearnerClient,
    LearnerClient,
    LearnerError,
    LearnerUnavailableError,
    ProposedWeights,
    Weights,
)
from colearn_contract.parameters import ParametersError
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_contract.weight_relay import RelayedWeights
from colearn_contract.weight_stream import EncodedWeights, iter_parts
from colearn_learner import GRPCServer

DIGITS = json.dumps({"shard": 0, "n_shards": 2})


@pytest.fixture
def learner(start_server: Callable[..., GRPCServer]) -> Iterator[LearnerClient]:
    server = start_server()
    with LearnerClient("learner-0", f"127.0.0.1:{server.port}") as client:
        yield client


def set_up(client: LearnerClient, shard: int = 0) -> str:
    return client.setup_ml(
        dataset_loader_name="DIGITS",
        dataset_loader_parameters=json.dumps({"shard": shard, "n_shards": 2}),
        model_arch_name="SKLEARN_DIGITS",
        model_parameters="{}",
    )


class Misbehaving(pb_grpc.LearnerServicer):
    """GetStatus waits until released; ProposeWeights sends a stream whose sha256 does not match."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        self.release.wait(30)
        return pb.GetStatusResponse()

    def ProposeWeights(
        self, request: pb.ProposeWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ProposeWeightsResponse]:
        honest = EncodedWeights.wrap(b"some weights", proposal_id="p")
        lie = EncodedWeights(data=b"other bytes!", sha256=honest.sha256, proposal_id="p")
        yield from iter_parts(lie, message=pb.ProposeWeightsResponse)


@pytest.fixture
def misbehaving() -> Iterator[tuple[str, Misbehaving]]:
    servicer = Misbehaving()
    with serving(servicer) as address:
        try:
            yield address, servicer
        finally:
            servicer.release.set()  # before the server stops: a call held open would hold its stop


# -- errors are typed and say who, what and why -------------------------------------------------------------


def test_start_against_a_dead_port_raises_learner_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    client = LearnerClient("ghost", address, deadlines=Deadlines(connect=0.5))
    try:
        with pytest.raises(LearnerUnavailableError) as caught:
            client.start()
    finally:
        client.stop()
    error = caught.value
    assert isinstance(error, LearnerError)
    assert (error.name, error.address, error.method, error.code) == (
        "ghost",
        address,
        "connect",
        grpc.StatusCode.UNAVAILABLE,
    )
    assert address in str(error) and "UNAVAILABLE" in str(error)


def test_a_call_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        LearnerClient("idle", "127.0.0.1:1").get_status()


def test_a_refusal_is_a_learner_error_with_the_status_code(learner: LearnerClient) -> None:
    with pytest.raises(LearnerError) as caught:
        learner.mli_propose_weights()
    error = caught.value
    assert not isinstance(error, LearnerUnavailableError)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.method == "ProposeWeights"
    assert error.address == learner.address and error.name == "learner-0"
    assert "MLSetup" in error.details


def test_setup_mistakes_name_what_is_valid(learner: LearnerClient) -> None:
    with pytest.raises(LearnerError) as caught:
        learner.setup_ml(
            dataset_loader_name="DIGITS", dataset_loader_parameters=DIGITS,
            model_arch_name="NO_SUCH_MODEL", model_parameters="{}",
        )  # fmt: skip
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.method == "MLSetup"
    assert "SKLEARN_DIGITS" in caught.value.details

    with pytest.raises(LearnerError) as caught:
        learner.setup_ml(
            dataset_loader_name="DIGITS", dataset_loader_parameters='{"shard": "first"}',
            model_arch_name="SKLEARN_DIGITS", model_parameters="{}",
        )  # fmt: skip
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "shard" in caught.value.details
    assert not learner.get_status().ready


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "dataset_loader_parameters is not valid JSON"),
        ("[0, 1]", "dataset_loader_parameters must be a JSON object, not list"),
        ("null", "dataset_loader_parameters must be a JSON object, not NoneType"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests deeper than 64 levels"),
        ('{"seed": 9007199254740993}', r"dataset_loader_parameters\.seed is a whole number beyond 2\^53"),
    ],
)
def test_parameters_that_are_no_json_object_never_leave_the_client(
    learner: LearnerClient, text: str, message: str
) -> None:
    """colearn's API takes JSON text; what is not a JSON object is refused before anything is sent."""
    with pytest.raises(ParametersError, match=message):
        learner.setup_ml(
            dataset_loader_name="DIGITS", dataset_loader_parameters=text,
            model_arch_name="SKLEARN_DIGITS", model_parameters="{}",
        )  # fmt: skip
    assert not learner.get_status().ready


def test_a_learner_that_went_away_is_unavailable(start_server: Callable[..., GRPCServer]) -> None:
    server = start_server()
    with LearnerClient("learner-0", f"127.0.0.1:{server.port}") as client:
        assert client.get_status().ready is False
        server.stop(grace=0)
        with pytest.raises(LearnerUnavailableError) as caught:
            client.get_status()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.method == "GetStatus"


def test_a_missed_deadline_is_unavailable(misbehaving: tuple[str, Misbehaving]) -> None:
    address, _servicer = misbehaving
    slow = LearnerClient("slow", address, deadlines=Deadlines(query=0.3))
    with slow as client, pytest.raises(LearnerUnavailableError) as caught:
        client.get_status()
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.method == "GetStatus" and caught.value.address == address


def test_a_broken_weights_stream_from_a_learner_is_a_learner_error(
    misbehaving: tuple[str, Misbehaving],
) -> None:
    address, _servicer = misbehaving
    with LearnerClient("liar", address) as client, pytest.raises(LearnerError) as caught:
        client.mli_propose_weights()
    assert caught.value.code is None
    assert caught.value.method == "ProposeWeights"
    assert "sha256" in str(caught.value) and "BAD_RESPONSE" in str(caught.value)


@pytest.mark.parametrize(
    "weights", [{"coef": np.zeros((10, 64))}, b"raw bytes", None], ids=["ndarrays", "bytes", "none"]
)
def test_only_encoded_weights_are_relayed(learner: LearnerClient, weights: object) -> None:
    with pytest.raises(TypeError, match="encoded weights"):
        learner.mli_test_weights(Weights(weights=weights))
    with pytest.raises(TypeError, match="encoded weights"):
        learner.mli_accept_weights(Weights(weights=weights))


def test_weights_that_fail_to_decode_are_refused_by_the_learner(learner: LearnerClient) -> None:
    digest = set_up(learner)
    with pytest.raises(LearnerError) as caught:
        learner.mli_test_weights(Weights(weights=EncodedWeights.wrap(b"\x00" * 100, proposal_id="q")))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.method == "TestWeights"
    assert learner.get_status().weights_sha256 == digest


# -- the machine-learning interface over gRPC ---------------------------------------------------------------


def test_the_mli_over_grpc_relays_opaque_weights(start_server: Callable[..., GRPCServer]) -> None:
    a, b = start_server(), start_server()
    with (
        ExampleGRPCLearnerClient("a", f"127.0.0.1:{a.port}") as first,
        ExampleGRPCLearnerClient("b", f"127.0.0.1:{b.port}") as second,
    ):
        assert first.get_version()
        digest = set_up(first, 0)
        assert set_up(second, 1) == digest  # the same seeded initial weights
        current = first.mli_get_current_weights()
        assert isinstance(current.weights, RelayedWeights)
        assert current.weights.sha256 == digest == first.get_status().weights_sha256
        assert current.weights.proposal_id == ""

        proposal = first.mli_propose_weights()
        assert isinstance(proposal.weights, RelayedWeights) and proposal.weights.proposal_id
        assert proposal.weights.sha256 != digest
        assert first.get_status().weights_sha256 == digest  # proposing adopts nothing

        verdict = second.mli_test_weights(proposal)
        assert isinstance(verdict, ProposedWeights)
        assert verdict.weights is proposal
        assert verdict.vote in (True, False)
        assert 0 <= verdict.vote_score <= 1 and 0 <= verdict.test_score <= 1
        assert verdict.criterion == "accuracy"
        assert second.get_status().weights_sha256 == digest  # testing adopts nothing

        second.mli_accept_weights(proposal)
        status = second.get_status()
        assert status.weights_sha256 == proposal.weights.sha256
        assert status.accepted_rounds == 1
        assert status.vote_score == pytest.approx(verdict.vote_score)

        with pytest.raises(NotImplementedError):
            first.mli_get_current_model()
    with pytest.raises(RuntimeError):
        first.get_status()  # the context manager closed the channel


def test_the_current_weights_are_not_better_than_themselves(learner: LearnerClient) -> None:
    set_up(learner)
    verdict = learner.mli_test_weights(learner.mli_get_current_weights())
    assert verdict.vote is False  # the current weights are not strictly better than themselves
    assert verdict.test_score is not None
