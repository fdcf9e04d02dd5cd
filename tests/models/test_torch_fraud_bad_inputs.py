"""Bad data for PYTORCH_XRAY, PYTORCH_COVID_XRAY and FRAUD: every case is the client's mistake, answered by
``MLSetup`` with ``INVALID_ARGUMENT`` and a message naming what was expected; never ``INTERNAL``.

One real learner serves every case over gRPC, confined to a data root where each case builds its folder.
Its ``QuerySupportedSystem`` shows each family's parameters and defaults.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from zoo_kit import grpc_fleet

from backend_client import LearnerClient, LearnerError

Build = Callable[[Path], None]


def npz(**arrays: np.ndarray) -> Build:
    return lambda folder: np.savez(folder / "data.npz", **arrays)


def jpeg_folders(normal: int, pneumonia: int, broken: str = "") -> Build:
    def build(folder: Path) -> None:
        from PIL import Image

        for name, count in (("NORMAL", normal), ("PNEUMONIA", pneumonia)):
            (folder / name).mkdir()
            for k in range(count):
                Image.new("L", (20, 24), color=40 * k).save(folder / name / f"{k}.jpeg")
        if broken:
            (folder / broken).write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")

    return build


def bare_npy(folder: Path) -> None:
    with (folder / "data.npz").open("wb") as handle:
        np.save(handle, np.zeros((20, 5), np.float32))


def damaged_npz(folder: Path) -> None:
    """A compressed archive whose deflated bytes are overwritten: zlib, not numpy, finds the damage."""
    np.savez_compressed(folder / "data.npz", features=np.arange(4000, dtype=np.float32).reshape(800, 5))
    data = bytearray((folder / "data.npz").read_bytes())
    data[100:160] = bytes(60)
    (folder / "data.npz").write_bytes(bytes(data))


def only(path: str) -> Build:
    def build(folder: Path) -> None:
        (folder / path).mkdir(parents=True)

    return build


F32 = np.float32
CASES: dict[str, tuple[str, Build | None, str]] = {
    # name: (family, how the learner's folder is made (None: it does not exist), part of the message)
    "xray/no folder": ("PYTORCH_XRAY", None, "is not a folder; expected one holding NORMAL/, PNEUMONIA/"),
    "xray/no PNEUMONIA": ("PYTORCH_XRAY", only("NORMAL"), "lacks PNEUMONIA/"),
    "xray/empty class": ("PYTORCH_XRAY", jpeg_folders(3, 0), "PNEUMONIA holds no .jpeg or .jpg files"),
    "xray/broken jpeg": (
        "PYTORCH_XRAY",
        jpeg_folders(3, 3, "NORMAL/bad.jpeg"),
        "bad.jpeg is not a readable JPEG",
    ),
    "xray/class is a file": (
        "PYTORCH_XRAY",
        lambda f: (only("NORMAL")(f), (f / "PNEUMONIA").write_text("x")),
        "PNEUMONIA is not a folder",
    ),
    "xray/too few images": ("PYTORCH_XRAY", jpeg_folders(1, 1), "2 samples are too few"),
    "covid/no data.npz": ("PYTORCH_COVID_XRAY", only("other"), "lacks data.npz"),
    "covid/not an npz": (
        "PYTORCH_COVID_XRAY",
        lambda f: (f / "data.npz").write_text("hello"),
        "is not a readable .npz file",
    ),
    "covid/32 features": (
        "PYTORCH_COVID_XRAY",
        npz(features=np.zeros((20, 32), F32), labels=np.zeros(20, int)),
        "expected shape Nx64",
    ),
    "covid/missing labels": (
        "PYTORCH_COVID_XRAY",
        npz(features=np.zeros((20, 64), F32)),
        "lacks arrays labels",
    ),
    "covid/label 3": (
        "PYTORCH_COVID_XRAY",
        npz(features=np.zeros((20, 64), F32), labels=np.full(20, 3)),
        "must lie in 0..2",
    ),
    "covid/empty shard": (
        "PYTORCH_COVID_XRAY",
        npz(features=np.zeros((0, 64), F32), labels=np.zeros(0, int)),
        "holds no samples (an empty shard)",
    ),
    "covid/NaN": (
        "PYTORCH_COVID_XRAY",
        npz(features=np.full((20, 64), np.nan, F32), labels=np.zeros(20, int)),
        "NaN or infinities",
    ),
    "fraud/no data.npz": ("FRAUD", only("x"), "lacks data.npz; expected a folder holding data.npz"),
    "fraud/1-D features": (
        "FRAUD",
        npz(features=np.zeros(20, F32), labels=np.zeros(20, int)),
        "expected shape NxN",
    ),
    "fraud/lengths differ": (
        "FRAUD",
        npz(features=np.zeros((20, 5), F32), labels=np.zeros(19, int)),
        "differ in length",
    ),
    "fraud/label 2": (
        "FRAUD",
        npz(features=np.zeros((20, 5), F32), labels=np.full(20, 2)),
        "must lie in 0..1 (legitimate, fraud)",
    ),
    "fraud/a bare .npy array": ("FRAUD", bare_npy, "holds one bare array (.npy)"),
    "fraud/a damaged compressed archive": ("FRAUD", damaged_npz, "is not a readable .npz file"),
    "fraud/empty shard": (
        "FRAUD",
        npz(features=np.zeros((0, 5), F32), labels=np.zeros(0, int)),
        "holds no samples (an empty shard)",
    ),
    "fraud/string labels": (
        "FRAUD",
        npz(features=np.zeros((20, 5), F32), labels=np.array(["no"] * 20)),
        "array 'labels'",
    ),
}


@pytest.fixture(scope="module")
def learner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LearnerClient, Path]]:
    root = tmp_path_factory.mktemp("data-root")
    with grpc_fleet(1, data_root=root) as fleet:
        yield fleet.clients[0], root


def refusal(
    client: LearnerClient, family: str, data: dict[str, object], model: dict[str, object]
) -> LearnerError:
    with pytest.raises(LearnerError) as caught:
        client.setup_ml(family, json.dumps(data), family, json.dumps(model))
    return caught.value


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_is_invalid_argument_naming_what_was_expected(
    case: str, learner: tuple[LearnerClient, Path]
) -> None:
    client, root = learner
    family, build, message = CASES[case]
    location = case.replace("/", "-").replace(" ", "_")
    if build is not None:
        (root / location).mkdir()
        build(root / location)
    error = refusal(client, family, {"location": location}, {})
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert message in error.details
    assert not client.get_status().ready, "a refused setup sets nothing up"


@pytest.mark.parametrize("family", ["PYTORCH_XRAY", "PYTORCH_COVID_XRAY", "FRAUD"])
def test_bad_parameters_are_refused_before_any_file_is_read(
    family: str, learner: tuple[LearnerClient, Path]
) -> None:
    client, _ = learner
    error = refusal(client, family, {"location": "nowhere", "colour": "red"}, {})
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown parameter 'colour'" in error.details
    error = refusal(client, family, {}, {})
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "location" in error.details
    error = refusal(client, family, {"location": "x"}, {"steps_per_epoch": 0})
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "steps_per_epoch" in error.details
    error = refusal(client, family, {"location": "x"}, {"learning_rate": 1e300})
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "learning_rate" in error.details
    error = refusal(client, family, {"location": "../outside"}, {})
    assert error.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("model", ["PYTORCH_DIGITS", "SKLEARN_DIGITS"])
def test_the_largest_learning_rate_a_client_may_set_trains_without_an_internal_error(model: str) -> None:
    # Above float32's range torch's Adam used to fail inside ProposeWeights, which answered INTERNAL.
    with grpc_fleet(1) as fleet:
        client = fleet.clients[0]
        with pytest.raises(LearnerError) as caught:
            client.setup_ml("DIGITS", "{}", model, json.dumps({"learning_rate": 1e300}))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "learning_rate" in caught.value.details
        client.setup_ml("DIGITS", "{}", model, json.dumps({"learning_rate": 1000.0}))
        proposal = client.mli_propose_weights()  # it diverges, as it should, but it answers
        assert client.mli_test_weights(proposal).vote_score is not None


def test_supported_system_shows_the_families_and_their_defaults(learner: tuple[LearnerClient, Path]) -> None:
    supported = learner[0].get_supported_system()
    image_loader = {"train_ratio", "vote_ratio", "batch_size", "seed"}
    for family in ("PYTORCH_XRAY", "PYTORCH_COVID_XRAY", "FRAUD"):
        assert set(supported["data_loaders"][family]) == image_loader
        assert supported["required_parameters"][family] == ["location"]
        assert supported["compatibilities"][family] == [family]
        assert {"steps_per_epoch", "vote_batches", "learning_rate"} <= set(
            supported["model_architectures"][family]
        )
    for family in ("PYTORCH_XRAY", "PYTORCH_COVID_XRAY"):
        assert supported["model_architectures"][family]["no_cuda"] is False
    assert supported["model_architectures"]["PYTORCH_XRAY"]["vote_on_accuracy"] is True
    assert supported["data_loaders"]["PYTORCH_XRAY"]["batch_size"] == 8
