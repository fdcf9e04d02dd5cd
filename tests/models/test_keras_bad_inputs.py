"""Bad data for the KERAS_MNIST and KERAS_CIFAR10 dataloaders: each is refused with INVALID_ARGUMENT and a
message naming what was expected, before any framework is imported. The parameters a user probing a
learner sees are the documented defaults, and unknown ones are refused."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from zoo_kit import grpc_fleet

from backend_client import LearnerError
from colearn_learner.errors import InvalidParametersError
from colearn_models.keras_cifar10.models import prepare_keras_cifar10_data
from colearn_models.keras_mnist.models import prepare_keras_mnist_data

LOADERS = {
    "KERAS_MNIST": (prepare_keras_mnist_data, (28, 28, 1)),
    "KERAS_CIFAR10": (prepare_keras_cifar10_data, (32, 32, 3)),
}


def write_shard(folder: Path, **arrays: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", **arrays)
    return folder


def good_arrays(shape: tuple[int, ...], n: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.random((n, *shape), dtype=np.float32), "labels": rng.integers(0, 10, n)}


def bad_cases(shape: tuple[int, ...]) -> dict[str, tuple[dict[str, np.ndarray], str]]:
    good = good_arrays(shape)
    flat = good["images"].reshape(50, -1)
    return {
        "no channel axis": (
            {**good, "images": good["images"][..., 0]},
            "expected shape Nx" + "x".join(map(str, shape)),
        ),
        "wrong image size": (
            {**good, "images": np.zeros((50, 16, 16, shape[2]), np.float32)},
            "expected shape",
        ),
        "flat images": ({**good, "images": flat}, "expected shape"),
        "integer images": ({**good, "images": (good["images"] * 255).astype(np.int32)}, "expected shape"),
        "uint16 images": ({**good, "images": (good["images"] * 255).astype(np.uint16)}, "expected uint8"),
        "floats over 1": ({**good, "images": good["images"] * 255}, r"expected values in \[0, 1\]"),
        "NaN pixels": (
            {**good, "images": np.full_like(good["images"], np.nan)},
            r"expected values in \[0, 1\]",
        ),
        "float labels": ({**good, "labels": good["labels"].astype(np.float32)}, "'labels'"),
        "label 10": ({**good, "labels": np.full(50, 10)}, "expected class numbers 0-9"),
        "negative label": ({**good, "labels": np.full(50, -1)}, "expected class numbers 0-9"),
        "no labels": ({"images": good["images"]}, "lacks arrays labels"),
        "length mismatch": ({**good, "labels": good["labels"][:10]}, "differ in length"),
        "empty shard": ({"images": good["images"][:0], "labels": good["labels"][:0]}, "empty shard"),
        "too few to split": ({"images": good["images"][:3], "labels": good["labels"][:3]}, "too few"),
    }


@pytest.mark.parametrize("tag", sorted(LOADERS))
def test_every_kind_of_bad_shard_is_refused_with_what_was_expected(tag: str, tmp_path: Path) -> None:
    load, shape = LOADERS[tag]
    for case, (arrays, message) in bad_cases(shape).items():
        folder = write_shard(tmp_path / case.replace(" ", "_"), **arrays)
        with pytest.raises(InvalidParametersError, match=message) as caught:
            load(location=str(folder))
        assert tag in str(caught.value), case


@pytest.mark.parametrize("tag", sorted(LOADERS))
def test_missing_folders_files_and_unreadable_files(tag: str, tmp_path: Path) -> None:
    load, _ = LOADERS[tag]
    with pytest.raises(InvalidParametersError, match=r"is not a folder; expected one holding data\.npz"):
        load(location=str(tmp_path / "nowhere"))
    with pytest.raises(InvalidParametersError, match=r"lacks data\.npz"):
        load(location=str(tmp_path))
    (tmp_path / "data.npz").write_bytes(b"not a zip archive")
    with pytest.raises(InvalidParametersError, match=r"not a readable \.npz"):
        load(location=str(tmp_path))
    # Arrays of Python objects would need pickle, which a learner never loads.
    np.savez(tmp_path / "data.npz", images=np.array([object()] * 3), labels=np.zeros(3, np.int64))
    with pytest.raises(InvalidParametersError, match=r"not a readable \.npz"):
        load(location=str(tmp_path))


@pytest.mark.parametrize("tag", sorted(LOADERS))
def test_uint8_and_float_shards_reach_the_model_alike(tag: str, tmp_path: Path) -> None:
    load, shape = LOADERS[tag]
    pixels = np.random.default_rng(1).integers(0, 256, (40, *shape), dtype=np.uint8)
    labels = np.arange(40) % 10
    as_bytes = load(location=str(write_shard(tmp_path / "u8", images=pixels, labels=labels)))
    as_floats = load(
        location=str(write_shard(tmp_path / "f32", images=pixels / np.float32(255), labels=labels))
    )
    for split in ("train", "vote", "test"):
        a, b = getattr(as_bytes, split), getattr(as_floats, split)
        assert a.x.dtype == np.float32 and a.y.dtype == np.int64
        np.testing.assert_allclose(a.x, b.x, rtol=1e-6)
        np.testing.assert_array_equal(a.y, b.y)
    # The default ratios: 80% train, 10% vote, the rest test; disjoint, and every sample used once.
    assert (len(as_bytes.train.y), len(as_bytes.vote.y), len(as_bytes.test.y)) == (32, 4, 4)


def test_splits_are_disjoint_and_follow_the_seed(tmp_path: Path) -> None:
    n = 200
    images = np.arange(n, dtype=np.float32)[:, None, None, None] / n * np.ones((1, 28, 28, 1), np.float32)
    folder = write_shard(tmp_path, images=images, labels=np.arange(n) % 10)

    def ids(seed: int) -> list[set[int]]:
        data = prepare_keras_mnist_data(location=str(folder), seed=seed)
        return [set(np.rint(s.x[:, 0, 0, 0] * n).astype(int)) for s in (data.train, data.vote, data.test)]

    train, vote, test = ids(1)
    assert not (train & vote or train & test or vote & test)
    assert train | vote | test == set(range(n))
    assert ids(1) == [train, vote, test]
    assert ids(2)[1] != vote


def test_grpc_setup_on_bad_data_is_invalid_argument_naming_the_files(tmp_path: Path) -> None:
    write_shard(
        tmp_path / "learner_0", **{**good_arrays((28, 28, 1)), "images": np.zeros((50, 28, 28), np.float32)}
    )
    with grpc_fleet(1, data_root=tmp_path) as fleet:
        client = fleet.clients[0]
        for tag, location, named in (
            ("KERAS_MNIST", "learner_0", "expected shape Nx28x28x1"),
            ("KERAS_MNIST", "missing", "expected one holding data.npz"),
            ("KERAS_CIFAR10", "learner_0", "expected shape Nx32x32x3"),
        ):
            with pytest.raises(LearnerError) as caught:
                client.setup_ml(tag, json.dumps({"location": location}), tag, "{}")
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert named in str(caught.value)
        with pytest.raises(LearnerError) as caught:
            client.setup_ml(
                "KERAS_MNIST", json.dumps({"location": "learner_0"}), "KERAS_MNIST", '{"epochs": 3}'
            )
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown parameter 'epochs'" in str(caught.value) and "steps_per_epoch" in str(caught.value)
        assert not client.get_status().ready


def test_probing_a_learner_shows_the_keras_defaults() -> None:
    with grpc_fleet(1) as fleet:
        supported = fleet.clients[0].get_supported_system()
    loaders, models = supported["data_loaders"], supported["model_architectures"]
    image_loader = {"train_ratio": 0.8, "vote_ratio": 0.1, "batch_size": 64, "seed": 42}
    assert loaders["KERAS_MNIST"] == loaders["KERAS_CIFAR10"] == image_loader
    assert supported["required_parameters"]["KERAS_MNIST"] == ["location"]
    for model in ("KERAS_MNIST", "KERAS_MNIST_RESNET", "KERAS_CIFAR10"):
        assert {"steps_per_epoch", "vote_batches", "learning_rate"} <= set(models[model])
        assert models[model]["learning_rate"] == 0.001
    assert models["KERAS_MNIST"]["steps_per_epoch"] == 100 and models["KERAS_MNIST"]["vote_batches"] == 10
    compatible = supported["compatibilities"]
    assert compatible["KERAS_MNIST"] == compatible["KERAS_MNIST_RESNET"] == ["KERAS_MNIST"]
    assert compatible["KERAS_CIFAR10"] == ["KERAS_CIFAR10"]
    assert compatible["KERAS_DIGITS"] == ["DIGITS"]
