"""The backend's Prometheus metrics, scraped over real HTTP from a ``BackendMetrics`` exporter on 127.0.0.1.

The rounds are ``Result``s as ``backend_client.rounds`` and ``backend_client.resync`` record them: what is
checked is what a scrape shows after ``round_recorded``, not the exporter's internals.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend_client.backend_metrics import PHASES, BackendMetrics
from backend_client.results import ABSENT, APPROVE, NONE, PROPOSER, REJECT, Result

# A local proxy from the environment must not intercept the exporter.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

DIGEST_1, DIGEST_2 = "1" * 64, "2" * 64


class Exporter:
    """A ``BackendMetrics`` serving on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self.metrics = BackendMetrics()
        self.server = self.metrics.serve("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"

    def text(self) -> str:
        with _NO_PROXY.open(self.url, timeout=30) as response:
            assert response.status == 200
            return response.read().decode()

    def scrape(self) -> list[Any]:
        return [s for family in text_string_to_metric_families(self.text()) for s in family.samples]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def value(samples: list[Any], name: str, **labels: str) -> float:
    found = [
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def series(samples: list[Any], name: str) -> list[dict[str, str]]:
    return [s.labels for s in samples if s.name == name]


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    served = Exporter()
    yield served
    served.close()


def rounds() -> list[Result]:
    """Four rounds of three learners: accepted (learner 2 resynced first), rejected, void (proposer
    absent), accepted (learner 1 absent). Timings as ``play_round`` and the resync record them."""
    return [
        Result(
            round_index=0,
            vote=True,
            outcomes=[PROPOSER, APPROVE, APPROVE],
            resynced=[2],
            timings={"resync": 0.02, "propose": 0.3, "vote": 0.1, "accept": 0.05, "total": 0.47},
        ),
        Result(
            round_index=1,
            vote=False,
            outcomes=[REJECT, PROPOSER, NONE],
            timings={"resync": 0.01, "propose": 2.0, "vote": 1.0, "accept": 0.0, "total": 3.01},
        ),
        Result(
            round_index=2,
            void=True,
            outcomes=[APPROVE, REJECT, ABSENT],
            resynced=[0, 1],
            timings={"resync": 0.03, "total": 0.001},
        ),
        Result(
            round_index=3,
            vote=True,
            outcomes=[PROPOSER, ABSENT, APPROVE],
            timings={"resync": 0.01, "propose": 1200.0, "vote": 300.0, "accept": 1.0, "total": 1501.01},
        ),
    ]


def test_every_series_is_declared_at_zero_before_the_first_round(exporter: Exporter) -> None:
    """increase() cannot see the first increment of a series born with it, and a panel must not be empty."""
    samples = exporter.scrape()
    for outcome in ("accepted", "rejected", "void"):
        assert value(samples, "colearn_backend_rounds_total", outcome=outcome) == 0
    for phase in PHASES:
        assert value(samples, "colearn_backend_round_phase_seconds_count", phase=phase) == 0
        assert value(samples, "colearn_backend_round_phase_seconds_bucket", phase=phase, le="+Inf") == 0
    for name in (
        "colearn_backend_accepted_rounds_total",
        "colearn_backend_round_seconds_count",
        "colearn_backend_round_seconds_sum",
        "colearn_backend_learners_resynced_total",
        "colearn_backend_learners_absent",
        "colearn_backend_round_learners_resynced",
        "colearn_backend_experiment_accepted_rounds",
        "colearn_backend_planned_rounds",
        "colearn_backend_learners",
    ):
        assert value(samples, name) == 0, name
    # No round yet: the dashboard's "done" (round + 1) reads 0.
    assert value(samples, "colearn_backend_round") == -1
    assert value(samples, "colearn_backend_round_seconds_bucket", le="+Inf") == 0
    assert len(series(samples, "colearn_backend_run_info")) == 1
    assert len(series(samples, "colearn_backend_fleet_weights_info")) == 1


def test_the_run_is_described(exporter: Exporter) -> None:
    exporter.metrics.run_started(
        run="digits-1",
        model="SKLEARN_DIGITS",
        dataloader="DIGITS",
        learners=3,
        first_round=0,
        total_rounds=10,
    )
    samples = exporter.scrape()
    assert series(samples, "colearn_backend_run_info") == [
        {"run": "digits-1", "model": "SKLEARN_DIGITS", "dataloader": "DIGITS"}
    ]
    assert value(samples, "colearn_backend_run_info") == 1
    assert value(samples, "colearn_backend_learners") == 3
    assert value(samples, "colearn_backend_planned_rounds") == 10
    assert value(samples, "colearn_backend_round") == -1


def test_a_resumed_run_starts_at_its_first_round(exporter: Exporter) -> None:
    """Before its first round, a run resumed at round 4 has done 4 rounds: round 3 was the last recorded."""
    exporter.metrics.run_started(
        run="r", model="m", dataloader="d", learners=2, first_round=4, total_rounds=10
    )
    assert value(exporter.scrape(), "colearn_backend_round") == 3


def test_rounds_are_counted_by_outcome(exporter: Exporter) -> None:
    for result in rounds():
        exporter.metrics.round_recorded(result)
    samples = exporter.scrape()
    assert value(samples, "colearn_backend_rounds_total", outcome="accepted") == 2
    assert value(samples, "colearn_backend_rounds_total", outcome="rejected") == 1
    # A void round is neither accepted nor rejected, even if a vote had been counted.
    assert value(samples, "colearn_backend_rounds_total", outcome="void") == 1
    assert value(samples, "colearn_backend_accepted_rounds_total") == 2
    assert value(samples, "colearn_backend_round") == 3


def test_the_initial_evaluation_is_no_round(exporter: Exporter) -> None:
    exporter.metrics.round_recorded(Result(outcomes=[NONE, NONE], timings={"total": 1.0}))
    samples = exporter.scrape()
    assert sum(s.value for s in samples if s.name == "colearn_backend_rounds_total") == 0
    assert value(samples, "colearn_backend_round_seconds_count") == 0
    assert value(samples, "colearn_backend_round") == -1


def test_round_and_phase_times_are_histograms_from_milliseconds_to_an_hour(exporter: Exporter) -> None:
    played = rounds()
    for result in played:
        exporter.metrics.round_recorded(result)
    samples = exporter.scrape()
    assert value(samples, "colearn_backend_round_seconds_count") == 4
    assert math.isclose(
        value(samples, "colearn_backend_round_seconds_sum"), sum(r.timings["total"] for r in played)
    )
    buckets = [s for s in samples if s.name == "colearn_backend_round_seconds_bucket"]
    bounds = [float(s.labels["le"]) for s in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == math.inf
    assert bounds[0] <= 0.005 and 3600 in bounds
    counts = {float(s.labels["le"]): s.value for s in buckets}
    # 0.001 s, 0.47 s, 3.01 s and 1501 s: each in its own bucket, cumulatively.
    assert counts[bounds[0]] == 1
    assert counts[0.5] == 2
    assert counts[5] == 3
    assert counts[1200] == 3 and counts[1800] == 4
    phases = {
        phase: value(samples, "colearn_backend_round_phase_seconds_count", phase=phase) for phase in PHASES
    }
    assert phases == {"resync": 4, "propose": 3, "vote": 3, "accept": 3}
    assert math.isclose(value(samples, "colearn_backend_round_phase_seconds_sum", phase="propose"), 1202.3)
    # "total" is the round's histogram, not a phase.
    assert not [s for s in samples if s.labels.get("phase") == "total"]


def test_absent_and_resynced_learners(exporter: Exporter) -> None:
    played = rounds()
    for result in played[:3]:
        exporter.metrics.round_recorded(result)
    samples = exporter.scrape()
    assert value(samples, "colearn_backend_learners_absent") == 1
    assert value(samples, "colearn_backend_round_learners_resynced") == 2
    assert value(samples, "colearn_backend_learners_resynced_total") == 3
    exporter.metrics.round_recorded(played[3])
    samples = exporter.scrape()
    # The gauges are the last round's; the counter sums every round's.
    assert value(samples, "colearn_backend_learners_absent") == 1
    assert value(samples, "colearn_backend_round_learners_resynced") == 0
    assert value(samples, "colearn_backend_learners_resynced_total") == 3


def test_the_fleet_weights_are_one_series_with_the_current_digest(exporter: Exporter) -> None:
    exporter.metrics.fleet_weights(DIGEST_1, 1)
    exporter.metrics.fleet_weights(DIGEST_2, 7)
    samples = exporter.scrape()
    assert series(samples, "colearn_backend_fleet_weights_info") == [{"sha256": DIGEST_2}]
    assert value(samples, "colearn_backend_fleet_weights_info") == 1
    # The whole experiment's, those before a resume included: not what this process counted (none).
    assert value(samples, "colearn_backend_experiment_accepted_rounds") == 7
    assert value(samples, "colearn_backend_accepted_rounds_total") == 0


def test_no_created_series_and_the_process_metrics_are_kept(exporter: Exporter) -> None:
    for result in rounds():
        exporter.metrics.round_recorded(result)
    text = exporter.text()
    assert "colearn_backend_rounds_total" in text
    assert "_created" not in text
    samples = exporter.scrape()
    assert value(samples, "process_resident_memory_bytes") > 0
    assert series(samples, "python_info")


def test_two_exporters_in_one_process_keep_separate_series(exporter: Exporter) -> None:
    other = Exporter()
    try:
        other.metrics.round_recorded(rounds()[0])
        assert value(other.scrape(), "colearn_backend_rounds_total", outcome="accepted") == 1
        assert value(exporter.scrape(), "colearn_backend_rounds_total", outcome="accepted") == 0
        assert other.server.server_port != exporter.server.server_port
    finally:
        other.close()


def test_a_port_in_use_is_refused(exporter: Exporter) -> None:
    """Only "::" falls back (to every IPv4 interface); another address that cannot be bound is an error."""
    with pytest.raises(OSError):
        BackendMetrics().serve("127.0.0.1", exporter.server.server_port)
