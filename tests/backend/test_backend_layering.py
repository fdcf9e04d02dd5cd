"""The backend imports the contract only: never the learner package, never an ML framework (DESIGN §2)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, LearnerProcesses, free_ports

import backend_client

FORBIDDEN = ("colearn_learner", "services", "torch", "tensorflow", "keras", "sklearn")
BACKEND_DIR = Path(backend_client.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            names.update(
                a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
            )
    return names


def forbidden(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in FORBIDDEN}


def test_the_backend_package_is_where_the_layout_says() -> None:
    assert BACKEND_DIR == REPO_ROOT / "backend_client"
    assert len(list(BACKEND_DIR.glob("*.py"))) >= 10


def test_the_check_finds_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom colearn_learner.server import GRPCServer\n"
        "def f():\n    import torch.nn\n    import importlib\n    importlib.import_module('sklearn')\n"
    )
    assert forbidden(imported_modules(sample)) == {"colearn_learner.server", "torch.nn", "sklearn"}


def test_no_backend_module_imports_the_learner_or_a_framework() -> None:
    offenders = {
        path.name: sorted(found)
        for path in sorted(BACKEND_DIR.rglob("*.py"))
        if (found := forbidden(imported_modules(path)))
    }
    assert offenders == {}


def test_the_contract_imports_no_framework_and_not_the_learner() -> None:
    contract = REPO_ROOT / "proto" / "colearn_contract"
    offenders = {
        str(path.relative_to(contract)): sorted(found)
        for path in sorted(contract.rglob("*.py"))
        if (found := forbidden(imported_modules(path)))
    }
    assert offenders == {}


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
forbidden = ("colearn_learner", "torch", "tensorflow", "keras", "sklearn")
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
