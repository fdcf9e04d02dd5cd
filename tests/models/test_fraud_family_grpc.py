"""FRAUD through real gRPC on split fixtures, its weights adapter, and its non-strict vote.

``colearn-data fixtures FRAUD`` writes small IEEE-CIS-shaped CSVs and ``split`` deals them to 3 learners.
Learner 0 proposes, learner 1 tests, and all three accept (learner 2 through the ``SetWeights``
fallback); afterwards every learner's current ``SGDClassifier`` gives the same decision values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from zoo_kit import grpc_fleet, split_fixtures

from colearn_contract.weights_codec import decode_tensors
from colearn_learner import ExampleMliFactory
from colearn_learner.weight_adapters import decode_weights, encode_weights


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return split_fixtures("FRAUD", tmp_path_factory.mktemp("fraud"))


def decisions(mli: object, probe: np.ndarray) -> np.ndarray:
    return mli.mli_get_current_model().model.decision_function(probe)  # type: ignore[attr-defined]


def test_setup_propose_test_accept_over_grpc(shards: Path) -> None:
    with grpc_fleet(data_root=shards) as fleet:
        initial = fleet.setup("FRAUD", "FRAUD", {"steps_per_epoch": 5})
        assert len(set(initial)) == 1
        n_features = fleet.factories[0].current._data.features.shape[1]
        probe = np.random.default_rng(0).normal(size=(7, n_features))
        before = decisions(fleet.factories[0].current, probe)

        proposal = fleet.clients[0].mli_propose_weights()
        verdict = fleet.clients[1].mli_test_weights(proposal)
        for client in fleet.clients:
            client.mli_accept_weights(proposal)

        assert verdict.criterion == "accuracy" and 0 <= verdict.vote_score <= 1
        sent = decode_weights(proposal.weights.data).weights
        assert verdict.vote_score == fleet.factories[1].current._evaluate(sent, "vote")
        for client in fleet.clients:
            assert client.get_status().weights_sha256 == proposal.weights.sha256
            assert bytes(client.mli_get_current_weights().weights.data) == bytes(proposal.weights.data)
        after = [decisions(f.current, probe) for f in fleet.factories]

    assert not np.array_equal(before, after[0])
    for other in after[1:]:
        np.testing.assert_array_equal(other, after[0])


def test_weights_are_coef_and_intercept_and_round_trip_exactly(shards: Path) -> None:
    factory = ExampleMliFactory()
    build = [
        factory.get_mli("FRAUD", "{}", "FRAUD", json.dumps({"location": str(shards / f"learner_{i}")}))
        for i in range(2)
    ]
    proposed = build[0].mli_propose_weights()
    buffer, _ = encode_weights(proposed)
    tensors, _ = decode_tensors(buffer)
    assert {k: (v.dtype, v.shape[0]) for k, v in tensors.items()} == {
        "coef": (np.float64, 1),
        "intercept": (np.float64, 1),
    }
    build[1].mli_accept_weights(decode_weights(buffer))
    probe = np.random.default_rng(1).normal(size=(5, tensors["coef"].shape[1]))
    model = build[1].mli_get_current_model().model
    np.testing.assert_array_equal(
        model.decision_function(probe), probe @ tensors["coef"][0] + tensors["intercept"][0]
    )
    assert build[1].mli_test_weights(proposed).vote_score == build[1].vote_score


def test_a_proposal_that_ties_is_approved(shards: Path) -> None:
    """FRAUD votes with ``>=``: weights that move too little to change any prediction still pass."""
    mli = ExampleMliFactory().get_mli(
        "FRAUD",
        json.dumps({"learning_rate": 1e-12}),
        "FRAUD",
        json.dumps({"location": str(shards / "learner_0")}),
    )
    verdict = mli.mli_test_weights(mli.mli_propose_weights())
    assert verdict.vote_score == mli.vote_score
    assert verdict.vote is True
