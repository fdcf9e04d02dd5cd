"""The wire contract is lint-clean and frozen: `buf breaking` against the released image refuses any change
that would break a deployed peer. `make test` installs the pinned buf (tools/buf) and runs both first."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PROTO = REPO_ROOT / "proto"
RELEASED = PROTO / "released" / "colearn-v1.binpb"
BUF = REPO_ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def buf() -> Path:
    if not BUF.exists():
        if os.environ.get("COLEARN_REQUIRE_TOOLS"):
            pytest.fail(f"buf is not installed at {BUF}: run `make buf`")
        pytest.skip("buf is not installed: `make buf` installs it (`make test` does)")
    return BUF


def run_buf(buf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(buf), *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def copy_of_the_contract(tmp_path: Path) -> Path:
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy, ignore=shutil.ignore_patterns("colearn_contract", "released"))
    return copy


def test_the_contract_passes_buf_lint_with_the_standard_rules(buf: Path) -> None:
    result = run_buf(buf, "lint", "proto")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_kept_excepted_says_why() -> None:
    config = (PROTO / "buf.yaml").read_text()
    excepted = config.split("except:", 1)[1].split("breaking:", 1)[0]
    rules = re.findall(r"^\s+- ([A-Z_]+)\s*$", excepted, re.M)
    assert rules == ["SERVICE_SUFFIX"]
    for rule in rules:
        before = excepted.split(f"- {rule}", 1)[0].rstrip().splitlines()[-1]
        assert before.strip().startswith("#"), f"{rule} is excepted without a reason above it"


def test_the_contract_is_compatible_with_the_released_one(buf: Path) -> None:
    assert RELEASED.is_file(), "the released image is committed: proto/released/colearn-v1.binpb"
    result = run_buf(buf, "breaking", "proto", "--against", str(RELEASED))
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_fails_on_a_removed_field(buf: Path, tmp_path: Path) -> None:
    copy = copy_of_the_contract(tmp_path)
    proto = copy / "colearn" / "v1" / "learner.proto"
    text = proto.read_text()
    assert "  bool busy = 9;\n" in text
    proto.write_text(text.replace("  bool busy = 9;\n", ""))
    result = run_buf(buf, "breaking", str(copy), "--against", str(RELEASED))
    assert result.returncode != 0
    assert 'field "9" with name "busy" on message "GetStatusResponse" was deleted' in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("  uint64 offset = 2;", "  int64 offset = 2;", "changed type"),
        ("  string proposal_id = 1;\n  // The sha256", "  string id = 1;\n  // The sha256", "changed name"),
        ("  WEIGHTS_ENCODING_SAFETENSORS = 1;\n", "", "deleted"),
    ],
    ids=["field-type", "field-name", "enum-value"],
)
def test_buf_breaking_fails_on_other_breaking_changes(
    buf: Path, tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    copy = copy_of_the_contract(tmp_path)
    proto = copy / "colearn" / "v1" / "learner.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new, 1))
    result = run_buf(buf, "breaking", str(copy), "--against", str(RELEASED))
    assert result.returncode != 0 and complaint in result.stdout, result.stdout


def test_a_new_field_is_a_compatible_change(buf: Path, tmp_path: Path) -> None:
    copy = copy_of_the_contract(tmp_path)
    proto = copy / "colearn" / "v1" / "learner.proto"
    proto.write_text(
        proto.read_text().replace("  bytes data = 4;\n", "  bytes data = 4;\n  string trailer = 5;\n")
    )
    result = run_buf(buf, "breaking", str(copy), "--against", str(RELEASED))
    assert result.returncode == 0, result.stdout + result.stderr
