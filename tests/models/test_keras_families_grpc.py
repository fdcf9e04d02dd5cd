"""Every Keras family through real gRPC, on data the user's own tools made.

For each family, ``colearn-data fixtures`` writes small files in the original format (IDX, CIFAR-10 binary
batches; KERAS_DIGITS needs none), ``colearn-data split`` deals them to learners, and in-process learner
servers set up on their own folders. Learner 0 proposes, learner 1 tests, and all accept: learners 0 and 1
by proposal id (they hold it), learner 2 through the ``SetWeights`` fallback (it never saw the proposal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zoo_kit import grpc_fleet, split_fixtures

from backend_client import LearnerClient
from colearn_learner.weight_adapters import decode_weights


@dataclass(frozen=True)
class Case:
    model: str
    dataloader: str
    probe_shape: tuple[int, ...]
    model_params: dict[str, Any]
    data_params: dict[str, Any] = field(default_factory=dict)
    n_learners: int = 3


CASES = {
    # Few steps and small scored subsets keep each case at a few seconds on 2 cores.
    "KERAS_DIGITS": Case("KERAS_DIGITS", "DIGITS", (5, 64), {"steps_per_epoch": 3}),
    "KERAS_MNIST": Case(
        "KERAS_MNIST", "KERAS_MNIST", (5, 28, 28, 1), {"steps_per_epoch": 3, "vote_batches": 1}
    ),
    "KERAS_CIFAR10": Case(
        "KERAS_CIFAR10", "KERAS_CIFAR10", (5, 32, 32, 3), {"steps_per_epoch": 3, "vote_batches": 1}
    ),
    # ResNet50's weights are ~94 MB: two learners, one step on 8 images, run eagerly (tracing its training
    # graph alone would take ~18 s here).
    "KERAS_MNIST_RESNET": Case(
        "KERAS_MNIST_RESNET",
        "KERAS_MNIST",
        (2, 28, 28, 1),
        {"steps_per_epoch": 1, "vote_batches": 1, "run_eagerly": True},
        {"batch_size": 8},
        n_learners=2,
    ),
}


def predictions(mli: Any, probe: np.ndarray) -> np.ndarray:
    return np.asarray(mli.mli_get_current_model().model(probe, training=False))


def current_bytes(client: LearnerClient) -> bytes:
    """The learner's weights as it encodes them now, from its Keras model (not a cached buffer)."""
    return bytes(client.mli_get_current_weights().weights.data)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "KERAS_MNIST_RESNET" else n for n in CASES],
)
def test_setup_propose_test_accept_over_grpc(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    data_root = None
    if case.dataloader != "DIGITS":
        data_root = split_fixtures(case.dataloader, tmp_path, case.n_learners, seed=0)
    probe = np.random.default_rng(7).random(case.probe_shape, dtype=np.float32)
    with grpc_fleet(case.n_learners, data_root) as fleet:
        proposer, voter = fleet.clients[0], fleet.clients[1]
        initial = fleet.setup(case.model, case.dataloader, case.model_params, case.data_params)
        assert len(set(initial)) == 1, "every learner starts from the same seeded weights"
        before = current_bytes(proposer)

        proposal = proposer.mli_propose_weights()
        assert current_bytes(proposer) == before, "proposing does not change the current model"
        verdict = voter.mli_test_weights(proposal)
        again = voter.mli_test_weights(proposal)
        for client in fleet.clients:
            client.mli_accept_weights(proposal)

        assert verdict.criterion == "accuracy"
        assert 0 <= verdict.vote_score <= 1 and 0 <= verdict.test_score <= 1
        # Scores come from a fixed subset in fixed batches: the same weights always score the same.
        assert (again.vote_score, again.test_score) == (verdict.vote_score, verdict.test_score)
        # The voter scored exactly the weights that were proposed: scoring them in-process agrees.
        sent = decode_weights(proposal.weights.data).weights
        assert verdict.vote_score == fleet.factories[1].current._evaluate(sent, "vote")

        for client in fleet.clients:
            status = client.get_status()
            assert status.weights_sha256 == proposal.weights.sha256
            assert status.accepted_rounds == 1
            # Re-encoded from the Keras model: set_weights/get_weights lost nothing, bit for bit.
            assert current_bytes(client) == bytes(proposal.weights.data), "the weights arrived bit-identical"
        after = [predictions(factory.current, probe) for factory in fleet.factories]

    assert proposal.weights.sha256 != initial[0], "training changed the weights"
    assert isinstance(sent, list) and all(isinstance(w, np.ndarray) for w in sent)
    for other in after[1:]:
        np.testing.assert_array_equal(other, after[0])
    np.testing.assert_allclose(after[0].sum(axis=1), 1, rtol=1e-5)  # softmax over the 10 classes
