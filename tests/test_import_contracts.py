"""The layers as import contracts (``[tool.importlinter]`` in ``pyproject.toml``), checked by import-linter.

``make lint`` runs ``lint-imports`` on the tree; these tests prove the contracts hold and that each one
fails when a module breaks it, on a copy of the packages with one forbidden import added.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("proto", "services", "backend_client")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The folders go first on the path, ahead of the editable install, so that the copy is what is read.
    path = ":".join(str(root / folder) for folder in ("proto", "services", "."))
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "COLUMNS": "250"}
    command = [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=root, env=env)


def test_the_tree_keeps_every_import_contract() -> None:
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("backend_client/plot.py", "import torch", "the backend imports no ML framework"),
        ("backend_client/rounds.py", "import colearn_learner.server", "the backend imports no ML framework"),
        ("proto/colearn_contract/mli.py", "import colearn_runtime.cli_flags", "then the contract"),
        ("proto/colearn_runtime/cli_flags.py", "import sklearn", "the contract and the runtime import no"),
        ("services/colearn_learner/health.py", "import colearn_models.digits", "the learner core imports no"),
        ("services/colearn_learner/metrics.py", "import keras", "the learner core imports no"),
        ("services/colearn_learner/errors.py", "import backend_client.rounds", "then the contract"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    for folder in PACKAGES:
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    broken = [row for row in done.stdout.splitlines() if row.endswith("BROKEN") or "BROKEN (" in row]
    assert any(contract in row for row in broken), done.stdout[-3000:]
