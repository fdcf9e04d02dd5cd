"""Helpers for the reliability tests: a fleet of real learner processes that tests kill, stop and restart.

Not a test module; the reliability test modules import it by name. The learners run the TOY plugin from
``benchmarks/toy_learner.py``: its training and evaluation are sleeps of a chosen length, so that a test
can hold a vote fan-out open long enough to kill a learner in the middle of it, and every vote approves,
so that every round that is not void is accepted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from conftest import REPO_ROOT, free_port
from prometheus_client.parser import text_string_to_metric_families

from backend_client import Deadlines, LearnerClient
from backend_client.fan_out import fan_out
from backend_client.local_fleet import wait_until_serving

BENCHMARKS = REPO_ROOT / "benchmarks"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_T = TypeVar("_T")


def learner_env(**colearn: str) -> dict[str, str]:
    """A learner child's environment: the TOY plugin importable, no COLEARN_* from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS), env.get("PYTHONPATH")]))
    env.update({f"COLEARN_{k.upper()}": v for k, v in colearn.items()})
    return env


def toy_parameters(
    eval_seconds: float = 0.0, train_seconds: float = 0.0, weights_mb: float = 0.01, seed: int = 0
) -> str:
    """TOY's model parameters; a seed of its own gives a test a set-up (and checkpoints) of its own."""
    params = {"weights_mb": weights_mb, "train_seconds": train_seconds, "eval_seconds": eval_seconds}
    return json.dumps({**params, "seed": seed})


def wait_for(probe: Callable[[], _T], timeout: float = 60.0, what: str = "condition") -> _T:
    """Polls until ``probe()`` is truthy; fails the test (not a timing assertion: a hang guard)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def scrape(
    metrics_port: int, host: str = "127.0.0.1"
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = _NO_PROXY.open(f"http://{host}:{metrics_port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(metrics_port: int, name: str, **labels: str) -> float:
    """The sum of one series over the samples whose labels include ``labels`` (0 when there is none)."""
    return sum(
        value
        for (sample, sample_labels), value in scrape(metrics_port).items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def started_calls(metrics_port: int, method: str) -> float:
    return metric(metrics_port, "grpc_server_started_total", grpc_method=method)


class ToyFleet:
    """N learner processes on 127.0.0.1 (TOY plugin), each with its own metrics port and, optionally, its
    own checkpoint folder; every process is stopped by pid, also when a test fails."""

    def __init__(self, n: int, log_dir: Path, *, checkpoints: bool = False, grace_seconds: float = 2.0):
        self.n = n
        self.log_dir = log_dir
        self.checkpoints = checkpoints
        self.grace_seconds = grace_seconds
        self.ports = [free_port() for _ in range(n)]
        self.metrics_ports: list[int] = []
        while len(self.metrics_ports) < n:
            port = free_port()
            if port not in self.ports and port not in self.metrics_ports:
                self.metrics_ports.append(port)
        self.addresses = [f"127.0.0.1:{p}" for p in self.ports]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * n
        self.restarts = 0

    def checkpoint_dir(self, i: int) -> Path:
        return self.log_dir / f"checkpoints-{i}"

    def launch(self, i: int, checkpoints: bool | None = None) -> subprocess.Popen[bytes]:
        """Starts learner i without waiting for it; ``checkpoints`` overrides the fleet's choice."""
        assert self.processes[i] is None or self.processes[i].poll() is not None, f"learner {i} is running"
        use_checkpoints = self.checkpoints if checkpoints is None else checkpoints
        env = learner_env(checkpoint_dir=str(self.checkpoint_dir(i))) if use_checkpoints else learner_env()
        command = [
            sys.executable, "-m", "colearn_learner", "serve", "--host=127.0.0.1", f"--port={self.ports[i]}",
            f"--metrics-port={self.metrics_ports[i]}", f"--grace-seconds={self.grace_seconds}",
            "--plugins=toy_learner", "--log-level=INFO",
        ]  # fmt: skip
        with (self.log_dir / f"learner-{i}.log").open("ab") as log:
            self.processes[i] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.processes[i]

    def start(self, indices: list[int] | range | None = None, checkpoints: bool | None = None) -> None:
        indices = list(range(self.n) if indices is None else indices)
        for i in indices:
            self.launch(i, checkpoints)
        for i in indices:
            wait_until_serving(self.addresses[i], timeout=90)

    def restart(self, i: int, checkpoints: bool | None = None) -> None:
        self.restarts += 1
        self.start([i], checkpoints)

    def alive(self, i: int) -> bool:
        process = self.processes[i]
        return process is not None and process.poll() is None

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes[i]
        assert process is not None
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        if sig == signal.SIGKILL:
            process.wait(30)

    def stop_all(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)  # a stopped process would not die before it runs
                    process.kill()
                process.wait(30)

    def clients(self, deadlines: Deadlines | None = None) -> list[LearnerClient]:
        return [
            LearnerClient(f"learner-{i}", a, deadlines=deadlines).start()
            for i, a in enumerate(self.addresses)
        ]

    def log(self, i: int) -> str:
        return (self.log_dir / f"learner-{i}.log").read_text(errors="replace")


def set_up_toy(client: LearnerClient, parameters: str) -> str:
    return client.setup_ml(
        dataset_loader_name="TOY",
        dataset_loader_parameters="{}",
        model_arch_name="TOY",
        model_parameters=parameters,
    )


def set_up_all(clients: list[LearnerClient], parameters: str) -> list[str]:
    outcomes = fan_out(lambda i: set_up_toy(clients[i], parameters), range(len(clients)))
    for i, outcome in outcomes.items():
        if isinstance(outcome, BaseException):
            raise RuntimeError(f"learner {i} could not be set up") from outcome
    return [str(outcomes[i]) for i in range(len(clients))]


@contextlib.contextmanager
def toy_fleet(n: int, log_dir: Path, **options: object) -> Iterator[ToyFleet]:
    fleet = ToyFleet(n, log_dir, **options)  # type: ignore[arg-type]
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop_all()


def digests(clients: list[LearnerClient], indices: list[int] | range) -> dict[int, str]:
    return {i: clients[i].get_status().weights_sha256 for i in indices}
