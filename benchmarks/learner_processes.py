"""Learner server processes for the benchmarks: free ports on 127.0.0.1, a fast health probe, stop by pid.

Every process a benchmark starts goes through ``LearnerProcesses``, whose ``stop()`` (called from a
``finally`` or ``with``) ends exactly those pids: SIGTERM, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from backend_client import LearnerClient

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def free_port() -> int:
    """A port that was free a moment ago; the learner refuses to share it (so_reuseport=0) if it is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def bench_env() -> dict[str, str]:
    """The environment of a learner child: the TOY plugin importable, no COLEARN_* surprises."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def learner_command(port: int, plugins: tuple[str, ...] = ("toy_learner",)) -> list[str]:
    return [
        sys.executable, "-m", "colearn_learner", "serve",
        f"--host={HOST}", f"--port={port}", "--metrics-port=0", "--log-level=WARNING", "--grace-seconds=1",
        *[f"--plugins={p}" for p in plugins],
    ]  # fmt: skip


class LearnerExited(RuntimeError):
    """The learner process ended before it was SERVING."""


def probe_serving(
    address: str, timeout: float, service: str = "", process: subprocess.Popen[bytes] | None = None
) -> float:
    """Seconds until ``service`` is SERVING, probing every 10 ms with a fresh channel.

    A fresh channel per probe avoids gRPC's reconnect backoff (1 s after the first refused connection),
    which would otherwise round the measured start-up time up to the next backoff step. With ``process``,
    a process that has exited raises ``LearnerExited`` at once instead of waiting out the timeout.
    """
    start = time.perf_counter()
    deadline = start + timeout
    request = health_pb2.HealthCheckRequest(service=service)
    while time.perf_counter() < deadline:
        if process is not None and process.poll() is not None:
            raise LearnerExited(f"learner {address} exited with code {process.returncode}")
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - start
            except grpc.RpcError:
                pass
        time.sleep(0.01)
    raise TimeoutError(f"{address} was not SERVING within {timeout} s")


#: A port found free can be taken by another process before the learner binds it (other jobs on the machine
#: start servers too: 1 in 128 learners lost that race under load); such a learner is started again on
#: another port, at most this many times.
PORT_RETRIES = 3


class LearnerProcesses:
    """N ``colearn_learner serve`` processes, each on its own free port; always stopped by pid."""

    def __init__(
        self, n: int, *, plugins: tuple[str, ...] = ("toy_learner",), start_timeout: float = 60.0
    ) -> None:
        self.n = n
        self.plugins = plugins
        self.start_timeout = start_timeout
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[str]:
        return [f"{HOST}:{p}" for p in self.ports]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            learner_command(port, self.plugins),
            env=bench_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> LearnerProcesses:
        try:
            for _ in range(self.n):
                port = free_port()
                self.ports.append(port)
                self.processes.append(self._spawn(port))
            for i in range(self.n):
                for attempt in range(PORT_RETRIES + 1):
                    try:
                        probe_serving(self.addresses[i], self.start_timeout, process=self.processes[i])
                        break
                    except LearnerExited:
                        if attempt == PORT_RETRIES:
                            raise
                        self.ports[i] = free_port()  # the old process has exited: nothing to stop
                        self.processes[i] = self._spawn(self.ports[i])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes = []
        self.ports = []

    def __enter__(self) -> LearnerProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def toy_clients(
    addresses: list[str], weights_mb: float, train_seconds: float = 0.0, eval_seconds: float = 0.0
) -> list[LearnerClient]:
    """A started client per learner, each set up with the TOY model; stopped again if any setup fails."""
    params = json.dumps(
        {"weights_mb": weights_mb, "train_seconds": train_seconds, "eval_seconds": eval_seconds}
    )
    clients = [LearnerClient(f"learner-{i}", a).start() for i, a in enumerate(addresses)]
    try:
        for client in clients:
            client.setup_ml("TOY", "{}", "TOY", params)
    except BaseException:
        for client in clients:
            client.stop()
        raise
    return clients
