"""Keras weights through the codec's ``{name: ndarray}`` and back, and the rules a Keras learner keeps:
seeded initial weights, proposals that leave the current model alone, scores on a fixed subset."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from colearn_contract.mli import Weights
from colearn_contract.weights_codec import decode_tensors
from colearn_learner import ExampleMliFactory
from colearn_learner.data_cli import data_tools
from colearn_learner.weight_adapters import decode_weights, encode_weights
from colearn_models.support.keras_support import enable_memory_growth

FAST = {"steps_per_epoch": 3, "vote_batches": 1}
CASES = {
    # model: (dataloader, probe shape, model parameters)
    "KERAS_DIGITS": ("DIGITS", (6, 64), {"steps_per_epoch": 3}),
    "KERAS_MNIST": ("KERAS_MNIST", (6, 28, 28, 1), FAST),
    "KERAS_CIFAR10": ("KERAS_CIFAR10", (6, 32, 32, 3), FAST),
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One learner's folder per file-backed dataloader, made by the split tools from their fixtures."""
    tools = data_tools()
    work = tmp_path_factory.mktemp("keras-shards")
    folders = {}
    for tag in ("KERAS_MNIST", "KERAS_CIFAR10"):
        tool = tools[tag]
        folders[tag] = tool.split(tool.fixtures(work / tag / "source", 0), 2, work / tag / "learners", 0)[0]
    return folders


@pytest.fixture
def build(shards: dict[str, Path]) -> Callable[..., Any]:
    factory = ExampleMliFactory()

    def build(model: str, **params: Any) -> Any:
        loader, _, defaults = CASES[model]
        data = {"shard": 0, "n_shards": 2} if loader == "DIGITS" else {"location": str(shards[loader])}
        return factory.get_mli(model, json.dumps({**defaults, **params}), loader, json.dumps(data))

    return build


def probe_of(model: str) -> np.ndarray:
    return np.random.default_rng(3).random(CASES[model][1], dtype=np.float32)


def predict(mli: Any, probe: np.ndarray) -> np.ndarray:
    return np.asarray(mli.mli_get_current_model().model(probe, training=False))


@pytest.mark.parametrize("model", sorted(CASES))
def test_weights_round_trip_through_the_codec_exactly(model: str, build: Callable[..., Any]) -> None:
    sender = build(model)
    sender.mli_accept_weights(sender.mli_propose_weights())  # trained weights, not the initial ones
    receiver = build(model, seed=99)  # another seed: different initial weights until it accepts
    probe = probe_of(model)
    assert not np.array_equal(predict(sender, probe), predict(receiver, probe))

    buffer, signature = encode_weights(sender.mli_get_current_weights())
    tensors, layout = decode_tensors(buffer)
    keras_model = sender.mli_get_current_model().model
    # {"0": ..., "1": ...} in model.get_weights() order: every variable, with its dtype and shape.
    assert list(tensors) == [str(i) for i in range(len(keras_model.weights))]
    assert [(a.dtype, a.shape) for a in tensors.values()] == [
        (np.dtype(v.dtype), tuple(v.shape)) for v in keras_model.weights
    ]
    assert layout.structure == "list"

    receiver.mli_accept_weights(decode_weights(buffer, expected=signature))
    np.testing.assert_array_equal(predict(receiver, probe), predict(sender, probe))
    assert encode_weights(receiver.mli_get_current_weights())[0] == buffer, "nothing changed on the way back"


@pytest.mark.parametrize("model", sorted(CASES))
def test_learners_built_alike_start_from_the_same_weights(model: str, build: Callable[..., Any]) -> None:
    first, second = build(model), build(model)
    assert (
        encode_weights(first.mli_get_current_weights())[0]
        == encode_weights(second.mli_get_current_weights())[0]
    )
    assert (
        encode_weights(build(model, seed=1).mli_get_current_weights())[0]
        != encode_weights(first.mli_get_current_weights())[0]
    )


def test_proposing_leaves_the_current_model_and_scores_alone(build: Callable[..., Any]) -> None:
    mli = build("KERAS_MNIST")
    current = encode_weights(mli.mli_get_current_weights())[0]
    verdict = mli.mli_test_weights(mli.mli_get_current_weights())
    proposals = [mli.mli_propose_weights() for _ in range(2)]
    assert encode_weights(mli.mli_get_current_weights())[0] == current
    # Each proposal trains on the next batches of the learner's data, from the same current weights.
    assert encode_weights(proposals[0])[0] != encode_weights(proposals[1])[0]
    again = mli.mli_test_weights(Weights(weights=decode_weights(current).weights))
    assert (again.vote_score, again.test_score) == (verdict.vote_score, verdict.test_score)


def test_scores_look_at_vote_batches_times_batch_size_samples(shards: dict[str, Path]) -> None:
    """The fixture shard's vote split holds 35 images; 2 batches of 8 score 16 of them, always the same."""
    factory = ExampleMliFactory()
    data = json.dumps({"location": str(shards["KERAS_MNIST"]), "batch_size": 8, "vote_ratio": 0.1})
    mli = factory.get_mli(
        "KERAS_MNIST", json.dumps({"steps_per_epoch": 2, "vote_batches": 2}), "KERAS_MNIST", data
    )
    for _ in range(3):
        proposal = mli.mli_propose_weights()
        verdict = mli.mli_test_weights(proposal)
        assert verdict.vote_score * 16 == pytest.approx(round(verdict.vote_score * 16))
        assert mli.mli_test_weights(proposal).vote_score == verdict.vote_score
    assert len(mli._scored["vote"][1]) == 16


def test_memory_growth_is_switched_on_for_every_gpu() -> None:
    """No GPU here: a stand-in for ``tf.config`` records the calls, one GPU already initialised elsewhere."""
    calls = []

    class Experimental:
        @staticmethod
        def set_memory_growth(device: Any, enable: bool) -> None:
            calls.append((device.name, enable))
            if device.name.endswith(":1"):
                raise RuntimeError("Physical devices cannot be modified after being initialized")

    class Device:
        def __init__(self, name: str) -> None:
            self.name = name

    class Config:
        experimental = Experimental

        @staticmethod
        def list_physical_devices(kind: str) -> list[Device]:
            return [Device(f"/physical_device:{kind}:{i}") for i in range(3)] if kind == "GPU" else []

    class FakeTf:
        config = Config

    enabled = enable_memory_growth(FakeTf)
    assert [name for name, on in calls if on] == [f"/physical_device:GPU:{i}" for i in range(3)]
    assert enabled == ["/physical_device:GPU:0", "/physical_device:GPU:2"]
