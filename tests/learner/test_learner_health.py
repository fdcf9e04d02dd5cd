"""gRPC health: liveness ("") and readiness (colearn.v1.Learner), shutdown, and the `health` CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learner_testkit import (
    NOT_SERVING,
    SERVICE,
    SERVING,
    Learner,
    TinyRegistry,
    digits_setup,
    free_port,
    rpc_code,
    tiny_models,
    venv_tool,
    write_plugin,
)
from wire_kit import learner_stub

from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner import ExampleMliFactory, GRPCServer

REQUEST = health_pb2.HealthCheckRequest


@pytest.fixture(scope="module")
def tiny() -> Iterator[TinyRegistry]:
    with tiny_models() as registry:
        yield registry


def test_server_is_serving_and_model_is_not_before_setup() -> None:
    with Learner() as learner:
        assert learner.health_of("") == SERVING
        assert learner.health_of(SERVICE) == NOT_SERVING
        learner.stub.MLSetup(digits_setup(), timeout=60)
        assert learner.health_of(SERVICE) == SERVING
        assert learner.health_of("") == SERVING


def test_failed_setup_keeps_the_model_not_serving() -> None:
    with Learner() as learner:
        code, _ = rpc_code(lambda: learner.stub.MLSetup(digits_setup("NOPE"), timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND
        assert learner.health_of(SERVICE) == NOT_SERVING


def test_unknown_health_service_is_not_found() -> None:
    with Learner() as learner:
        code, _ = rpc_code(lambda: learner.health.Check(REQUEST(service="no.such.Service"), timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND


def test_watch_sees_ready_then_shutdown_in_process() -> None:
    learner = Learner()
    try:
        watch = learner.health.Watch(REQUEST(service=SERVICE))
        assert next(watch).status == NOT_SERVING
        learner.stub.MLSetup(digits_setup(), timeout=60)
        assert next(watch).status == SERVING
        server_watch = learner.health.Watch(REQUEST(service=""))
        assert next(server_watch).status == SERVING
        stopper = threading.Thread(target=learner.server.stop, kwargs={"grace": 5})
        stopper.start()
        assert next(watch).status == NOT_SERVING
        assert next(server_watch).status == NOT_SERVING
        watch.cancel()
        server_watch.cancel()
        stopper.join(30)
        assert not stopper.is_alive()
    finally:
        learner.close()


def test_probes_never_wait_for_a_training_step(tiny: TinyRegistry) -> None:
    """While a proposal trains (holding the model lock), health, status, metrics and queries still answer."""
    tiny.gate.clear()
    with Learner(metrics=True) as learner:
        learner.stub.MLSetup(
            pb.MLSetupRequest(dataloader_name=tiny.TINY_DATA, model_name=tiny.TINY_GATED_MODEL), timeout=10
        )
        result: dict[str, object] = {}
        proposing = threading.Thread(target=lambda: result.update(parts=learner.propose()))
        proposing.start()
        try:
            assert tiny.instances[-1].proposing.wait(30)
            # Each of these would block behind the lock if it waited for training; the deadlines catch that.
            status = learner.stub.GetStatus(pb.GetStatusRequest(), timeout=10)
            assert status.busy is True
            assert status.ready is True
            assert learner.health.Check(REQUEST(service=""), timeout=10).status == SERVING
            assert learner.health.Check(REQUEST(service=SERVICE), timeout=10).status == SERVING
            supported = learner.stub.QuerySupportedSystem(pb.QuerySupportedSystemRequest(), timeout=10)
            assert any(m.name == tiny.TINY_GATED_MODEL for m in supported.models)
            assert learner.stub.QueryVersion(pb.QueryVersionRequest(), timeout=10).contract == "colearn.v1"
            with urllib.request.urlopen(learner.metrics_url, timeout=10) as response:
                assert b"colearn_model_ready 1.0" in response.read()
            assert proposing.is_alive()
        finally:
            tiny.gate.set()
            proposing.join(30)
        assert len(result["parts"]) >= 1
        assert learner.stub.GetStatus(pb.GetStatusRequest(), timeout=10).busy is False


def test_run_blocks_until_stop() -> None:
    """The colearn API: GRPCServer(mli_factory=..., port=...) with .run() and .stop()."""
    port = free_port()
    server = GRPCServer(mli_factory=ExampleMliFactory(), port=port, metrics_port=0, host="127.0.0.1")
    runner = threading.Thread(target=server.run)
    runner.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(REQUEST(service=""), timeout=30, wait_for_ready=True)
            assert response.status == SERVING
            assert runner.is_alive()
    finally:
        server.stop(grace=0)
        runner.join(30)
    assert not runner.is_alive()
    # stop() is idempotent.
    server.stop(grace=0)


# --- a real learner process and SIGTERM ------------------------------------------------------------------


def test_sigterm_drains_in_flight_calls_and_exits_zero(learner_processes, tmp_path: Path) -> None:
    write_plugin(tmp_path, "slow_plugin_sigterm", "SLOW", propose_delay=1.5)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    # A generous grace: the test shows that the in-flight call finishes and the process then exits by itself.
    process = learner_processes.start(port, "--plugins=slow_plugin_sigterm", "--grace-seconds=30", env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = learner_stub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        stub.MLSetup(pb.MLSetupRequest(dataloader_name="SLOW_DATA", model_name="SLOW_MODEL"), timeout=30)
        server_watch = health.Watch(REQUEST(service=""))
        model_watch = health.Watch(REQUEST(service=SERVICE))
        assert next(server_watch).status == SERVING
        assert next(model_watch).status == SERVING

        outcome: dict[str, object] = {}

        def propose() -> None:
            try:
                outcome["parts"] = list(stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=60))
            except grpc.RpcError as exc:
                outcome["error"] = exc

        in_flight = threading.Thread(target=propose)
        in_flight.start()
        try:
            # The call is in flight once the learner reports that it is training.
            while not stub.GetStatus(pb.GetStatusRequest(), timeout=10).busy:
                assert in_flight.is_alive(), outcome
                time.sleep(0.01)
            process.send_signal(signal.SIGTERM)

            assert next(server_watch).status == NOT_SERVING
            assert next(model_watch).status == NOT_SERVING
        finally:
            server_watch.cancel()
            model_watch.cancel()
            in_flight.join(60)

        assert "error" not in outcome, outcome.get("error")
        parts = outcome["parts"]
        assert parts[0].header.proposal_id
        assert parts[0].header.sha256
        assert process.wait(60) == 0


def test_sigint_also_stops_the_learner_cleanly(learner_processes) -> None:
    port = free_port()
    process = learner_processes.start(port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert learner_stub(channel).QueryVersion(pb.QueryVersionRequest(), timeout=30).version
    learner_processes.kill(port, signal.SIGINT)
    assert process.wait(60) == 0


# --- `colearn-learner health` -----------------------------------------------------------------------------


def health_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("colearn-learner"), "health", *args], capture_output=True, text=True, timeout=60
    )


def test_health_cli_exit_codes() -> None:
    with Learner() as learner:
        server = health_cli("--address", learner.address)
        assert server.returncode == 0, server
        assert "SERVING" in server.stdout

        model = health_cli("--address", learner.address, "--service", SERVICE)
        assert model.returncode == 1, model
        assert "NOT_SERVING" in model.stdout

        learner.stub.MLSetup(digits_setup(), timeout=60)
        model = health_cli(f"--address={learner.address}", f"--service={SERVICE}")
        assert model.returncode == 0, model

        unknown = health_cli("--address", learner.address, "--service", "no.such.Service", "--timeout", "5")
        assert unknown.returncode == 1
        assert "NOT_FOUND" in unknown.stdout


def test_health_cli_fails_when_nothing_listens() -> None:
    result = health_cli("--address", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stdout or "DEADLINE_EXCEEDED" in result.stdout
