"""Data confinement: a dataloader ``location`` must resolve under the learner's data_root."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from learner_testkit import Learner, TinyRegistry, params, rpc_code, tiny_models

from colearn_contract.v1 import learner_pb2 as pb


@pytest.fixture(scope="module")
def tiny() -> Iterator[TinyRegistry]:
    with tiny_models() as registry:
        yield registry


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """data_root/learner0 holds data; a secret folder lies beside data_root; symlinks point in and out."""
    base = tmp_path_factory.mktemp("confinement")
    root = base / "data_root"
    inside = root / "learner0"
    secret = base / "secret"
    for folder in (inside, secret, root / "nested" / "deeper"):
        folder.mkdir(parents=True)
    np.savez(inside / "data.npz", x=np.arange(4, dtype=np.float32))
    np.savez(secret / "data.npz", x=np.full(4, 99, dtype=np.float32))
    (root / "escape").symlink_to(secret, target_is_directory=True)
    (root / "nested" / "deeper" / "up").symlink_to(
        Path("..") / ".." / ".." / "secret", target_is_directory=True
    )
    (root / "alias").symlink_to(inside, target_is_directory=True)
    return {"root": root, "inside": inside, "secret": secret}


@pytest.fixture(scope="module")
def learner(layout: dict[str, Path]) -> Iterator[Learner]:
    with Learner(data_root=layout["root"]) as learner:
        yield learner


_distinct = itertools.count(1)


def request(location: object, **extra: object) -> pb.MLSetupRequest:
    return pb.MLSetupRequest(
        dataloader_name=TinyRegistry.TINY_FILES,
        dataloader_parameters=params(location=location, **extra),
        model_name=TinyRegistry.TINY_FILE_MODEL,
    )


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("learner0", id="relative"),
        pytest.param("./learner0/", id="dot-relative"),
        pytest.param("nested/../learner0", id="dotdot-that-stays-inside"),
        pytest.param("alias", id="symlink-inside"),
        pytest.param("{root}/learner0", id="absolute-inside"),
    ],
)
def test_locations_under_the_data_root_are_loaded(
    location: str, tiny: TinyRegistry, layout: dict[str, Path], learner: Learner
) -> None:
    location = location.format(root=layout["root"])
    seen_before = len(tiny.loaded_locations)
    # A new scale each time, so that no setup is a no-op repeat of the one before.
    response = learner.stub.MLSetup(request(location, scale=float(next(_distinct))), timeout=30)
    assert response.weights_sha256
    # The dataloader was handed the resolved path, inside the root.
    handed = Path(tiny.loaded_locations[seen_before])
    assert handed.is_absolute()
    assert handed == layout["inside"].resolve()


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("{secret}", id="absolute-elsewhere"),
        pytest.param("/", id="filesystem-root"),
        pytest.param("..", id="parent"),
        pytest.param("../secret", id="dotdot-sibling"),
        pytest.param("learner0/../../secret", id="dotdot-after-a-folder"),
        pytest.param("escape", id="symlink-out"),
        pytest.param("nested/deeper/up", id="relative-symlink-out"),
        pytest.param("{root}/../secret", id="absolute-with-dotdot"),
        pytest.param("{root}/escape", id="absolute-through-symlink"),
    ],
)
def test_locations_outside_the_data_root_are_permission_denied(
    location: str, tiny: TinyRegistry, layout: dict[str, Path], learner: Learner
) -> None:
    location = location.format(root=layout["root"], secret=layout["secret"])
    seen_before = len(tiny.loaded_locations)
    status_before = learner.status()
    code, details = rpc_code(lambda: learner.stub.MLSetup(request(location), timeout=30))
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert "data root" in details
    # The dataloader never ran, so it never opened anything.
    assert len(tiny.loaded_locations) == seen_before
    assert learner.status().weights_sha256 == status_before.weights_sha256


def test_the_secret_folder_really_exists_and_is_readable(layout: dict[str, Path]) -> None:
    # The refusals above are the learner's doing, not a missing or unreadable folder.
    assert (layout["root"] / "escape" / "data.npz").is_file()
    assert os.access(layout["secret"] / "data.npz", os.R_OK)


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        pytest.param({"location": 5}, "location", id="not-a-string"),
        pytest.param({"scale": 2.0}, "location", id="missing"),
        pytest.param({"location": "learner0", "where": "x"}, "where", id="unknown-key"),
    ],
)
def test_bad_location_parameters_are_invalid_argument(
    parameters: dict[str, object], fragment: str, tiny: TinyRegistry, learner: Learner
) -> None:
    bad = pb.MLSetupRequest(
        dataloader_name=tiny.TINY_FILES,
        dataloader_parameters=params(**parameters),
        model_name=tiny.TINY_FILE_MODEL,
    )
    code, details = rpc_code(lambda: learner.stub.MLSetup(bad, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fragment in details


def test_without_a_data_root_locations_are_passed_through(
    tiny: TinyRegistry, layout: dict[str, Path]
) -> None:
    with Learner() as unconfined:
        location = str(layout["inside"])
        unconfined.stub.MLSetup(request(location), timeout=30)
        assert tiny.loaded_locations[-1] == location


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        pytest.param("a" * 256, "a file name holds at most 255", id="component-of-256"),
        pytest.param("d/" + "b" * 300 + "/c", "a file name holds at most 255", id="inner-component"),
        pytest.param("é" * 128, "a file name holds at most 255", id="256-bytes-in-128-characters"),
        pytest.param("p/" * 2100, "a path holds at most 4096", id="path-of-4200-bytes"),
        pytest.param("a\u0000b", "NUL", id="nul-byte"),
    ],
)
@pytest.mark.parametrize("confined", [True, False], ids=["with-data-root", "without-data-root"])
def test_locations_no_file_system_can_name_are_invalid_argument(
    location: str, fragment: str, confined: bool, tiny: TinyRegistry, layout: dict[str, Path], tmp_path: Path
) -> None:
    """Once these reached the loader and failed there with OSError ("File name too long"): INTERNAL."""
    with Learner(data_root=layout["root"] if confined else None) as learner:
        code, details = rpc_code(lambda: learner.stub.MLSetup(request(location), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fragment in details and len(details) < 1000


def test_the_longest_nameable_location_reaches_the_loader(tiny: TinyRegistry, tmp_path: Path) -> None:
    folder = tmp_path / ("f" * 255)
    folder.mkdir()
    np.savez(folder / "data.npz", x=np.arange(3.0))
    with Learner(data_root=tmp_path) as learner:
        learner.stub.MLSetup(request("f" * 255), timeout=30)
    assert tiny.loaded_locations[-1] == str(folder)
