"""PYTORCH_XRAY and PYTORCH_COVID_XRAY through real gRPC, on data the user's own tools made.

For each family: ``colearn-data fixtures`` writes small files in the original format (JPEG folders, .mat
files), ``colearn-data split`` deals them to 3 learners, and 3 in-process learner servers set up on their
own folder. Then learner 0 proposes, learner 1 tests, and all three accept: learners 0 and 1 by proposal
id (they hold it), learner 2 through the ``SetWeights`` fallback (it never saw the proposal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from zoo_kit import grpc_fleet, split_fixtures

from colearn_learner.weight_adapters import decode_weights, encode_weights

FAMILIES = {
    # Few steps and small scored subsets keep each test at a second or two on 2 cores.
    "PYTORCH_XRAY": ({"steps_per_epoch": 3, "vote_batches": 1}, {"batch_size": 4}, "auc", (6, 1, 128, 128)),
    "PYTORCH_COVID_XRAY": ({"steps_per_epoch": 5}, {"batch_size": 8}, "categorical_accuracy", (6, 64)),
}


def predictions(mli: Any, probe: torch.Tensor) -> np.ndarray:
    model = mli.mli_get_current_model().model
    device = next(model.parameters()).device  # the CPU here; CUDA where torch sees a GPU
    with torch.no_grad():
        return model(probe.to(device)).cpu().numpy()


@pytest.mark.parametrize("tag", sorted(FAMILIES))
def test_setup_propose_test_accept_over_grpc(tag: str, tmp_path: Path) -> None:
    model_params, data_params, criterion, probe_shape = FAMILIES[tag]
    data_root = split_fixtures(tag, tmp_path)
    probe = torch.rand(probe_shape, generator=torch.Generator().manual_seed(7))
    with grpc_fleet(data_root=data_root) as fleet:
        initial = fleet.setup(tag, tag, model_params, data_params)
        assert len(set(initial)) == 1, "every learner starts from the same seeded weights"
        before = [predictions(f.current, probe) for f in fleet.factories]

        proposal = fleet.clients[0].mli_propose_weights()
        verdict = fleet.clients[1].mli_test_weights(proposal)
        for client in fleet.clients:
            client.mli_accept_weights(proposal)

        assert verdict.criterion == criterion
        assert verdict.vote_score is not None and verdict.test_score is not None
        # The voter scored exactly the weights that were proposed: scoring them again in-process agrees.
        sent = decode_weights(proposal.weights.data)
        assert verdict.vote_score == fleet.factories[1].current._evaluate(sent.weights, "vote")

        for client in fleet.clients:
            status = client.get_status()
            assert status.weights_sha256 == proposal.weights.sha256
            assert status.accepted_rounds == 1
            current = client.mli_get_current_weights().weights
            assert bytes(current.data) == bytes(proposal.weights.data), "the weights arrived bit-identical"
        after = [predictions(f.current, probe) for f in fleet.factories]

    assert proposal.weights.sha256 != initial[0], "training changed the weights"
    assert not np.array_equal(before[0], after[0]), "the accepted weights predict differently"
    for other in after[1:]:
        np.testing.assert_array_equal(other, after[0])
    # The BatchNorm running statistics and counters travelled with the weights (they are buffers).
    if tag == "PYTORCH_XRAY":
        buffers = {k for k in sent.weights if "running_" in k or "num_batches_tracked" in k}
        assert len(buffers) == 6
        assert all(int(sent.weights[k]) == 3 for k in buffers if k.endswith("num_batches_tracked"))
        assert encode_weights(fleet.factories[2].current.mli_get_current_weights())[0] == bytes(
            proposal.weights.data
        )
