"""The committed stubs must be exactly what ``make proto`` generates from the committed .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("learner_pb2.py", "learner_pb2.pyi", "learner_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-Icolearn_contract/v1={REPO / 'proto/colearn/v1'}"]
    outputs = [f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}"]
    subprocess.run([*protoc, *outputs, "colearn_contract/v1/learner.proto"], check=True)
    for name in GENERATED:
        fresh = (tmp_path / "colearn_contract/v1" / name).read_text()
        committed = (REPO / "proto/colearn_contract/v1" / name).read_text()
        if fresh != committed:
            pytest.fail(f"proto/colearn_contract/v1/{name} is stale: run `make proto` and commit the result")


def test_contract_imports_no_ml_framework() -> None:
    code = (
        "import sys, colearn_contract.weight_stream, colearn_contract.mli, colearn_runtime.grpc_options\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'keras', 'sklearn') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
