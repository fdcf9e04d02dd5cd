"""A private Docker engine for the e2e tests, and the few calls the tests make to it and to compose.

Not a test module. The daemon has its own data root, exec root, socket and pidfile, and leaves the host's
firewall, forwarding and bridges alone (the host's network is not ours to change): containers reach each
other over compose's own network and the host reaches them only through ports published on 127.0.0.1.
Whoever starts it stops it by its pidfile, even when a step failed; `.ci/run`'s trap reads the same
pidfile if the harness itself is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Pidfile, logs, timings and the debootstrap cache; git-ignored, outside the image build context.
STATE_DIR = Path(os.environ.get("COLEARN_E2E_DIR", REPO_ROOT / ".e2e"))


def _binary(name: str, preferred: str) -> str:
    """The distribution's binary first: the Docker CLI of docker.io matches the daemon it ships."""
    if Path(preferred).exists():
        return preferred
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (apt-get install docker.io docker-compose)")
    return found


class PrivateDockerd:
    """``dockerd`` with its own roots and socket; a context manager that always stops it by its pidfile.

    The socket and exec root live under a short temporary folder (a unix socket path has at most 107
    bytes, a CI checkout path can be long). The data root goes there too, and is removed at the end,
    unless ``COLEARN_E2E_DATA_ROOT`` names one to keep images between local runs.
    """

    def __init__(self, state_dir: Path = STATE_DIR, data_root: Path | None = None) -> None:
        self.state_dir = state_dir
        self.pidfile = state_dir / "dockerd.pid"
        self.log_path = state_dir / "dockerd.log"
        self.run_dir = Path(tempfile.mkdtemp(prefix="colearn-e2e-"))
        kept = data_root or os.environ.get("COLEARN_E2E_DATA_ROOT")
        self.data_root = Path(kept) if kept else self.run_dir / "data"
        self.keep_data_root = bool(kept)
        self.socket = self.run_dir / "docker.sock"
        self.docker_bin = _binary("docker", "/usr/bin/docker")
        self.compose_bin = _binary("docker-compose", "/usr/bin/docker-compose")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        # The classic builder: BuildKit/buildx is not available with this engine.
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
        }

    def start(self, timeout: float = 60.0) -> PrivateDockerd:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.data_root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    _binary("dockerd", "/usr/sbin/dockerd"),
                    f"--data-root={self.data_root}",
                    f"--exec-root={self.run_dir / 'exec'}",
                    f"--pidfile={self.pidfile}",
                    f"--host=unix://{self.socket}",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                    "--bridge=none",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest reaches the harness, which then stops it
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"dockerd was not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _stop_leftover(self) -> None:
        """A daemon of an earlier run that was killed before it could clean up: stop it first."""
        if self.pidfile.exists():
            with contextlib.suppress(ValueError, OSError):
                pid = int(self.pidfile.read_text().strip())
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"dockerd"):
                    _terminate(pid, timeout=60)
            self.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stops the daemon by its pidfile (SIGTERM: it stops its containers first, then SIGKILL)."""
        pid = None
        with contextlib.suppress(ValueError, OSError):
            pid = int(self.pidfile.read_text().strip())
        if pid is None and self.process is not None:
            pid = self.process.pid
        if pid is not None:
            _terminate(pid, timeout=60)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            self.process = None
        self.pidfile.unlink(missing_ok=True)
        if self.keep_data_root:
            shutil.rmtree(self.run_dir / "exec", ignore_errors=True)
            self.socket.unlink(missing_ok=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> PrivateDockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return _run([self.docker_bin, *args], self.env, check=check, timeout=timeout)

    def inspect(self, kind: str, *names: str) -> list[dict[str, Any]]:
        if not names:
            return []
        return json.loads(self.docker(kind, "inspect", *names).stdout)

    def state(self) -> dict[str, set[str]]:
        """Every container, network and volume the daemon holds, by id or name."""
        return {
            "containers": set(self.docker("ps", "-aq", "--no-trunc").stdout.split()),
            "networks": set(self.docker("network", "ls", "-q", "--no-trunc").stdout.split()),
            "volumes": set(self.docker("volume", "ls", "-q").stdout.split()),
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_range(n: int) -> str:
    """``"first-last"``: ``n`` consecutive ports free on 127.0.0.1, for a scaled service to publish."""
    for _ in range(200):
        first = free_port()
        if first + n > 65535:
            continue
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + n):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port))
            return f"{first}-{first + n - 1}"
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports on 127.0.0.1")


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it, or it stays a zombie
                return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _run(
    command: Sequence[str], env: dict[str, str], *, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}:\n{output}")
    return result


@dataclass
class ComposeProject:
    """One compose project on the private daemon: compose.yaml at the repository root, knobs by env."""

    engine: PrivateDockerd
    name: str
    variables: dict[str, str]
    files: tuple[str, ...] = ("compose.yaml",)

    @property
    def env(self) -> dict[str, str]:
        return {**self.engine.env, **self.variables, "COMPOSE_PROJECT_NAME": self.name}

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        files = [arg for name in self.files for arg in ("-f", str(REPO_ROOT / name))]
        command = [self.engine.compose_bin, "--ansi=never", *files, *args]
        return _run(command, self.env, check=check, timeout=timeout)

    def container_ids(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).stdout.split()

    def containers(self, service: str) -> list[dict[str, Any]]:
        return self.engine.inspect("container", *self.container_ids(service))

    def published(self, service: str, port: int) -> list[tuple[str, int]]:
        """(host ip, host port) of every replica's published ``port``."""
        found = []
        for container in self.containers(service):
            for binding in container["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []:
                found.append((binding["HostIp"], int(binding["HostPort"])))
        return found
