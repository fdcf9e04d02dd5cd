"""The harness's own promise: the private Docker engine is stopped, with its children, even when a step
fails, so that a failing e2e run never leaves a daemon (or its containerd) behind on the machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_docker import PrivateDockerd

pytestmark = pytest.mark.timeout(300)


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue  # gone meanwhile
    return found


def test_daemon_is_stopped_by_its_pidfile_when_a_step_fails(tmp_path: Path) -> None:
    daemon = PrivateDockerd(state_dir=tmp_path / "state", data_root=tmp_path / "data")
    with pytest.raises(RuntimeError, match="a failing step"), daemon:
        pid = int(daemon.pidfile.read_text())
        assert daemon.docker("info", "--format", "{{.ServerVersion}}").stdout.strip()
        assert processes_mentioning(str(daemon.run_dir))  # dockerd and the containerd it started
        raise RuntimeError("a failing step")
    assert not Path(f"/proc/{pid}").exists()
    assert processes_mentioning(str(daemon.run_dir)) == []
    assert not daemon.pidfile.exists() and not daemon.run_dir.exists()
