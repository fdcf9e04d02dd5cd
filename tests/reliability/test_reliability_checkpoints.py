"""Checkpoints: every accept is on disk before it is acknowledged, a restarted learner resumes from it, and
a checkpoint that is truncated or altered is refused as a whole, reported, and replaced by a fresh model.

Real servers on 127.0.0.1 with real files: in-process learners for the file cases, a learner process and
kill -9 for the crash.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from reliability_kit import ToyFleet, learner_env, set_up_toy, toy_parameters

from backend_client import LearnerClient
from colearn_contract.mli import Weights
from colearn_contract.weights_codec import decode_tensors
from colearn_learner import ExampleMliFactory, GRPCServer, Settings
from colearn_learner.checkpoints import Checkpoint, CheckpointStore

DIGITS = json.dumps({"shard": 0, "n_shards": 2})


class Learner:
    """An in-process learner with a checkpoint folder, and a backend client to drive it."""

    def __init__(self, checkpoint_dir: Path) -> None:
        settings = Settings(host="127.0.0.1", port=0, metrics_port=0, checkpoint_dir=checkpoint_dir)
        self.server = GRPCServer(mli_factory=ExampleMliFactory(), settings=settings).start()
        self.client = LearnerClient("learner", f"127.0.0.1:{self.server.port}").start()

    def close(self) -> None:
        self.client.stop()
        self.server.stop(grace=0)

    def setup(self, model_parameters: str = "{}") -> str:
        return self.client.setup_ml("DIGITS", DIGITS, "SKLEARN_DIGITS", model_parameters)

    def accept_own_proposal(self) -> Weights:
        proposal = self.client.mli_propose_weights()
        self.client.mli_accept_weights(proposal)  # AcceptProposal by id: one accepted round
        return proposal

    def loads(self, outcome: str) -> float:
        registry = self.server.metrics.registry
        return registry.get_sample_value("colearn_checkpoint_loads_total", {"outcome": outcome}) or 0.0

    def writes(self, outcome: str) -> float:
        registry = self.server.metrics.registry
        return registry.get_sample_value("colearn_checkpoint_writes_total", {"outcome": outcome}) or 0.0


@pytest.fixture
def learners(tmp_path: Path) -> Iterator[list[Learner]]:
    """Learners started by the test (``learners.append``), all stopped at teardown."""
    started: list[Learner] = []
    yield started
    for learner in started:
        learner.close()


def start(learners: list[Learner], folder: Path) -> Learner:
    learners.append(Learner(folder))
    return learners[-1]


def only_checkpoint(folder: Path) -> Path:
    files = sorted(folder.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors", files
    return files[0]


def read_checkpoint(path: Path) -> tuple[dict[str, object], bytes]:
    with safetensors.safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["colearn.checkpoint"])
        return meta, f.get_tensor("weights").tobytes()


def test_each_accept_is_written_with_its_round_and_digests(learners: list[Learner], tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    learner = start(learners, folder)
    fresh = learner.setup()
    assert list(folder.iterdir()) == []  # a fresh model has nothing to keep

    proposal = learner.accept_own_proposal()
    status = learner.client.get_status()
    path = only_checkpoint(folder)
    meta, payload = read_checkpoint(path)
    assert meta["model_name"] == "SKLEARN_DIGITS" and meta["dataloader_name"] == "DIGITS"
    assert meta["accepted_rounds"] == status.accepted_rounds == 1
    assert meta["weights_sha256"] == status.weights_sha256 == proposal.weights.sha256 != fresh
    assert len(str(meta["setup_digest"])) == 64
    tensors, _ = decode_tensors(payload)  # the payload is a weights buffer, not a pickle
    assert set(tensors) == {"coef", "intercept"}

    # A SetWeights that names a proposal is that proposal's accept: a round. One without is not.
    second = learner.client.mli_propose_weights()
    learner.client.mli_accept_weights(Weights(second.weights.renamed("")))
    meta, _ = read_checkpoint(only_checkpoint(folder))
    assert (meta["accepted_rounds"], meta["weights_sha256"]) == (1, second.weights.sha256)
    third = learner.client.mli_propose_weights()
    learner.client.mli_accept_weights(third)
    meta, _ = read_checkpoint(only_checkpoint(folder))
    assert (meta["accepted_rounds"], meta["weights_sha256"]) == (2, third.weights.sha256)
    assert learner.writes("ok") == 3 and learner.writes("error") == 0
    # Atomic writes leave no temp file behind.
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_a_restarted_learner_resumes_and_another_setup_starts_fresh(
    learners: list[Learner], tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt"
    first = start(learners, folder)
    fresh = first.setup()
    for _ in range(3):
        last = first.accept_own_proposal()
    before = first.client.get_status()
    first.close()
    learners.remove(first)

    again = start(learners, folder)
    assert again.client.get_status().ready is False  # resuming waits for the same set-up
    assert again.setup() == before.weights_sha256
    after = again.client.get_status()
    assert (after.weights_sha256, after.accepted_rounds) == (before.weights_sha256, 3)
    assert again.loads("resumed") == 1
    # The resumed weights are the model's weights: they are what GetCurrentWeights sends.
    current = again.client.mli_get_current_weights()
    assert current.weights.sha256 == before.weights_sha256
    # A retried accept of the last round (its answer was lost in the crash) does not count it twice.
    again.client.mli_accept_weights(last)
    assert again.client.get_status().accepted_rounds == 3

    # Other parameters are another model: it starts fresh and leaves the first checkpoint alone.
    other = again.setup(json.dumps({"seed": 5}))
    assert other != fresh and again.client.get_status().accepted_rounds == 0
    assert again.setup() == before.weights_sha256  # and the first model resumes again
    assert again.client.get_status().accepted_rounds == 3


#: The set-up digest of ``Learner.setup()`` (SKLEARN_DIGITS on DIGITS shard 0 of 2, default parameters),
#: as every earlier version named its checkpoint. A change here strands the checkpoints of running fleets:
#: a restarted learner would no longer find them.
EARLIER_DIGEST = "c14d090c55cd0eab5821f20a34387b1b6bb3c1655d7d0f2a86d60163ada5502e"


def test_a_checkpoint_named_by_an_earlier_version_is_found(learners: list[Learner], tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    first = start(learners, folder)
    first.setup()
    first.accept_own_proposal()
    before = first.client.get_status()
    path = only_checkpoint(folder)
    assert path.name == f"checkpoint-{EARLIER_DIGEST[:32]}.safetensors"
    assert read_checkpoint(path)[0]["setup_digest"] == EARLIER_DIGEST
    first.close()
    learners.remove(first)

    # A file an earlier version wrote under that name, moved into a new learner's folder, is resumed.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(path, moved / path.name)
    again = start(learners, moved)
    assert again.setup() == before.weights_sha256
    assert again.client.get_status().accepted_rounds == 1 and again.loads("resumed") == 1


@pytest.mark.slow
def test_a_learner_killed_with_sigkill_resumes_every_acknowledged_round(tmp_path: Path) -> None:
    fleet = ToyFleet(1, tmp_path, checkpoints=True)
    try:
        fleet.start()
        client = LearnerClient("toy", fleet.addresses[0]).start()
        set_up_toy(client, toy_parameters())
        for _ in range(3):
            client.mli_accept_weights(client.mli_propose_weights())
        before = client.get_status()
        fleet.kill(0)  # kill -9: no chance to flush anything

        fleet.restart(0)
        assert client.get_status().ready is False
        assert set_up_toy(client, toy_parameters()) == before.weights_sha256
        assert client.get_status().accepted_rounds == 3
        assert "resumed TOY from its checkpoint: round 3" in fleet.log(0)
        client.stop()
    finally:
        fleet.stop_all()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_payload_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _alter_round(path: Path) -> None:
    data = path.read_bytes()
    altered = data.replace(b'accepted_rounds\\": 1', b'accepted_rounds\\": 7')  # same length, valid JSON
    assert altered != data
    path.write_bytes(altered)


def _not_safetensors(path: Path) -> None:
    path.write_bytes(os.urandom(256))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _weights_of_another_model(path: Path) -> None:
    """Sound as a file, every digest right, but the weights do not fit the model."""
    meta, _ = read_checkpoint(path)
    other = safetensors.numpy.save(
        {"w": np.zeros(3, np.float32)}, metadata={"colearn.layout": '{"structure": "dict", "names": ["w"]}'}
    )
    store = CheckpointStore(path.parent)
    store.save(
        Checkpoint(
            model_name=str(meta["model_name"]),
            dataloader_name=str(meta["dataloader_name"]),
            setup_digest=str(meta["setup_digest"]),
            weights_sha256=str(meta["weights_sha256"]),
            accepted_rounds=1,
            payload=other,
        )
    )


@pytest.mark.parametrize(
    "damage",
    [_truncate, _flip_payload_byte, _alter_round, _not_safetensors, _empty, _weights_of_another_model],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_damaged_checkpoint_is_refused_reported_and_replaced_by_a_fresh_model(
    learners: list[Learner], tmp_path: Path, caplog: pytest.LogCaptureFixture, damage
) -> None:
    folder = tmp_path / "ckpt"
    first = start(learners, folder)
    fresh = first.setup()
    first.accept_own_proposal()
    first.close()
    learners.remove(first)
    path = only_checkpoint(folder)
    damage(path)

    again = start(learners, folder)
    with caplog.at_level(logging.ERROR, logger="colearn_learner.model_host"):
        assert again.setup() == fresh
    assert again.client.get_status().accepted_rounds == 0
    assert again.loads("corrupt") == 1 and again.loads("resumed") == 0
    assert any("not usable" in r.getMessage() and "fresh model" in r.getMessage() for r in caplog.records)
    # Set aside for a post-mortem, so that it is reported once, not at every set-up.
    assert (folder / f"{path.name}.corrupt").exists() and not path.exists()
    # The learner works on, and its next accept writes a sound checkpoint again.
    again.accept_own_proposal()
    meta, _ = read_checkpoint(only_checkpoint_besides_corrupt(folder))
    assert meta["accepted_rounds"] == 1


def only_checkpoint_besides_corrupt(folder: Path) -> Path:
    files = [p for p in folder.iterdir() if not p.name.endswith(".corrupt")]
    assert len(files) == 1, files
    return files[0]


def test_a_temp_file_left_by_a_crash_mid_write_is_never_read(learners: list[Learner], tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    first = start(learners, folder)
    first.setup()
    first.accept_own_proposal()
    kept = first.client.get_status()
    first.close()
    learners.remove(first)
    path = only_checkpoint(folder)
    # What a crash between write and rename leaves: a half-written temp file beside the good checkpoint.
    leftover = folder / f".tmp-{path.name}-99999"
    leftover.write_bytes(path.read_bytes()[:100])

    again = start(learners, folder)
    assert not leftover.exists()
    assert again.setup() == kept.weights_sha256


def test_a_failed_checkpoint_write_is_counted_and_the_accept_stands(
    learners: list[Learner], tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt"
    learner = start(learners, folder)
    learner.setup()
    shutil.rmtree(folder)
    folder.write_text("the disk went away")  # every write into the folder now fails

    proposal = learner.accept_own_proposal()

    status = learner.client.get_status()
    assert (status.weights_sha256, status.accepted_rounds) == (proposal.weights.sha256, 1)
    assert learner.writes("error") == 1 and learner.writes("ok") == 0


def test_a_checkpoint_dir_that_cannot_be_written_stops_start_up_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "colearn_learner", "serve", "--port=0", "--metrics-port=0"],
        env=learner_env(checkpoint_dir=str(blocker / "checkpoints")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "checkpoint_dir" in last and str(blocker / "checkpoints") in last, result.stderr
    assert "Traceback" not in result.stderr
