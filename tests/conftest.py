"""Shared fixtures: real learner servers on 127.0.0.1, in-process or as child processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from wire_kit import learner_stub, params

from backend_client.local_fleet import wait_until_serving
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_learner import ExampleMliFactory, FactoryRegistry, GRPCServer, Settings
from colearn_learner.registry import ModelRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports on 127.0.0.1."""
    for _ in range(200):
        first = free_port()
        sockets = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def digits_setup(
    model: str = "SKLEARN_DIGITS", shard: int = 0, n_shards: int = 1, **model_params: object
) -> pb.MLSetupRequest:
    return pb.MLSetupRequest(
        dataloader_name="DIGITS",
        dataloader_parameters=params(shard=shard, n_shards=n_shards),
        model_name=model,
        model_parameters=params(**model_params),
    )


@pytest.fixture
def factory_registry(monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A fresh default registry for colearn's ``FactoryRegistry`` decorators, for one test: what the test
    registers is gone afterwards, and no other test's registrations are visible to it."""
    fresh = ModelRegistry()
    monkeypatch.setattr(FactoryRegistry, "default", fresh)
    return fresh


@pytest.fixture
def start_server() -> Iterator[Callable[..., GRPCServer]]:
    """Starts in-process learners on free ports; every one is stopped at teardown."""
    servers: list[GRPCServer] = []

    def start(metrics: bool = False, **settings: object) -> GRPCServer:
        base = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": free_port() if metrics else 0,
            "grace_seconds": 1.0,
        }
        server = GRPCServer(mli_factory=ExampleMliFactory(), settings=Settings(**{**base, **settings}))
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop(grace=0)


@pytest.fixture
def server(start_server: Callable[..., GRPCServer]) -> GRPCServer:
    return start_server()


@pytest.fixture
def channel(server: GRPCServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.LearnerStub:
    return learner_stub(channel)


class LearnerProcesses:
    """Learners as real child processes (``python -m colearn_learner serve``), stopped by pid."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(
        self, port: int, *extra: str, metrics_port: int = 0, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"learner-{port}.log").open("wb")
        command = [
            sys.executable, "-m", "colearn_learner", "serve", "--host=127.0.0.1",
            f"--port={port}", f"--metrics-port={metrics_port}", "--grace-seconds=2", *extra,
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        log.close()
        self.processes[port] = process
        wait_until_serving(f"127.0.0.1:{port}", timeout=60)
        return process

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes[port]
        process.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            process.wait(30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                process.wait(30)


@pytest.fixture
def learner_processes(tmp_path: Path) -> Iterator[LearnerProcesses]:
    processes = LearnerProcesses(tmp_path)
    yield processes
    processes.stop_all()
