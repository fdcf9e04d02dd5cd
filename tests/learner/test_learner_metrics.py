"""Prometheus metrics over real HTTP on the learner's metrics port."""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from learner_testkit import (
    Learner,
    TinyRegistry,
    digits_setup,
    joined,
    params,
    parts_for,
    rpc_code,
    tiny_models,
)
from prometheus_client.parser import text_string_to_metric_families

from colearn_contract.v1 import learner_pb2 as pb

LEARNER = "colearn.v1.Learner"


def scrape_text(learner: Learner) -> str:
    with urllib.request.urlopen(learner.metrics_url, timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


def scrape(learner: Learner) -> dict[str, list]:
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(scrape_text(learner)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    matches = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def absent(samples: dict[str, list], name: str, **labels: str) -> bool:
    return not [s for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]


@dataclass
class Traffic:
    proposal_bytes: int
    current_bytes: int
    vote: bool


@pytest.fixture(scope="module")
def learner() -> Iterator[Learner]:
    with Learner(metrics=True) as learner:
        yield learner


@pytest.fixture(scope="module")
def traffic(learner: Learner) -> Traffic:
    """Known calls: 2 good setups, 1 NOT_FOUND, 1 INVALID_ARGUMENT, a proposal tested and accepted."""
    stub = learner.stub
    stub.MLSetup(digits_setup(), timeout=60)
    stub.MLSetup(digits_setup(), timeout=60)
    assert (
        rpc_code(lambda: stub.MLSetup(digits_setup("NO_SUCH_MODEL"), timeout=10))[0]
        == grpc.StatusCode.NOT_FOUND
    )
    bad_json = pb.MLSetupRequest(
        dataloader_name="DIGITS", dataloader_parameters=params(shard="one"), model_name="SKLEARN_DIGITS"
    )
    assert rpc_code(lambda: stub.MLSetup(bad_json, timeout=10))[0] == grpc.StatusCode.INVALID_ARGUMENT
    parts = learner.propose()
    verdict = stub.TestWeights(iter(parts), timeout=60)
    stub.AcceptProposal(pb.AcceptProposalRequest(proposal_id=parts[0].header.proposal_id), timeout=30)
    # A broken stream, counted under its own code for a client-streaming method.
    broken = parts_for(joined(parts), sha256="0" * 64)
    assert rpc_code(lambda: stub.SetWeights(iter(broken), timeout=30))[0] == grpc.StatusCode.INVALID_ARGUMENT
    current = learner.current()
    stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    return Traffic(proposal_bytes=len(joined(parts)), current_bytes=len(joined(current)), vote=verdict.vote)


def test_handled_counts_by_method_and_code(learner: Learner, traffic: Traffic) -> None:
    samples = scrape(learner)
    unary = {"grpc_service": LEARNER, "grpc_method": "MLSetup", "grpc_type": "unary"}
    assert value(samples, "grpc_server_handled_total", grpc_code="OK", **unary) == 2
    assert value(samples, "grpc_server_handled_total", grpc_code="NOT_FOUND", **unary) == 1
    assert value(samples, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **unary) == 1
    assert absent(samples, "grpc_server_handled_total", grpc_code="INTERNAL", grpc_method="MLSetup")
    assert value(samples, "grpc_server_started_total", **unary) == 4

    def handled(method: str, kind: str, code: str = "OK") -> float:
        labels = {"grpc_service": LEARNER, "grpc_method": method, "grpc_type": kind, "grpc_code": code}
        return value(samples, "grpc_server_handled_total", **labels)

    assert handled("ProposeWeights", "server_stream") == 1
    assert handled("TestWeights", "client_stream") == 1
    assert handled("AcceptProposal", "unary") == 1
    assert handled("SetWeights", "client_stream", "INVALID_ARGUMENT") == 1
    assert handled("GetCurrentWeights", "server_stream") == 1


def test_handling_seconds_histogram(learner: Learner, traffic: Traffic) -> None:
    """The grpc-ecosystem label set: by method, not by code (the handled counter has the codes)."""
    samples = scrape(learner)
    labels = {"grpc_service": LEARNER, "grpc_method": "MLSetup", "grpc_type": "unary"}
    buckets = [
        s
        for s in samples["grpc_server_handling_seconds_bucket"]
        if all(s.labels[k] == v for k, v in labels.items())
    ]
    assert len(buckets) > 5
    bounds = [float(s.labels["le"]) for s in buckets]
    assert bounds == sorted(bounds)
    assert bounds[-1] == math.inf
    counts = [s.value for s in buckets]
    assert counts == sorted(counts), "histogram buckets are cumulative"
    # 2 OK, 1 NOT_FOUND and 1 INVALID_ARGUMENT: every call of the method, whatever its code.
    assert counts[-1] == 4
    assert value(samples, "grpc_server_handling_seconds_count", **labels) == 4
    assert value(samples, "grpc_server_handling_seconds_sum", **labels) > 0
    histogram = [
        s for name, found in samples.items() if name.startswith("grpc_server_handling_seconds") for s in found
    ]
    assert {frozenset(s.labels) - {"le"} for s in histogram} == {frozenset(labels)}


def test_no_created_series(learner: Learner, traffic: Traffic) -> None:
    """``_created`` would double every counter's and histogram's series, and nothing reads it."""
    text = scrape_text(learner)
    assert "grpc_server_handled_total" in text
    assert "_created" not in text


def test_weight_bytes_in_and_out(learner: Learner, traffic: Traffic) -> None:
    samples = scrape(learner)
    out_propose = value(samples, "colearn_weight_bytes_total", direction="out", method="ProposeWeights")
    in_test = value(samples, "colearn_weight_bytes_total", direction="in", method="TestWeights")
    out_current = value(samples, "colearn_weight_bytes_total", direction="out", method="GetCurrentWeights")
    assert out_propose == traffic.proposal_bytes > 0
    assert in_test == traffic.proposal_bytes
    assert out_current == traffic.current_bytes
    # A refused stream moved no weights into the model.
    assert absent(samples, "colearn_weight_bytes_total", direction="in", method="SetWeights")


def test_model_series(learner: Learner, traffic: Traffic) -> None:
    samples = scrape(learner)
    assert value(samples, "colearn_model_parameters") == 10 * 64 + 10
    assert value(samples, "colearn_model_ready") == 1
    info = samples["colearn_learner_info"]
    assert len(info) == 1
    assert info[0].labels["model"] == "SKLEARN_DIGITS"
    assert info[0].labels["dataloader"] == "DIGITS"
    assert info[0].labels["version"]
    assert info[0].value == 1
    outcome = "approve" if traffic.vote else "reject"
    assert value(samples, "colearn_votes_total", outcome=outcome) == 1
    assert sum(s.value for s in samples["colearn_votes_total"]) == 1
    assert value(samples, "colearn_accepted_proposals_total") == 1
    assert value(samples, "colearn_train_seconds_count") == 1
    assert value(samples, "colearn_eval_seconds_count") == 1
    assert 0 <= value(samples, "colearn_vote_score") <= 1


def test_process_metrics_are_kept(learner: Learner, traffic: Traffic) -> None:
    samples = scrape(learner)
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") >= 0
    assert "python_info" in samples


def test_two_learners_in_one_process_keep_separate_series(learner: Learner, traffic: Traffic) -> None:
    with Learner(metrics=True) as other:
        other.stub.QueryVersion(pb.QueryVersionRequest(), timeout=10)
        samples = scrape(other)
        assert value(samples, "grpc_server_handled_total", grpc_method="MLSetup", grpc_code="OK") == 0
        assert value(samples, "grpc_server_handled_total", grpc_method="QueryVersion", grpc_code="OK") == 1
        assert value(samples, "colearn_model_ready") == 0
    assert value(scrape(learner), "grpc_server_handled_total", grpc_method="MLSetup", grpc_code="OK") == 2


def test_metrics_port_zero_serves_no_metrics() -> None:
    with Learner(metrics=False) as learner:
        assert learner.server.metrics_port == 0


def test_a_cancelled_stream_is_counted_as_cancelled_not_unknown() -> None:
    """UNKNOWN means a server fault to dashboards and alerts; a client hanging up is CANCELLED."""
    with tiny_models() as tiny, Learner(metrics=True) as learner:
        tiny.gate.clear()
        setup = pb.MLSetupRequest(
            dataloader_name=TinyRegistry.TINY_DATA, model_name=TinyRegistry.TINY_GATED_MODEL
        )
        learner.stub.MLSetup(setup, timeout=10)
        call = learner.stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=60)
        assert tiny.instances[-1].proposing.wait(30)
        call.cancel()
        tiny.gate.set()
        # The handler finishes once the gate opens; wait (bounded) until the interceptor has counted it.
        labels = {"grpc_method": "ProposeWeights", "grpc_type": "server_stream"}
        for _ in range(600):
            handled = [
                s
                for s in scrape(learner).get("grpc_server_handled_total", [])
                if all(s.labels.get(k) == v for k, v in labels.items()) and s.value
            ]
            if handled:
                break
            time.sleep(0.05)
        assert [(s.labels["grpc_code"], s.value) for s in handled] == [("CANCELLED", 1.0)]


def test_every_method_has_its_series_at_zero_before_its_first_call() -> None:
    """rate() and increase() see a counter's first increment only if the series existed before it."""
    with Learner(metrics=True) as fresh:
        before = scrape(fresh)
        methods = pb.DESCRIPTOR.services_by_name["Learner"].methods
        for method in methods:
            assert (
                value(before, "grpc_server_started_total", grpc_service=LEARNER, grpc_method=method.name) == 0
            )
            assert value(before, "grpc_server_handled_total", grpc_method=method.name, grpc_code="OK") == 0
            assert value(before, "grpc_server_handling_seconds_count", grpc_method=method.name) == 0
        fresh.stub.QueryVersion(pb.QueryVersionRequest(), timeout=10)
        code, _ = rpc_code(
            lambda: list(fresh.stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=10))
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION  # no model yet
        after = scrape(fresh)
        # The interceptor counts into the declared series (same labels, grpc_type included), not new ones.
        assert value(after, "grpc_server_handled_total", grpc_method="QueryVersion", grpc_code="OK") == 1
        assert value(after, "grpc_server_handling_seconds_count", grpc_method="QueryVersion") == 1
        for name, kind in (("QueryVersion", "unary"), ("GetCurrentWeights", "server_stream")):
            started = [s for s in after["grpc_server_started_total"] if s.labels["grpc_method"] == name]
            assert [(s.labels["grpc_type"], s.value) for s in started] == [(kind, 1.0)]


def test_a_health_watch_is_timed_when_its_stream_ends() -> None:
    """Watch is non-blocking (its handler returns at once): it is timed to the moment its stream closes,
    into the same code-less histogram series as every other method."""
    with Learner(metrics=True) as learner, grpc.insecure_channel(learner.address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        stream.cancel()
        watch = {
            "grpc_service": "grpc.health.v1.Health",
            "grpc_method": "Watch",
            "grpc_type": "server_stream",
        }
        deadline = time.monotonic() + 30
        while absent(samples := scrape(learner), "grpc_server_handling_seconds_count", **watch):
            assert time.monotonic() < deadline, "the closed Watch was never timed"
            time.sleep(0.05)
        assert value(samples, "grpc_server_handling_seconds_count", **watch) == 1
        assert value(samples, "grpc_server_handled_total", grpc_code="CANCELLED", **watch) == 1
