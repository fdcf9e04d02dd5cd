"""Open health Watch streams (which need no token) hold no worker thread: hundreds of them stall nothing,
and SIGTERM ends them instead of waiting out the grace period for them. The plaintext health port serves
health and its reflection only."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learner_testkit import (
    NOT_SERVING,
    SERVICE,
    SERVING,
    Learner,
    digits_setup,
    free_port,
    joined,
    learner_stub,
    rpc_code,
    venv_tool,
)
from prometheus_client.parser import text_string_to_metric_families

from colearn_contract.v1 import learner_pb2 as pb

REQUEST = health_pb2.HealthCheckRequest
#: Each connection may hold at most 64 calls at once (max_concurrent_streams), the health port's 16.
PER_CONNECTION = 15


class Watchers:
    """``count`` open Watch streams over connections of their own, each seen to deliver its first status."""

    def __init__(self, address: str, count: int, service: str = "") -> None:
        # A connection of its own for each channel: channels to one address share one by default.
        own = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [
            grpc.insecure_channel(address, options=own) for _ in range(-(-count // PER_CONNECTION))
        ]
        self.streams = []
        for i in range(count):
            stub = health_pb2_grpc.HealthStub(self.channels[i // PER_CONNECTION])
            self.streams.append(stub.Watch(REQUEST(service=service), timeout=120))
        self.first = [next(stream).status for stream in self.streams]

    def close(self) -> None:
        for stream in self.streams:
            stream.cancel()
        for channel in self.channels:
            channel.close()


@pytest.fixture
def watched() -> Iterator[tuple[Learner, Watchers]]:
    with Learner() as learner:
        learner.stub.MLSetup(digits_setup(), timeout=60)
        watchers = Watchers(learner.address, 200)
        try:
            yield learner, watchers
        finally:
            watchers.close()


def test_200_open_watch_streams_stall_nothing(watched: tuple[Learner, Watchers]) -> None:
    learner, watchers = watched
    assert watchers.first == [SERVING] * 200
    # Each of these would hit its deadline if the watchers held the learner's 16 worker threads.
    with grpc.insecure_channel(learner.address) as channel:
        stub = learner_stub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(REQUEST(service=SERVICE), timeout=10).status == SERVING
        assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).ready
        current = list(stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=20))
        assert len(joined(current)) > 0
        proposal = list(stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=30))
        assert stub.TestWeights(iter(proposal), timeout=30).proposal_id == proposal[0].header.proposal_id
    assert all(watcher.done() is False for watcher in watchers.streams)


def test_watchers_still_get_every_change_of_status(watched: tuple[Learner, Watchers]) -> None:
    learner, _ = watched
    learner.server.health.model_ready(False)
    model = Watchers(learner.address, 30, SERVICE)
    try:
        assert model.first == [NOT_SERVING] * 30
        learner.server.health.model_ready(True)
        assert [next(stream).status for stream in model.streams] == [SERVING] * 30
    finally:
        model.close()


def watch_calls(learner: Learner, code: str) -> float:
    text = urllib.request.urlopen(learner.metrics_url, timeout=10).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("grpc_method") == "Watch"
        and sample.labels.get("grpc_code") == code
    )


def test_watch_calls_are_counted_when_they_end() -> None:
    with Learner(metrics=True) as learner:
        watchers = Watchers(learner.address, 3)
        watchers.close()
        deadline = time.monotonic() + 30
        while watch_calls(learner, "CANCELLED") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch_calls(learner, "CANCELLED") == 3


def test_watch_streams_on_the_health_port_stall_nothing() -> None:
    with Learner(health_port=0) as learner:
        address = f"127.0.0.1:{learner.server.health_port}"
        watchers = Watchers(address, 45)
        try:
            assert watchers.first == [SERVING] * 45
            with grpc.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                assert health.Check(REQUEST(service=""), timeout=10).status == SERVING
        finally:
            watchers.close()


def test_sigterm_ends_open_watch_streams_instead_of_waiting_out_the_grace(learner_processes) -> None:
    port = free_port()
    # A grace far longer than the wait below: a learner that waited for its watchers would not exit in time.
    process = learner_processes.start(port, "--grace-seconds=120")
    watchers = Watchers(f"127.0.0.1:{port}", 40)
    try:
        assert watchers.first == [SERVING] * 40
        process.send_signal(signal.SIGTERM)
        # Every watcher is told NOT_SERVING, then its stream ends with OK.
        assert [next(stream).status for stream in watchers.streams] == [NOT_SERVING] * 40
        for stream in watchers.streams:
            with pytest.raises(StopIteration):
                next(stream)
            assert stream.code() == grpc.StatusCode.OK
        assert process.wait(timeout=60) == 0
    finally:
        watchers.close()


def grpcurl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("grpcurl"), "-plaintext", "-max-time", "30", address, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_health_port_reflects_health_only() -> None:
    with Learner(health_port=0) as learner:
        address = f"127.0.0.1:{learner.server.health_port}"
        listed = grpcurl(address, "list")
        assert listed.returncode == 0, listed.stderr
        assert set(listed.stdout.split()) == {
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        assert grpcurl(address, "describe", "grpc.health.v1.Health").returncode == 0
        for symbol in (SERVICE, "colearn.v1.WeightsPart", f"{SERVICE}.MLSetup"):
            hidden = grpcurl(address, "describe", symbol)
            assert hidden.returncode != 0 and "not found" in hidden.stderr.lower(), hidden.stdout
        # The main port still describes everything.
        assert "rpc MLSetup" in grpcurl(learner.address, "describe", SERVICE).stdout
        code, _ = rpc_code(lambda: _query_version(address))
        assert code == grpc.StatusCode.UNIMPLEMENTED


def _query_version(address: str) -> pb.QueryVersionResponse:
    with grpc.insecure_channel(address) as channel:
        return learner_stub(channel).QueryVersion(pb.QueryVersionRequest(), timeout=10)
