"""``colearn-backend export``: the model out of a DIGITS fleet, from a learner or from its checkpoint.

A fleet of three real learners (gRPC on 127.0.0.1, each with its own checkpoint folder and DIGITS shard)
runs three rounds. Then the model goes out three ways: the weights from a learner's address, the weights
from that learner's checkpoint, and the framework-native file through the learner. Each is loaded with the
plain libraries (``safetensors.numpy``/``safetensors.torch``, ``load_state_dict``,
``keras.saving.load_model``) into a fresh model of the family, built in this process on the learner's own
shard, and must score exactly what the fleet scored. Every mistake is one ``ExportError`` line, and the
command exits 1 with one line and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from conftest import free_port
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backend_client import (
    LearnerClient,
    Results,
    collective_learning_round,
    initial_result,
    set_equal_weights,
)
from backend_client.errors import LearnerError
from backend_client.learner_client import Deadlines
from backend_client.model_export import (
    CHECKPOINT_DIGEST,
    CHECKPOINT_FORMAT,
    CHECKPOINT_META,
    CHECKPOINT_PAYLOAD,
    ExportError,
    checkpoint_digest,
    export_from_checkpoint,
    export_from_learner,
    read_checkpoint,
)
from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.model_file import (
    DATALOADER_KEY,
    MODEL_KEY,
    MODEL_PARAMETERS_KEY,
    ROUND_KEY,
    SOURCE_KEY,
    WEIGHTS_SHA256_KEY,
    model_metadata,
)
from colearn_learner import ExampleMliFactory, FactoryRegistry, GRPCServer
from colearn_learner import checkpoints as learner_checkpoints
from colearn_runtime.transport_security import ClientSecurity

N_LEARNERS = 3
N_ROUNDS = 3
BIN = Path(sys.executable).parent
# Wide enough that rich never wraps an error line.
ENV = {**os.environ, "COLUMNS": "1000", "NO_COLOR": "1"}


def shard(i: int, n: int = N_LEARNERS) -> str:
    return json.dumps({"shard": i, "n_shards": n})


@dataclass
class Fleet:
    model: str
    servers: list[GRPCServer]
    clients: list[LearnerClient]
    checkpoint_dirs: list[Path]
    results: Results

    def scored(self) -> list[tuple[int, float]]:
        """(learner, test score of its current weights) for every learner that scored them: a voter of
        the proposal it holds. The proposer of an accepted round holds weights it never scored."""
        scores = [(i, c.get_status().test_score) for i, c in enumerate(self.clients)]
        found = [(i, s) for i, s in scores if s is not None]
        assert found, "no learner scored the fleet's current weights"
        return found

    def checkpoint(self, i: int) -> Path:
        (path,) = self.checkpoint_dirs[i].glob("checkpoint-*.safetensors")
        return path


def run_fleet(
    start_server: Callable[..., GRPCServer],
    tmp: Path,
    model: str,
    n: int = N_LEARNERS,
    rounds: int = N_ROUNDS,
) -> Fleet:
    dirs = [tmp / f"learner_{i}" for i in range(n)]
    servers = [start_server(checkpoint_dir=d) for d in dirs]
    clients = [LearnerClient(f"learner-{i}", f"127.0.0.1:{s.port}").start() for i, s in enumerate(servers)]
    for i, client in enumerate(clients):
        client.setup_ml("DIGITS", shard(i, n), model, "{}")
    set_equal_weights(clients)
    results = Results()
    results.data.append(initial_result(clients))
    for round_index in range(rounds):
        results.data.append(collective_learning_round(clients, 0.5, round_index))
    assert any(r.vote for r in results.rounds), "no round was accepted: nothing to compare"
    return Fleet(model, servers, clients, dirs, results)


@pytest.fixture(scope="module")
def start_module_server() -> Iterator[Callable[..., GRPCServer]]:
    """``start_server`` for a whole module: the fleets are shared by the tests that read them."""
    from colearn_learner import Settings

    servers: list[GRPCServer] = []

    def start(**settings: Any) -> GRPCServer:
        base = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "grace_seconds": 1.0}
        server = GRPCServer(mli_factory=ExampleMliFactory(), settings=Settings(**{**base, **settings}))
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop(grace=0)


@pytest.fixture(scope="module", params=["SKLEARN_DIGITS", "PYTORCH_DIGITS"])
def fleet(
    request: pytest.FixtureRequest,
    start_module_server: Callable[..., GRPCServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    fleet = run_fleet(start_module_server, tmp_path_factory.mktemp(request.param), request.param)
    yield fleet
    for client in fleet.clients:
        client.stop()


def fresh_mli(model: str, i: int, n: int = N_LEARNERS) -> Any:
    """A fresh model of the family on learner ``i``'s shard, built here: what a user of the file has."""
    return ExampleMliFactory().get_mli(model, "{}", "DIGITS", shard(i, n))


def load_weights(model: str, path: Path) -> Any:
    """The file read with the plain library a user of the family would use."""
    if model == "PYTORCH_DIGITS":
        from safetensors.torch import load_file

        return OrderedDict(load_file(str(path)))
    return safetensors.numpy.load_file(str(path))


def metadata_of(path: Path) -> dict[str, str]:
    with safetensors.safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


# --- the model out, three ways ------------------------------------------------------------------------


def test_weights_from_a_learner_score_what_the_fleet_scored(fleet: Fleet, tmp_path: Path) -> None:
    for i, fleet_score in fleet.scored():
        client = fleet.clients[i]
        path = export_from_learner(client.address, tmp_path / f"learner_{i}.safetensors")
        status = client.get_status()
        assert metadata_of(path) | {"colearn.layout": ""} == {
            MODEL_KEY: fleet.model,
            DATALOADER_KEY: "DIGITS",
            ROUND_KEY: str(status.accepted_rounds),
            WEIGHTS_SHA256_KEY: status.weights_sha256,
            SOURCE_KEY: f"learner {client.address}",
            "colearn.layout": "",
        }
        assert status.accepted_rounds == sum(1 for r in fleet.results.rounds if r.vote)
        mli = fresh_mli(fleet.model, i)
        verdict = mli.mli_test_weights(Weights(load_weights(fleet.model, path)))
        assert verdict.test_score == fleet_score
        last = next(r for r in reversed(fleet.results.rounds) if r.vote)
        if last.test_scores[i] is not None:
            assert verdict.test_score == last.test_scores[i]  # what results.json recorded for the round


def test_weights_from_a_checkpoint_are_the_learners_and_score_alike(fleet: Fleet, tmp_path: Path) -> None:
    i, fleet_score = fleet.scored()[0]
    from_learner = export_from_learner(fleet.clients[i].address, tmp_path / "learner")
    from_checkpoint = export_from_checkpoint(fleet.checkpoint(i), tmp_path / "checkpoint")
    assert (from_learner.name, from_checkpoint.name) == ("learner.safetensors", "checkpoint.safetensors")
    learner_meta, checkpoint_meta = metadata_of(from_learner), metadata_of(from_checkpoint)
    assert checkpoint_meta[SOURCE_KEY] == f"checkpoint {fleet.checkpoint(i).resolve()}"
    assert {k: v for k, v in checkpoint_meta.items() if k != SOURCE_KEY} == {
        k: v for k, v in learner_meta.items() if k != SOURCE_KEY
    }
    a, b = safetensors.numpy.load_file(str(from_learner)), safetensors.numpy.load_file(str(from_checkpoint))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    mli = fresh_mli(fleet.model, i)
    assert mli.mli_test_weights(Weights(load_weights(fleet.model, from_checkpoint))).test_score == fleet_score


def test_the_native_file_loads_into_a_fresh_model_of_the_family(fleet: Fleet, tmp_path: Path) -> None:
    i, fleet_score = fleet.scored()[0]
    path = export_from_learner(fleet.clients[i].address, tmp_path / "native", native=True)
    assert path.suffix == ".safetensors"
    meta = metadata_of(path)
    assert (meta[MODEL_KEY], json.loads(meta[MODEL_PARAMETERS_KEY])) == (fleet.model, {})
    assert meta[WEIGHTS_SHA256_KEY] == fleet.clients[i].get_status().weights_sha256
    mli = fresh_mli(fleet.model, i)
    model = mli.mli_get_current_model().model
    if fleet.model == "PYTORCH_DIGITS":
        import torch
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(path)))  # torch's own, strict
        x, y = mli._splits["test"]
        with torch.no_grad():
            accuracy = float((model(x).argmax(dim=1) == y).float().mean())
    else:
        for name, array in safetensors.numpy.load_file(str(path)).items():
            setattr(model, name, array)  # coef_, intercept_, classes_ of a fresh SGDClassifier
        accuracy = float(np.mean(model.predict(mli._data.test.x) == mli._data.test.y))
    assert accuracy == fleet_score


def test_a_keras_digits_fleet_exports_a_keras_file_that_predicts_as_the_learner_scores(
    start_server: Callable[..., GRPCServer], tmp_path: Path
) -> None:
    """One Keras test: its import costs ~5 s. The ``.keras`` zip loads with Keras' own loader."""
    fleet = run_fleet(start_server, tmp_path, "KERAS_DIGITS", n=2, rounds=2)
    try:
        i, fleet_score = fleet.scored()[0]
        path = export_from_learner(fleet.clients[i].address, tmp_path / "model", native=True)
    finally:
        for client in fleet.clients:
            client.stop()
    assert path.name == "model.keras"
    from colearn_models.support.keras_support import import_keras, predict_in_batches

    keras = import_keras()
    model = keras.saving.load_model(path)  # safe_mode: refuses anything that would run code
    x, y = fresh_mli("KERAS_DIGITS", i, n=2)._scored["test"]
    accuracy = float(np.mean(predict_in_batches(model, x, 256).argmax(axis=1) == y))
    assert accuracy == fleet_score


def test_a_keras_model_with_a_lambda_layer_has_no_keras_file() -> None:
    from colearn_learner.model_files import NoModelFileError
    from colearn_models.support.keras_support import import_keras, keras_file

    keras = import_keras()
    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs), name="doubler")
    with pytest.raises(NoModelFileError, match="Lambda layer"):
        keras_file(model)


EXPORT_IN_A_BACKEND = """
import json, sys, pathlib
from backend_client.model_export import export_from_checkpoint, export_from_learner
out = pathlib.Path(sys.argv[3])
export_from_learner(sys.argv[1], out / "learner")
export_from_learner(sys.argv[1], out / "native", native=True)
export_from_checkpoint(pathlib.Path(sys.argv[2]), out / "checkpoint")
forbidden = ("colearn_learner", "torch", "tensorflow", "keras", "sklearn")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in forbidden)))
"""


def test_exports_load_no_framework_in_the_backend(fleet: Fleet, tmp_path: Path) -> None:
    argv = [fleet.clients[0].address, str(fleet.checkpoint(0)), str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_IN_A_BACKEND, *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.safetensors",
        "learner.safetensors",
        "native.safetensors",
    ]


# --- mistakes ---------------------------------------------------------------------------------------------


def test_an_existing_file_is_kept_unless_forced(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"keep me")
    address = fleet.clients[0].address
    with pytest.raises(ExportError, match="exists already; pass --force"):
        export_from_learner(address, out)
    with pytest.raises(ExportError, match="exists already"):
        export_from_checkpoint(fleet.checkpoint(0), out)
    assert out.read_bytes() == b"keep me"
    assert export_from_learner(address, out, force=True) == out
    assert MODEL_KEY in metadata_of(out)


def test_a_wrong_suffix_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"must end in \.safetensors"):
        export_from_learner(fleet.clients[0].address, tmp_path / "model.keras")


def test_an_unreachable_learner_is_named() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ExportError, match=f"learner {address} is not reachable: UNAVAILABLE"):
        export_from_learner(address, Path("never.safetensors"), deadlines=Deadlines(connect=0.5))
    assert not Path("never.safetensors").exists()


def test_a_bad_address_is_refused() -> None:
    with pytest.raises(ExportError, match="host:port"):
        export_from_learner("no-port", Path("never.safetensors"))


def test_a_learner_without_a_model_has_nothing_to_export(
    start_server: Callable[..., GRPCServer], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{start_server().port}"
    for native in (False, True):
        with pytest.raises(ExportError, match=f"learner {address} has no model set up"):
            export_from_learner(address, tmp_path / "model", native=native)
    assert list(tmp_path.iterdir()) == []


class NoModelMli(MachineLearningInterface):
    """A plugin's model that hands out weights only, as colearn allows (no ``mli_get_current_model``)."""

    def mli_propose_weights(self) -> Weights:
        return Weights({"w": np.ones(2)})

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        return ProposedWeights(weights, vote=True)

    def mli_accept_weights(self, weights: Weights) -> None:
        pass

    def mli_get_current_weights(self) -> Weights:
        return Weights({"w": np.zeros(2)})


@pytest.fixture
def weights_only_model(factory_registry: object) -> str:
    name = "EXPORT_TEST_WEIGHTS_ONLY"
    FactoryRegistry.register_model_architecture(name, ["DIGITS"])(lambda data: NoModelMli())
    return name


def test_a_native_format_the_model_lacks_is_one_clear_refusal(
    start_server: Callable[..., GRPCServer], tmp_path: Path, weights_only_model: str, fleet: Fleet
) -> None:
    address = f"127.0.0.1:{start_server().port}"
    with LearnerClient("plugin", address) as client:
        client.setup_ml("DIGITS", "{}", weights_only_model, "{}")
    with pytest.raises(ExportError, match=f"learner {address}: model {weights_only_model} has no framework"):
        export_from_learner(address, tmp_path / "model", native=True)
    assert export_from_learner(address, tmp_path / "weights").exists()  # its weights still export
    # A format the family lacks, asked for by name: the learner names the one it has.
    with pytest.raises(LearnerError) as refused:
        fleet.clients[0].get_current_model("keras")
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details.endswith("has no MODEL_FORMAT_KERAS file; it has: MODEL_FORMAT_SAFETENSORS")
    with pytest.raises(ValueError, match="unknown model file format 'onnx'"):
        fleet.clients[0].get_current_model("onnx")


# --- checkpoints ------------------------------------------------------------------------------------------


def test_the_checkpoint_format_is_the_learners() -> None:
    assert CHECKPOINT_FORMAT == learner_checkpoints.FORMAT
    assert (CHECKPOINT_PAYLOAD, CHECKPOINT_META, CHECKPOINT_DIGEST) == (
        learner_checkpoints._PAYLOAD,
        learner_checkpoints._META,
        learner_checkpoints._META_DIGEST,
    )
    assert checkpoint_digest('{"a": 1}', "ab" * 32) == learner_checkpoints._meta_digest('{"a": 1}', "ab" * 32)


def rewrite(path: Path, out: Path, payload: bytes | None = None, **meta: object) -> Path:
    """A copy of a checkpoint with another payload or metadata, re-sealed or not as the test says."""
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = dict(f.metadata())
        data = f.get_tensor(CHECKPOINT_PAYLOAD).tobytes()
    reseal = bool(meta.pop("reseal", False))
    fields = json.loads(metadata[CHECKPOINT_META]) | meta
    metadata[CHECKPOINT_META] = json.dumps(fields, sort_keys=True)
    data = data if payload is None else payload
    if reseal:
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        fields["payload_sha256"] = digest
        metadata[CHECKPOINT_META] = json.dumps(fields, sort_keys=True)
        metadata[CHECKPOINT_DIGEST] = checkpoint_digest(metadata[CHECKPOINT_META], digest)
    tensor = np.frombuffer(data, dtype=np.uint8)
    out.write_bytes(safetensors.numpy.save({CHECKPOINT_PAYLOAD: tensor}, metadata=metadata))
    return out


def test_damaged_checkpoints_are_refused_with_one_line(fleet: Fleet, tmp_path: Path) -> None:
    good = fleet.checkpoint(0)
    raw = good.read_bytes()
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF
    cases: dict[str, tuple[Path, str]] = {
        "a flipped payload byte": (tmp_path / "flipped", "fails its digest check"),
        "truncated": (tmp_path / "truncated", "not a readable safetensors file"),
        "altered metadata": (
            rewrite(good, tmp_path / "altered", accepted_rounds=99),
            "fails its digest check",
        ),
        "other weights, re-sealed": (
            rewrite(good, tmp_path / "other", payload=b"\0" * 16, reseal=True),
            "holds weights other than",
        ),
        "an exported model file": (
            export_from_learner(fleet.clients[0].address, tmp_path / "m"),
            "a model file",
        ),
        "a text file": (tmp_path / "text", "not a readable safetensors file"),
        "a folder": (tmp_path, "is not a file"),
        "missing": (tmp_path / "missing", "is not a file"),
    }
    (tmp_path / "flipped").write_bytes(bytes(flipped))
    (tmp_path / "truncated").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text").write_text("weights = [1, 2, 3]\n")
    for what, (path, complaint) in cases.items():
        with pytest.raises(ExportError) as refused:
            export_from_checkpoint(path, tmp_path / "out.safetensors")
        message = str(refused.value)
        assert complaint in message and "\n" not in message and len(message) < 600, (what, message)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.fixture(scope="module")
def sample_checkpoint(
    start_module_server: Callable[..., GRPCServer], tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    folder = tmp_path_factory.mktemp("checkpoint")
    server = start_module_server(checkpoint_dir=folder)
    with LearnerClient("one", f"127.0.0.1:{server.port}") as client:
        client.setup_ml("DIGITS", shard(0, 1), "SKLEARN_DIGITS", "{}")
        client.mli_accept_weights(client.mli_propose_weights())
    (path,) = folder.glob("checkpoint-*.safetensors")
    return path.read_bytes()


@st.composite
def damaged(draw: st.DrawFn, good: bytes) -> bytes:
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        if kind == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "header" and len(data) >= 8:
            data[:8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    return bytes(data)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
@example(data=None)
def test_fuzz_damaged_checkpoints_get_only_export_errors(
    sample_checkpoint: bytes, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject | None
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    raw = sample_checkpoint if data is None else data.draw(damaged(sample_checkpoint))
    path = folder / "checkpoint.safetensors"
    path.write_bytes(raw)
    try:
        written = export_from_checkpoint(path, folder / "out")
    except ExportError as refused:
        assert "\n" not in str(refused) and raw != sample_checkpoint
        return
    # Accepted: only a damage the checks cannot see (the header's padding), never other weights.
    good = read_checkpoint(_written(folder / "good", sample_checkpoint))
    assert metadata_of(written)[WEIGHTS_SHA256_KEY] == good.weights.sha256


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_model_metadata_leaves_out_what_is_not_known() -> None:
    assert model_metadata("M", "D", "", 3, "") == {MODEL_KEY: "M", DATALOADER_KEY: "D", ROUND_KEY: "3"}
    assert model_metadata("M", "D", "{}", 0, "learner h:1")[MODEL_PARAMETERS_KEY] == "{}"
    with pytest.raises(ValueError):
        model_metadata("M", "D", "", -1, "")


# --- the command ------------------------------------------------------------------------------------------


def backend(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "colearn-backend"), "export", *args],
        capture_output=True, text=True, timeout=120, env={**ENV, **(env or {})}, cwd=cwd,
    )  # fmt: skip


def test_the_export_command(fleet: Fleet, tmp_path: Path) -> None:
    address = fleet.clients[1].address
    done = backend("--learner", address, "--out", str(tmp_path / "a.safetensors"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {tmp_path / 'a.safetensors'}"
    done = backend("--checkpoint", str(fleet.checkpoint(1)), "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    a, b = (safetensors.numpy.load_file(str(tmp_path / n)) for n in ("a.safetensors", "b.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    done = backend("--learner", address, "--out", str(tmp_path / "c"), "--native", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {tmp_path / 'c.safetensors'}"

    for argv, complaint in [
        (["--learner", address, "--out", str(tmp_path / "a.safetensors")], "pass --force"),
        (
            ["--learner", f"127.0.0.1:{free_port()}", "--out", "x", "--connect-timeout", "0.5"],
            "not reachable",
        ),
        (["--checkpoint", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "d")], "not a colearn"),
        (["--checkpoint", str(fleet.checkpoint(1)), "--out", "x", "--native"], "--native needs --learner"),
    ]:
        done = backend(*argv, cwd=tmp_path)
        assert done.returncode == 1, (argv, done.stderr)
        assert complaint in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = backend("--out", "x", cwd=tmp_path)
    assert done.returncode == 2 and "one of the arguments --learner --checkpoint is required" in done.stderr


def test_the_export_command_carries_the_token(
    start_server: Callable[..., GRPCServer], tmp_path: Path
) -> None:
    server = start_server(auth_token="s3cret-token")
    address = f"127.0.0.1:{server.port}"
    with LearnerClient("owner", address, security=ClientSecurity(auth_token="s3cret-token")) as client:
        client.setup_ml("DIGITS", shard(0, 1), "SKLEARN_DIGITS", "{}")
    done = backend("--learner", address, "--out", "model", cwd=tmp_path)
    assert done.returncode == 1 and "UNAUTHENTICATED" in done.stderr and address in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = backend(
        "--learner", address, "--out", "model", cwd=tmp_path, env={"COLEARN_AUTH_TOKEN": "s3cret-token"}
    )
    assert done.returncode == 0, done.stderr
    assert metadata_of(tmp_path / "model.safetensors")[MODEL_KEY] == "SKLEARN_DIGITS"


@pytest.mark.parametrize("model", ["SKLEARN_DIGITS", "PYTORCH_DIGITS"])
def test_a_runs_model_file_scores_what_the_fleet_scored(
    start_server: Callable[..., GRPCServer], tmp_path: Path, model: str
) -> None:
    """The experiment's own model file, written by `colearn-backend run`, in a fresh model of the family."""
    from backend_client.cli import main

    servers = [start_server() for _ in range(N_LEARNERS)]
    learners = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    run = tmp_path / "run"
    argv = [
        "run",
        "--learners",
        learners,
        "--model_tag",
        model,
        "--dataloader_tag",
        "DIGITS",
        "--rounds",
        "3",
    ]
    assert main([*argv, "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    path = run / "model.safetensors"
    meta = metadata_of(path)
    assert meta[MODEL_KEY] == model and meta[ROUND_KEY] == str(results["run"]["accepted_rounds"])
    assert meta[WEIGHTS_SHA256_KEY] == results["run"]["fleet_sha256"]
    clients = [LearnerClient(f"learner-{i}", a).start() for i, a in enumerate(learners.split(","))]
    try:
        scored = [(i, c.get_status()) for i, c in enumerate(clients)]
    finally:
        for client in clients:
            client.stop()
    assert {status.weights_sha256 for _, status in scored} == {meta[WEIGHTS_SHA256_KEY]}
    voters = [(i, status.test_score) for i, status in scored if status.test_score is not None]
    assert voters, "no learner scored the fleet's weights"
    for i, fleet_score in voters:
        verdict = fresh_mli(model, i).mli_test_weights(Weights(load_weights(model, path)))
        assert verdict.test_score == fleet_score
    # The fleet's score after the run is what the last accepted proposal scored on its voters.
    accepted = [r for r in results["results"][1:] if r["vote"]][-1]
    expected = [s for s in accepted["test_scores"] if s is not None]
    assert results["results"][-1]["fleet_test_score"] == pytest.approx(sum(expected) / len(expected))
