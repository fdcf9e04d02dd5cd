"""Model families found through the ``colearn.models`` entry-point group, with the family that
``docs/architecture.md`` shows installed exactly as written, and what a learner says when a family is
broken or its framework is missing."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import grpc
import pytest
from conftest import REPO_ROOT, LearnerProcesses, free_port

from backend_client import LearnerClient, LearnerError, collective_learning_round, set_equal_weights
from colearn_contract.mli import MachineLearningInterface
from colearn_learner import ExampleMliFactory, GRPCServer, Settings, model_families
from colearn_learner.model_families import ModelFamilyError
from colearn_learner.registry import ModelRegistry

DOC = REPO_ROOT / "docs" / "architecture.md"


def doc_block(first_line: str) -> str:
    """The fenced code block of docs/architecture.md that starts with ``first_line``."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.S)
    (block,) = [b for b in blocks if b.startswith(first_line)]
    return block


def install(root: Path, package: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """A package and its dist-info on ``root``, as pip would leave them: importlib.metadata finds both."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    for name, text in modules.items():
        (root / package / f"{name}.py").write_text(text)
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{model_families.GROUP}]\n{lines}")


@pytest.fixture
def doc_family(tmp_path: Path) -> Path:
    module = doc_block("# my_models/centroids.py")
    toml = doc_block('[project.entry-points."colearn.models"]')
    name, target = (part.strip().strip('"') for part in toml.splitlines()[1].split("="))
    install(tmp_path, "my_models", {"centroids": module}, {name: target})
    return tmp_path


def test_the_documented_family_is_served_by_real_learners_and_learns(
    doc_family: Path, learner_processes: LearnerProcesses
) -> None:
    ports = [free_port(), free_port()]
    for port in ports:
        learner_processes.start(port, env={"PYTHONPATH": str(doc_family)})
    learners = [LearnerClient(f"learner-{i}", f"127.0.0.1:{port}") for i, port in enumerate(ports)]
    try:
        for i, learner in enumerate(learners):
            learner.start()
            system = learner.get_supported_system()
            assert system["model_architectures"]["CENTROIDS"] == {"learning_rate": 0.5}
            assert system["compatibilities"]["CENTROIDS"] == ["DIGITS"]
            learner.setup_ml("DIGITS", json.dumps({"shard": i, "n_shards": 2}), "CENTROIDS", "{}")
        set_equal_weights(learners)
        result = collective_learning_round(learners, vote_threshold=0.5, round_index=0)
        assert result.vote is True and result.votes == [None, True]  # the data's centroids beat zeros
        assert learners[0].get_status().weights_sha256 == learners[1].get_status().weights_sha256
    finally:
        for learner in learners:
            learner.stop()


def test_families_load_by_name_and_an_unknown_one_names_those_installed() -> None:
    registry = model_families.load(["sklearn_digits", "digits"])
    assert sorted(registry.model_architectures) == ["SKLEARN_DIGITS"]
    assert sorted(registry.dataloaders) == ["DIGITS"]
    with pytest.raises(ModelFamilyError, match=r"unknown model family 'nope'; installed: digits, fraud, "):
        model_families.load(["digits", "nope"])


@pytest.mark.parametrize(
    ("module", "target", "message"),
    [
        ("raise RuntimeError('broken on import')\n", "broken:registry", "cannot load model family 'bad'"),
        ("registry = 42\n", "broken:registry", "model family 'bad' (broken:registry) is a int, not a"),
        ("", "broken:missing", "cannot load model family 'bad'"),
    ],
)
def test_a_broken_family_is_one_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, target: str, message: str
) -> None:
    install(tmp_path, "broken", {}, {"bad": target})
    (tmp_path / "broken.py").write_text(module)  # the module the entry point names
    (tmp_path / "broken" / "__init__.py").unlink()
    (tmp_path / "broken").rmdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert "bad" in model_families.installed()
    with pytest.raises(ModelFamilyError, match=re.escape(message)):
        model_families.load(["bad"])
    with pytest.raises(ModelFamilyError):
        ExampleMliFactory()  # every installed family, the broken one included


def test_a_model_whose_framework_is_missing_is_failed_precondition_naming_the_extra() -> None:
    registry = ModelRegistry(extra="quantum")

    @registry.register_model_architecture("NEEDS_QUANTUM", ["DIGITS"])
    def needs_quantum(data: object) -> MachineLearningInterface:
        import quantum_framework_that_is_not_installed  # noqa: F401

        raise AssertionError("unreachable")

    settings = Settings(host="127.0.0.1", port=0, metrics_port=0)
    server = GRPCServer(ExampleMliFactory(registries=[registry]), settings=settings).start()
    try:
        with (
            LearnerClient("learner", f"127.0.0.1:{server.port}") as learner,
            pytest.raises(LearnerError) as caught,
        ):
            learner.setup_ml("DIGITS", "{}", "NEEDS_QUANTUM", "{}")
        error = caught.value
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION, error
        assert "model NEEDS_QUANTUM needs the 'quantum' extra" in str(error)
        assert "pip install 'colearn-fleet[quantum]'" in str(error)
    finally:
        server.stop(grace=0)
