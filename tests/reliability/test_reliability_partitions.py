"""Partitions across real hosts: each learner, and the backend, in a network namespace of its own.

The namespaces are joined by veth pairs to a bridge that lives in a namespace of its own, with addresses
10.200.0.x; nothing is addressed from the host's namespace (the backend runs inside its namespace too, as
``partition_driver.py``). A round starts, one learner's link goes down while it evaluates the proposal
(``ip -n NS link set DEV down``), and the round completes without it; the next round goes on without it;
then the link comes up again, and the learner rejoins: it is resynced and proposes the round after.
Every namespace and process is removed in ``finally``. Skipped, with the reason, where ``ip netns``
cannot be used (not root, no iproute2).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_kit import learner_env

from backend_client.results import ABSENT, APPROVE, PROPOSER

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
N = 3
PORT = 9995
SUBNET = "10.200.0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class Hosts:
    """A bridge namespace, a backend namespace and one namespace per learner, all named after this pid."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.bridge = f"clr{tag}-br"
        self.backend = f"clr{tag}-be"
        self.learners = [f"clr{tag}-l{i}" for i in range(N)]
        self.links = {ns: f"v{tag}{k}" for k, ns in enumerate([self.backend, *self.learners])}
        self.created: list[str] = []

    def address(self, i: int) -> str:
        return f"{SUBNET}.{11 + i}"

    def create(self) -> None:
        for ns in (self.bridge, self.backend, *self.learners):
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        addresses = {
            self.backend: f"{SUBNET}.2",
            **{ns: self.address(i) for i, ns in enumerate(self.learners)},
        }
        for ns, address in addresses.items():
            dev = self.links[ns]
            ip(
                "link",
                "add",
                dev,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                f"{dev}b",
                "netns",
                self.bridge,
            )
            ip("-n", self.bridge, "link", "set", f"{dev}b", "master", "br0")
            ip("-n", self.bridge, "link", "set", f"{dev}b", "up")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")

    def link(self, i: int, state: str) -> None:
        ns = self.learners[i]
        ip("-n", ns, "link", "set", self.links[ns], state)

    def remove(self) -> None:
        for ns in reversed(self.created):
            ip("netns", "del", ns, check=False)  # deleting a namespace removes its veth ends too


def netns_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"clr{os.getpid() % 100000}-probe"
    created = ip("netns", "add", probe, check=False)
    if created.returncode != 0:
        return f"ip netns add fails here: {created.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


class Driver:
    """The backend, running partition_driver.py inside its namespace; one JSON line per command."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the backend driver exited with code {self.process.poll()}"
        return json.loads(line)

    def send(self, **command: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def ask(self, **command: object) -> dict:
        self.send(**command)
        return self.read()


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    hosts = Hosts()
    try:
        hosts.create()
        yield hosts
    finally:
        hosts.remove()


def test_a_partitioned_learner_is_absent_and_rejoins_after_the_heal(hosts: Hosts, tmp_path: Path) -> None:
    processes: list[subprocess.Popen] = []
    try:
        for i, ns in enumerate(hosts.learners):
            command = [
                "ip", "netns", "exec", ns, sys.executable, "-m", "colearn_learner", "serve",
                f"--host={hosts.address(i)}", f"--port={PORT}", "--metrics-port=0", "--plugins=toy_learner",
                "--grace-seconds=1",
            ]  # fmt: skip
            with (tmp_path / f"learner-{i}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=learner_env())
                )
        addresses = [f"{hosts.address(i)}:{PORT}" for i in range(N)]
        with (tmp_path / "driver.log").open("wb") as log:
            backend = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    hosts.backend,
                    sys.executable,
                    str(HERE / "partition_driver.py"),
                    *addresses,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=learner_env(),
            )
        processes.append(backend)
        driver = Driver(backend)
        victim = 2

        assert driver.ask(do="ready") == {"ok": True}
        first = driver.ask(do="round", round=0)["result"]
        assert first["outcomes"] == [PROPOSER, APPROVE, APPROVE] and first["vote"] is True

        # Round 1: the victim's link goes down while it evaluates the proposal.
        driver.send(do="round", round=1, watch=victim)
        assert driver.read()["event"] == "testing"
        hosts.link(victim, "down")
        cut = driver.read()["result"]
        assert cut["outcomes"] == [APPROVE, PROPOSER, ABSENT], cut["errors"]
        assert "DEADLINE_EXCEEDED" in cut["errors"][str(victim)]
        assert cut["vote"] is True  # 1 approval >= (3 - 1) * 0.5
        print(f"\npartition mid-vote: vote phase {cut['timings']['vote']:.2f} s (vote deadline 4 s)")

        # Still partitioned: the next round goes on without it.
        apart = driver.ask(do="round", round=3)["result"]
        assert apart["outcomes"][victim] == ABSENT and apart["vote"] is True
        digests = driver.ask(do="digests")["digests"]
        assert digests[0] == digests[1] == apart["proposal_sha256"]
        assert digests[victim].startswith("error")

        # Healed: the learner answers again, is resynced, and proposes from the fleet's weights.
        hosts.link(victim, "up")
        healed = time.perf_counter()
        assert driver.ask(do="reach", learner=victim) == {"ok": True}
        print(f"reachable again {time.perf_counter() - healed:.2f} s after the heal")
        back = driver.ask(do="round", round=5)["result"]
        assert back["resynced"] == [victim] and back["base_sha256"] == apart["proposal_sha256"]
        assert back["outcomes"] == [APPROVE, APPROVE, PROPOSER] and back["vote"] is True
        assert driver.ask(do="digests")["digests"] == [back["proposal_sha256"]] * N
        backend.stdin.close()
        assert backend.wait(30) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)
                process.wait(30)
