"""Starts learner servers on this machine as child processes, for the demo and for tests.

The backend does not import the learner package: it runs ``python -m colearn_learner serve-n`` and
talks to the children over gRPC like to any other fleet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from backend_client.discovery import consecutive_ports
from colearn_runtime.ports import LEARNER_PORT


def wait_until_serving(address: str, timeout: float, service: str = "") -> None:
    """Polls the gRPC health service until ``service`` is SERVING, or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        # A fresh channel per attempt: a reused one backs off for a second after its first refused
        # connection, which would make a learner that is ready at once look ready a second late.
        with grpc.insecure_channel(address) as channel:
            try:
                request = health_pb2.HealthCheckRequest(service=service)
                status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"learner {address} was not SERVING within {timeout} s")
        time.sleep(0.05)


def _in_use(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            return True
    return False


class LocalFleet:
    """N learners on 127.0.0.1, ports ``port`` .. ``port+N-1``; a context manager that always stops them."""

    def __init__(
        self,
        n_learners: int,
        port: int = LEARNER_PORT,
        metrics_port: int = 0,
        *,
        plugins: tuple[str, ...] = (),
        log_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.addresses = consecutive_ports(n_learners, "127.0.0.1", port)
        self._command = [
            sys.executable, "-m", "colearn_learner", "serve-n", f"--n-learners={n_learners}",
            "--host=127.0.0.1", f"--port={port}", f"--metrics-port={metrics_port}", "--log-level=WARNING",
            *[f"--plugins={p}" for p in plugins],
        ]  # fmt: skip
        self._log_dir = log_dir
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalFleet:
        busy = [address for address in self.addresses if _in_use(address)]
        if busy:
            raise OSError(f"port(s) already in use: {', '.join(busy)}; choose another first port (--port)")
        if self._log_dir is None:
            self._process = subprocess.Popen(
                self._command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
            )
        else:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            with (self._log_dir / "learners.log").open("wb") as log:  # the child keeps its own handle
                self._process = subprocess.Popen(
                    self._command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        try:
            for address in self.addresses:
                if self._process.poll() is not None:
                    raise RuntimeError(f"the learner fleet exited with code {self._process.returncode}")
                wait_until_serving(address, self._start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)  # serve-n passes it on to every learner
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            # The fleet has its own process group (start_new_session), so this reaches every learner too.
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
