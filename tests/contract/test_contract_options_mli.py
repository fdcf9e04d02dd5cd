"""The small pieces of the contract: its names and the MLI types."""

from __future__ import annotations

import subprocess
import sys

import pytest

import colearn_contract
from colearn_contract.mli import ColearnModel, MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.v1 import learner_pb2 as pb


def test_contract_names() -> None:
    assert colearn_contract.CONTRACT == "colearn.v1"
    assert colearn_contract.SERVICE_NAME == "colearn.v1.Learner"
    assert pb.DESCRIPTOR.services_by_name["Learner"].full_name == colearn_contract.SERVICE_NAME
    assert pb.DESCRIPTOR.package == "colearn.v1"


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


def test_contract_imports_no_ml_framework() -> None:
    code = (
        "import sys, colearn_contract, colearn_contract.weights_codec, colearn_contract.weight_stream, "
        "colearn_contract.mli, colearn_contract.v1.learner_pb2_grpc\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'sklearn', 'jax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
