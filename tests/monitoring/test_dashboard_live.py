"""The dashboard and the rules against a real Prometheus scraping three real learner processes.

Grafana cannot run here, so every query of the dashboard runs through Prometheus's HTTP API instead, after
the backend has driven a few rounds (SKLEARN_DIGITS on DIGITS, one shard per learner). Prometheus runs
with deploy/prometheus/prometheus.yml itself, changed only where the host differs from compose: the
learners are static 127.0.0.1 targets instead of the `learner` DNS name, Prometheus scrapes itself on its
own port, and the rule files are named by absolute path. The rules load from the very files in deploy/.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LearnerProcesses, free_port
from dashboard_queries import PrometheusProcess, dashboard_queries, query, query_returns_data, targets

from backend_client import ExampleGRPCLearnerClient, collective_learning_round
from backend_client.fan_out import fan_out

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed (apt)"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "colearn-fleet.json"
N = 3
ROUNDS = 3
LEARNER_JOB = "colearn-learner"


def host_config(learner_metrics: list[str], own_address: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the learners' DNS discovery swapped for static targets."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        if job["job_name"] == LEARNER_JOB:
            assert "dns_sd_configs" in job, "the learner job should discover learners by DNS"
            del job["dns_sd_configs"]
            job["static_configs"] = [{"targets": learner_metrics}]
        elif job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [own_address]}]
    return config


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Polls ``condition`` until it holds or ``timeout`` passes; returns whether it held (never raises)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@dataclass
class Monitored:
    processes: LearnerProcesses
    ports: list[int]
    metrics: list[str]
    prometheus: PrometheusProcess
    accepted_rounds: int


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    work = tmp_path_factory.mktemp("monitoring")
    processes = LearnerProcesses(work)
    ports: list[int] = []
    while len(ports) < 2 * N + 1:
        port = free_port()
        if port not in ports:
            ports.append(port)
    grpc_ports, metrics_ports, prometheus_port = ports[:N], ports[N : 2 * N], ports[-1]
    metrics = [f"127.0.0.1:{p}" for p in metrics_ports]
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(host_config(metrics, f"127.0.0.1:{prometheus_port}"), sort_keys=False))
    clients = [ExampleGRPCLearnerClient(f"learner-{i}", f"127.0.0.1:{p}") for i, p in enumerate(grpc_ports)]
    prometheus = PrometheusProcess(config, port=prometheus_port)
    try:
        # Prometheus first: its service discovery takes a few seconds to hand over targets, meanwhile the
        # learners start.
        prometheus.start()
        started = fan_out(lambda i: processes.start(grpc_ports[i], metrics_port=metrics_ports[i]), range(N))
        for i, outcome in started.items():
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"learner {i} did not start") from outcome
        # Scraped once before the first round, as a long-running fleet is: a counter's first sample is then
        # its 0, and increase() counts every round (it cannot count the step a series is born with).
        scraped_all = f'count(up{{job="{LEARNER_JOB}"}} == 1) == {N}'
        if not wait_for(lambda: query_returns_data(prometheus.url, scraped_all), timeout=60):
            raise RuntimeError(f"Prometheus did not scrape every learner:\n{prometheus.log}")
        for client in clients:
            client.start()

        def setup(i: int) -> str:
            return clients[i].setup_ml(
                dataset_loader_name="DIGITS",
                dataset_loader_parameters=json.dumps({"shard": i, "n_shards": N}),
                model_arch_name="SKLEARN_DIGITS",
                model_parameters="{}",
            )

        for i, outcome in fan_out(setup, range(N)).items():
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"learner {i} could not be set up") from outcome
        results = [collective_learning_round(clients, 0.5, r) for r in range(ROUNDS)]
        yield Monitored(processes, grpc_ports, metrics, prometheus, sum(bool(r.vote) for r in results))
    finally:
        for client in clients:
            client.stop()
        prometheus.stop()
        processes.stop_all()


@pytest.fixture(scope="module")
def queries(monitored: Monitored) -> list[str]:
    """The dashboard's queries, once Prometheus has scraped the rounds (a bounded wait, not an assertion)."""
    found = dashboard_queries(DASHBOARD)
    url = monitored.prometheus.url
    wait_for(lambda: all(query_returns_data(url, q) for q in found), timeout=90)
    return found


def test_every_learner_target_is_up(monitored: Monitored, queries: list[str]) -> None:
    url = monitored.prometheus.url
    learners = [t for t in targets(url) if t["labels"]["job"] == LEARNER_JOB]
    assert sorted(t["labels"]["instance"] for t in learners) == sorted(monitored.metrics)
    assert [t["health"] for t in learners] == ["up"] * N, [t.get("lastError") for t in learners]
    up = query(url, f'up{{job="{LEARNER_JOB}"}} == 1')
    assert sorted(s["metric"]["instance"] for s in up) == sorted(monitored.metrics)


def test_every_dashboard_query_returns_data(monitored: Monitored, queries: list[str]) -> None:
    assert len(queries) > 20
    empty = [q for q in queries if not query_returns_data(monitored.prometheus.url, q)]
    assert not empty, "queries with no data:\n" + "\n".join(empty)


def test_per_learner_panels_show_each_learner(monitored: Monitored, queries: list[str]) -> None:
    """The score panels tell learners apart by instance: one series per learner."""
    for metric in ("colearn_vote_score", "colearn_test_score", "colearn_model_ready"):
        series = query(monitored.prometheus.url, f'{metric}{{job="{LEARNER_JOB}"}}')
        assert sorted(s["metric"]["instance"] for s in series) == sorted(monitored.metrics), metric
    ready = query(monitored.prometheus.url, f'sum(colearn_model_ready{{job="{LEARNER_JOB}"}})')
    assert float(ready[0]["value"][1]) == N


def test_accepted_proposals_count_the_accepted_rounds(monitored: Monitored, queries: list[str]) -> None:
    """Every learner adopts an accepted proposal, so the most any learner counts is the accepted rounds."""
    most = f'max(colearn_accepted_proposals_total{{job="{LEARNER_JOB}"}})'

    def scraped() -> float:
        return float(query(monitored.prometheus.url, most)[0]["value"][1])

    wait_for(lambda: scraped() == monitored.accepted_rounds, timeout=30)
    assert scraped() == monitored.accepted_rounds


def test_recording_rules_evaluate_on_real_series(monitored: Monitored, queries: list[str]) -> None:
    url = monitored.prometheus.url
    names = [
        rule["record"]
        for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    assert names

    def rounds() -> float:
        found = query(url, "job:colearn_rounds:increase1h")
        return float(found[0]["value"][1]) if found else 0.0

    # Every rule has data, and the round counter has seen the last round (one evaluation after a scrape).
    wait_for(lambda: rounds() >= ROUNDS and all(query_returns_data(url, n) for n in names), timeout=30)
    assert not [n for n in names if not query_returns_data(url, n)]
    # Counted from 0, so every round: the fleet's trainings are its rounds. increase() extrapolates from
    # the few samples of a young series to the window's edges, which measured up to 4.2 for 3 rounds; a
    # rule that counted per learner instead of per fleet would give 3x (9 here), far above the bound.
    assert ROUNDS <= rounds() < 2 * ROUNDS
    # A healthy run has no server faults (a ratio of 0, or NaN for a method with no calls in the window).
    assert not query(url, "job_method:grpc_server_faults:ratio_rate5m > 0")


def test_a_healthy_fleet_raises_no_alert(monitored: Monitored, queries: list[str]) -> None:
    # Every learner is scraped once before its MLSetup (colearn_model_ready 0), so ColearnLearnerNotReady
    # can be pending until a later scrape and then a rule evaluation (5 s apart each) see the model set up.
    # A healthy fleet settles within those intervals: wait for that, bounded, then check.
    url = monitored.prometheus.url
    wait_for(lambda: not query(url, "ALERTS"), timeout=3 * 5)
    alerts = query(url, "ALERTS")
    assert not alerts, [a["metric"] for a in alerts]


def test_a_killed_learner_turns_the_down_alert_pending(monitored: Monitored, queries: list[str]) -> None:
    """Runs last in this module: it kills a learner. The alert is pending (its `for:` is a minute)."""
    url = monitored.prometheus.url
    killed = monitored.metrics[-1]
    monitored.processes.kill(monitored.ports[-1], signal.SIGKILL)
    pending = f'ALERTS{{alertname="ColearnLearnerDown", alertstate="pending", instance="{killed}"}}'
    wait_for(lambda: query_returns_data(url, pending), timeout=60)
    assert query_returns_data(url, pending)
    down = query(url, 'ALERTS{alertname="ColearnLearnerDown"}')
    assert [a["metric"]["instance"] for a in down] == [killed]
