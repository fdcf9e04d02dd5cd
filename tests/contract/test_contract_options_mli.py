"""The small pieces of the contract: gRPC options both sides share, the MLI types, the flag spellings."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

import colearn_contract
from colearn_contract.mli import ColearnModel, MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_runtime.cli_flags import add_flag
from colearn_runtime.grpc_options import (
    IDEMPOTENT_METHODS,
    channel_options,
    retry_service_config,
    server_options,
)


def test_contract_names() -> None:
    assert colearn_contract.CONTRACT == "colearn.v1"
    assert colearn_contract.SERVICE_NAME == "colearn.v1.Learner"
    assert pb.DESCRIPTOR.services_by_name["Learner"].full_name == colearn_contract.SERVICE_NAME
    assert pb.DESCRIPTOR.package == "colearn.v1"


def test_both_sides_set_the_same_message_size_caps() -> None:
    size = 16 * 1024 * 1024
    server, channel = dict(server_options(size)), dict(channel_options(size))
    for key in ("grpc.max_send_message_length", "grpc.max_receive_message_length"):
        assert server[key] == size
        assert channel[key] == size


def test_retry_policy_covers_only_idempotent_calls() -> None:
    config = json.loads(retry_service_config(max_attempts=3))
    (method_config,) = config["methodConfig"]
    methods = {entry["method"] for entry in method_config["name"]}
    assert methods == set(IDEMPOTENT_METHODS)
    assert {entry["service"] for entry in method_config["name"]} == {"colearn.v1.Learner"}
    # Training again or re-streaming weights is never retried behind the caller's back.
    assert not methods & {"ProposeWeights", "TestWeights", "SetWeights", "GetCurrentWeights"}
    rpc_names = set(pb.DESCRIPTOR.services_by_name["Learner"].methods_by_name)
    assert methods <= rpc_names
    policy = method_config["retryPolicy"]
    assert policy["maxAttempts"] == 3
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert dict(channel_options(1))["grpc.service_config"] == retry_service_config()


def test_proposed_weights_default_to_did_not_vote() -> None:
    proposal = ProposedWeights(weights=Weights([1]))
    assert proposal.vote is None
    assert proposal.vote_score is None
    assert proposal.test_score is None
    assert proposal.evaluation_results == {}
    assert ProposedWeights(weights=Weights(1)).evaluation_results is not proposal.evaluation_results


def test_mli_is_abstract_and_current_model_is_optional() -> None:
    with pytest.raises(TypeError):
        MachineLearningInterface()  # type: ignore[abstract]

    class Minimal(MachineLearningInterface):
        def mli_propose_weights(self) -> Weights:
            return Weights(1)

        def mli_test_weights(self, weights: Weights) -> ProposedWeights:
            return ProposedWeights(weights)

        def mli_accept_weights(self, weights: Weights) -> None:
            pass

        def mli_get_current_weights(self) -> Weights:
            return Weights(1)

    with pytest.raises(NotImplementedError):
        Minimal().mli_get_current_model()
    assert ColearnModel(model_format="x").model is None


@pytest.mark.parametrize("spelling", ["--metrics_port", "--metrics-port"])
def test_flags_accept_both_spellings(spelling: str) -> None:
    parser = argparse.ArgumentParser()
    add_flag(parser, "metrics_port", type=int)
    add_flag(parser, "port", type=int)
    args = parser.parse_args([spelling, "9091", "--port", "9995"])
    assert args.metrics_port == 9091
    assert args.port == 9995


def test_contract_imports_no_ml_framework() -> None:
    code = (
        "import sys, colearn_contract, colearn_contract.weights_codec, colearn_contract.weight_stream, "
        "colearn_runtime.grpc_options, colearn_contract.mli, colearn_contract.v1.learner_pb2_grpc\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'sklearn', 'jax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
