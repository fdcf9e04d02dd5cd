"""What a learner does when a client, an operator or the machine misbehaves: a clear status, no leak."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pydantic
import pytest
from conftest import free_port, free_ports
from learner_testkit import (
    Learner,
    TinyRegistry,
    digits_setup,
    learner_stub,
    params,
    rpc_code,
    tiny_models,
    write_plugin,
)
from prometheus_client.parser import text_string_to_metric_families

from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner import ExampleMliFactory, GRPCServer, Settings

UNDECODABLE = b"\x0a\x02\xff\xfe"  # field 1 with two bytes that are neither UTF-8 nor a message


def rpc_samples(metrics_url: str, name: str, method: str) -> dict[str, float]:
    """``{grpc_code (or "") : value}`` of one RPC series for one method, without the series still at zero
    (the learner creates every method's series at zero, so that ``rate()`` sees the first calls)."""
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels["grpc_method"] == method and sample.value:
                found[sample.labels.get("grpc_code", "")] = sample.value
    return found


def eventually(probe, attempts: int = 400):
    for _ in range(attempts):
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    return probe()


def test_a_request_that_does_not_parse_is_invalid_argument_not_internal() -> None:
    with Learner() as learner:
        unary = learner.channel.unary_unary("/colearn.v1.Learner/MLSetup")
        code, details = rpc_code(lambda: unary(UNDECODABLE, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in details
        learner.stub.MLSetup(digits_setup(), timeout=60)
        streaming = learner.channel.stream_unary("/colearn.v1.Learner/TestWeights")
        code, details = rpc_code(lambda: streaming(iter([UNDECODABLE]), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in details


def test_a_client_that_cancels_an_upload_is_no_internal_error() -> None:
    with Learner(metrics=True) as learner:
        learner.stub.MLSetup(digits_setup(), timeout=60)
        first = learner.current()[0]
        hold = threading.Event()

        def trickle() -> Iterator[pb.WeightsPart]:
            yield pb.WeightsPart(header=first.header, offset=0, total_bytes=first.total_bytes + 1, data=b"x")
            hold.wait(30)

        call = learner.stub.TestWeights.future(trickle(), timeout=30)
        # Cancel only once the learner's handler runs and reads the stream.
        assert eventually(
            lambda: rpc_samples(learner.metrics_url, "grpc_server_started_total", "TestWeights")
        )
        call.cancel()
        hold.set()
        codes = eventually(
            lambda: rpc_samples(learner.metrics_url, "grpc_server_handled_total", "TestWeights")
        )
        assert codes == {"CANCELLED": 1.0}


def test_a_location_that_is_no_path_is_invalid_argument(tmp_path: Path) -> None:
    with tiny_models(), Learner(data_root=tmp_path) as learner:
        request = pb.MLSetupRequest(
            dataloader_name=TinyRegistry.TINY_FILES,
            dataloader_parameters=params(location="a\u0000b"),
            model_name=TinyRegistry.TINY_FILE_MODEL,
        )
        code, details = rpc_code(lambda: learner.stub.MLSetup(request, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "location" in details


def test_a_failed_start_releases_the_grpc_port() -> None:
    port, metrics_port = free_port(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", metrics_port))
        taken.listen()
        server = GRPCServer(
            ExampleMliFactory(), settings=Settings(host="127.0.0.1", port=port, metrics_port=metrics_port)
        )
        with pytest.raises(OSError, match=f"metrics port {metrics_port}"):
            server.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again


def test_constructor_ports_are_validated_like_settings() -> None:
    with pytest.raises(pydantic.ValidationError):
        GRPCServer(ExampleMliFactory(), port=-7)
    with pytest.raises(pydantic.ValidationError):
        GRPCServer(ExampleMliFactory(), port=19999, metrics_port=19999)


def test_a_stopped_server_does_not_start_again() -> None:
    server = GRPCServer(ExampleMliFactory(), settings=Settings(host="127.0.0.1", port=0, metrics_port=0))
    server.stop()
    server.run()  # returns at once
    assert server.port == 0
    with pytest.raises(RuntimeError, match="stopped"):
        server.start()


def test_model_calls_cannot_take_the_threads_that_answer_probes() -> None:
    with tiny_models() as tiny, Learner(worker_threads=4) as learner:  # 2 slots for model calls, 2 for probes
        request = pb.MLSetupRequest(dataloader_name=tiny.TINY_DATA, model_name=tiny.TINY_GATED_MODEL)
        learner.stub.MLSetup(request, timeout=10)
        training = learner.stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=30)
        first = threading.Thread(target=lambda: list(training), daemon=True)
        first.start()
        while not learner.status().busy:
            time.sleep(0.01)
        # A second proposal waits for the model lock (GetCurrentWeights no longer does: it sends the
        # current weights' kept encoding).
        queued = learner.stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=30)
        second = threading.Thread(target=lambda: list(queued), daemon=True)
        second.start()
        time.sleep(0.3)  # the second call now waits for the model lock, holding the last model slot
        code, details = rpc_code(
            lambda: learner.stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id="x"))
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "model calls" in details
        assert learner.health_of("") == 1  # SERVING, answered by a thread kept free for probes
        assert learner.status().busy
        tiny.gate.set()
        first.join(30)
        second.join(30)


def test_serve_n_stops_every_learner_when_one_cannot_start() -> None:
    first = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "colearn_learner", "serve-n", "--n_learners=2", f"--port={first}",
             "--metrics_port=0", "--host=127.0.0.1", "--log-level=WARNING"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert "stopping the others" in result.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", first))  # learner 0 was stopped too


def test_sigterm_ends_a_long_training_step_after_the_grace_period(learner_processes, tmp_path: Path) -> None:
    write_plugin(tmp_path, "slow_plugin_grace", "GRACE", propose_delay=60)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    process = learner_processes.start(port, "--plugins=slow_plugin_grace", "--grace-seconds=1", env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = learner_stub(channel)
        stub.MLSetup(pb.MLSetupRequest(dataloader_name="GRACE_DATA", model_name="GRACE_MODEL"), timeout=30)
        training = stub.ProposeWeights(pb.ProposeWeightsRequest())
        reader = threading.Thread(target=lambda: rpc_code(lambda: list(training)), daemon=True)
        reader.start()
        while not stub.GetStatus(pb.GetStatusRequest(), timeout=10).busy:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        # The 60 s training step does not hold the exit: the process ends once its 1 s grace is over.
        assert process.wait(30) == 0
        reader.join(30)
