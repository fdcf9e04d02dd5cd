"""The backend imports the contract and the runtime only: never the learner, never an ML framework.

The static rule is an import contract in ``pyproject.toml`` (``tests/test_import_contracts.py``); these
tests check what a real backend process loads while it runs a fleet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import LearnerProcesses, free_ports

FORBIDDEN = ("colearn_learner", "colearn_models", "torch", "tensorflow", "keras", "sklearn")


RUN_A_FLEET = """
import importlib, json, pkgutil, sys, pathlib
import backend_client
for module in pkgutil.iter_modules(backend_client.__path__):
    if module.name != "__main__":
        importlib.import_module(f"backend_client.{module.name}")
from backend_client import cli

addresses, out = sys.argv[1], sys.argv[2]
code = cli.main([
    "run", "--learners", addresses, "--model_tag", "SKLEARN_DIGITS", "--dataloader_tag", "DIGITS",
    "--rounds", "2", "--out", out, "--metrics_port", "0",
])
forbidden = ("colearn_learner", "colearn_models", "torch", "tensorflow", "keras", "sklearn")
print(json.dumps({
    "code": code,
    "rounds": len(json.loads(pathlib.Path(out, "results.json").read_text())["results"]) - 1,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in forbidden),
}))
"""


def test_a_whole_run_loads_no_framework_in_the_backend(
    learner_processes: LearnerProcesses, tmp_path: Path
) -> None:
    first = free_ports(2)
    for port in (first, first + 1):
        learner_processes.start(port)
    addresses = f"127.0.0.1:{first},127.0.0.1:{first + 1}"
    done = subprocess.run(
        [sys.executable, "-c", RUN_A_FLEET, addresses, str(tmp_path / "out")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["rounds"] == 2
    assert report["loaded"] == []
    for name in ("journal.jsonl", "model.safetensors", "results.json", "results.png"):
        assert (tmp_path / "out" / name).exists(), name


def test_importing_the_backend_loads_no_framework() -> None:
    code = (
        "import sys, json, backend_client, backend_client.cli;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1].split(','))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, ",".join(FORBIDDEN)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
