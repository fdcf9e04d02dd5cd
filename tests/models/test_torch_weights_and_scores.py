"""The torch families' weights adapters and scores, in-process on split fixtures.

- After ``{name: ndarray}`` (the codec's safetensors buffer) and back, a model predicts exactly as the one
  that accepted the original weights: every parameter and buffer survives, BatchNorm's included.
- A score depends on the weights alone: dropout is off and BatchNorm uses its running statistics when
  scoring, and the scored subset is fixed.
- The AUC is scikit-learn's (0.5 on one class); the loss mode scores the negative binary cross-entropy.
- ``no_cuda`` picks the CPU even where torch sees a GPU.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from zoo_kit import split_fixtures

from colearn_contract.weights_codec import decode_tensors
from colearn_learner import ExampleMliFactory
from colearn_learner.weight_adapters import decode_weights, encode_weights
from colearn_models.pytorch_xray.models import roc_auc
from colearn_models.support import torch_support

SMALL = {
    "PYTORCH_XRAY": {"steps_per_epoch": 3, "vote_batches": 1},
    "PYTORCH_COVID_XRAY": {"steps_per_epoch": 5},
}
DATA = {"PYTORCH_XRAY": {"batch_size": 4}, "PYTORCH_COVID_XRAY": {"batch_size": 8}}
PROBES = {"PYTORCH_XRAY": (5, 1, 128, 128), "PYTORCH_COVID_XRAY": (9, 64)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {tag: split_fixtures(tag, tmp_path_factory.mktemp(tag.lower())) for tag in SMALL}


@pytest.fixture(scope="module")
def build(shards: dict[str, Path]) -> Callable[..., Any]:
    factory = ExampleMliFactory()

    def make(tag: str, learner: int = 0, **model_params: object) -> Any:
        location = str(shards[tag] / f"learner_{learner}")
        data = json.dumps({"location": location, **DATA[tag]})
        return factory.get_mli(tag, json.dumps({**SMALL[tag], **model_params}), tag, data)

    return make


def predict(mli: Any, probe: torch.Tensor) -> torch.Tensor:
    model = mli.mli_get_current_model().model
    with torch.no_grad():
        return model(probe.to(next(model.parameters()).device)).cpu()


@pytest.mark.parametrize("tag", sorted(SMALL))
def test_weights_round_trip_through_named_arrays(tag: str, build: Callable[..., Any]) -> None:
    proposer, original, received = build(tag, 0), build(tag, 1), build(tag, 2)
    proposed = proposer.mli_propose_weights()
    buffer, _ = encode_weights(proposed)
    tensors, _ = decode_tensors(buffer)
    state = proposed.weights
    assert list(tensors) == list(state), "one named array per state_dict entry, in order"
    for name, array in tensors.items():
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, state[name].numpy())
        assert array.dtype == state[name].numpy().dtype

    original.mli_accept_weights(proposed)
    received.mli_accept_weights(decode_weights(buffer))
    probe = torch.rand(PROBES[tag], generator=torch.Generator().manual_seed(3))
    assert torch.equal(predict(received, probe), predict(original, probe))
    assert not torch.equal(predict(proposer, probe), predict(received, probe)), "the proposal changed nothing"


def test_batchnorm_statistics_are_part_of_the_xray_weights(build: Callable[..., Any]) -> None:
    mli = build("PYTORCH_XRAY")
    initial = mli.mli_get_current_weights().weights
    proposed = mli.mli_propose_weights().weights
    for name in ("2.running_mean", "2.running_var", "6.running_mean", "6.running_var"):
        assert not torch.equal(initial[name], proposed[name]), f"{name} did not train"
    assert int(proposed["2.num_batches_tracked"]) == 3
    # Proposing leaves the current model as it was, its BatchNorm statistics included.
    for name, tensor in mli.mli_get_current_weights().weights.items():
        assert torch.equal(tensor, initial[name]), name


@pytest.mark.parametrize("tag", sorted(SMALL))
def test_a_score_depends_on_the_weights_alone(tag: str, build: Callable[..., Any]) -> None:
    mli = build(tag)
    weights = mli.mli_propose_weights()
    first = mli.mli_test_weights(weights)
    mli.mli_propose_weights()  # training in between changes no score
    again = mli.mli_test_weights(weights)
    assert (first.vote_score, first.test_score) == (again.vote_score, again.test_score)


def test_dropout_is_on_in_training_and_off_in_scoring(build: Callable[..., Any]) -> None:
    mli = build("PYTORCH_COVID_XRAY", dropout=0.5)
    probe = torch.rand(PROBES["PYTORCH_COVID_XRAY"], generator=torch.Generator().manual_seed(5))
    network = mli.mli_get_current_model().model
    probe = probe.to(next(network.parameters()).device)
    with torch.no_grad():
        assert torch.equal(network(probe), network(probe)), "evaluation mode is deterministic"
        network.train()
        assert not torch.equal(network(probe), network(probe)), "dropout is active while training"
    assert mli._scratch.training is False


def test_covid_mlp_has_the_documented_shape(build: Callable[..., Any]) -> None:
    shapes = [
        tuple(t.shape)
        for name, t in build("PYTORCH_COVID_XRAY").mli_get_current_weights().weights.items()
        if name.endswith("weight")
    ]
    assert shapes == [(256, 64), (128, 256), (64, 128), (32, 64), (16, 32), (3, 16)]


def test_auc_is_scikit_learns_and_a_guess_on_one_class() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 50)
        scores = rng.integers(0, 6, 50).astype(np.float32)  # many ties
        assert roc_auc(labels, scores) == roc_auc_score(labels, scores)
    # Of the four (positive, negative) pairs, two are ranked right, one is tied (counts half), one is wrong.
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.5, 0.5, 0.2])) == 2.5 / 4
    # One class only: undefined (scikit-learn warns and gives NaN, or raises), scored as a guess.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for labels in (np.ones(5), np.zeros(5), np.array([], dtype=np.int64)):
            assert roc_auc(labels, np.arange(len(labels))) == 0.5


def test_loss_mode_scores_the_negative_cross_entropy(build: Callable[..., Any]) -> None:
    mli = build("PYTORCH_XRAY", vote_on_accuracy=False)
    weights = mli.mli_get_current_weights().weights
    verdict = mli.mli_test_weights(mli.mli_propose_weights())
    assert verdict.criterion == "negative_loss"
    assert verdict.vote_score < 0
    indices = mli._scored["vote"]
    inputs = mli._inputs(indices)
    mli._scratch.load_state_dict(weights)
    with torch.no_grad():
        logits = mli._scratch(inputs).squeeze(1)
    targets = torch.from_numpy(mli._data.labels[indices]).float().to(logits.device)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).item()
    assert mli.vote_score == pytest.approx(-expected, rel=1e-5)


def test_no_cuda_picks_the_cpu_even_where_a_gpu_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_support.torch_device(no_cuda=True).type == "cpu"
    assert torch_support.torch_device(no_cuda=False).type == "cuda"
