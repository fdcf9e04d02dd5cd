"""Idempotent calls are retried on UNAVAILABLE by gRPC's retry policy; training calls never are.

The learner here is a real gRPC server on 127.0.0.1 that answers UNAVAILABLE a set number of times
before it serves, as a learner does while it restarts behind a load balancer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from wire_kit import serving

from backend_client import LearnerClient, LearnerUnavailableError
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc


class FlakyLearner(pb_grpc.LearnerServicer):
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            failing = self.calls[method] <= self.failures
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        self._count("GetStatus", context)
        return pb.GetStatusResponse(ready=True, model_name="FLAKY")

    def ProposeWeights(
        self, request: pb.ProposeWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WeightsPart]:
        self._count("ProposeWeights", context)
        yield pb.WeightsPart()


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyLearner, str]]:
    servicer = FlakyLearner(failures=2)
    with serving(servicer) as address:
        yield servicer, address


def test_an_idempotent_call_is_retried_until_the_learner_serves(flaky: tuple[FlakyLearner, str]) -> None:
    servicer, address = flaky
    with LearnerClient("flaky", address) as client:
        status = client.get_status()
    assert status.model_name == "FLAKY"
    assert servicer.calls["GetStatus"] == 3  # two UNAVAILABLE answers, then success


def test_a_training_call_is_not_retried(flaky: tuple[FlakyLearner, str]) -> None:
    servicer, address = flaky
    with LearnerClient("flaky", address) as client, pytest.raises(LearnerUnavailableError) as caught:
        client.mli_propose_weights()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.address == address
    assert servicer.calls["ProposeWeights"] == 1
