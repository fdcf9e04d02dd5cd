"""The full learner image (keras,torch): built once, it sets up KERAS_DIGITS and PYTORCH_DIGITS and serves
a round, driven by the backend image over a network of their own. No compose here: the learners become
healthy through the image's own HEALTHCHECK.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import e2e_images
import pytest
from e2e_docker import PrivateDockerd
from e2e_images import Built, LightImages
from e2e_timings import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

N_LEARNERS = 2
BACKEND_UID = 10001


@pytest.fixture(scope="module")
def full_image(engine: PrivateDockerd, base_image: Built, wheelhouse: str) -> Iterator[Built]:
    built = e2e_images.build(
        engine,
        "learner_image/Dockerfile",
        "colearn-learner:e2e-full",
        BASE_IMAGE=base_image.tag,
        WHEELHOUSE=wheelhouse,
        EXTRAS="keras,torch",
    )
    e2e_images.remove_dangling(engine)
    record(build_full_s=built.seconds, image_full_mb=built.size_mb)
    yield built
    engine.docker("image", "rm", "--force", built.tag, check=False)  # 2+ GB the later steps do not need


@pytest.fixture
def network(engine: PrivateDockerd) -> Iterator[str]:
    """A user-defined network with learner containers on it, all removed (with their volumes) at the end."""
    baseline = engine.state()
    name = f"colearn-e2e-full-{os.getpid()}"
    engine.docker("network", "create", name)
    try:
        yield name
    finally:
        containers = engine.docker("ps", "-aq", "--filter", f"network={name}").stdout.split()
        if containers:
            engine.docker("rm", "--force", "--volumes", *containers, check=False)
        engine.docker("network", "rm", name, check=False)
    assert engine.state() == baseline


def wait_healthy(engine: PrivateDockerd, containers: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = engine.inspect("container", *containers)
        states = [c["State"].get("Health", {}).get("Status") for c in found]
        if states == ["healthy"] * len(containers):
            return
        if time.monotonic() > deadline:
            logs = "\n".join(engine.docker("logs", c, check=False).stderr[-2000:] for c in containers)
            pytest.fail(f"learners not healthy within {timeout} s: {states}\n{logs}")
        time.sleep(1)


@pytest.mark.parametrize("model", ["PYTORCH_DIGITS", "KERAS_DIGITS"])
def test_full_image_sets_up_the_model_and_serves_a_round(
    engine: PrivateDockerd,
    full_image: Built,
    light_images: LightImages,
    network: str,
    model: str,
    tmp_path: Path,
) -> None:
    learner = ["run", "--detach", f"--network={network}", "--network-alias=learner", "--memory=2g"]
    containers = [engine.docker(*learner, full_image.tag).stdout.strip() for _ in range(N_LEARNERS)]
    wait_healthy(engine, containers)
    os.chown(tmp_path, BACKEND_UID, BACKEND_UID)
    run = engine.docker(
        "run", "--rm", f"--network={network}", f"--volume={tmp_path}:/results", light_images.backend.tag,
        "run", "--dns=learner:9995", f"--model_tag={model}", "--dataloader_tag=DIGITS", "--rounds=1",
        "--out=/results", "--round_timeout=300",
        check=False, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["model_tag"] == model
    assert len(results["run"]["learners"]) == N_LEARNERS
    initial, played = results["results"]
    assert all(score is not None for score in initial["test_scores"])
    # The round counted: the proposer trained, the other learner answered with a vote and scores.
    assert not played["void"] and played["errors"] == {}
    assert played["outcomes"].count("proposer") == 1
    assert set(played["outcomes"]) - {"proposer"} <= {"approve", "reject"}
