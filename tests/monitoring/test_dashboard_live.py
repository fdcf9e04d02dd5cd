"""The dashboard and the rules against a real Prometheus scraping three real learner processes and the
backend's exporter.

Grafana cannot run here, so every query of the dashboard runs through Prometheus's HTTP API instead, after
the backend has driven a few rounds (SKLEARN_DIGITS on DIGITS, one shard per learner). The rounds are
played in this process as ``colearn-backend run`` plays them (a resync, then the round) and each result
goes to a real ``BackendMetrics`` exporter, which Prometheus scrapes as the ``colearn-backend`` job.
Prometheus runs with deploy/prometheus/prometheus.yml itself, changed only where the host differs from
compose: the learners and the backend are static 127.0.0.1 targets instead of the `learner` and `backend`
DNS names, Prometheus scrapes itself on its own port, and the rule files are named by absolute path. The
rules load from the very files in deploy/.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LearnerProcesses, free_port
from dashboard_queries import (
    GRAFANA_BUILTINS,
    PrometheusProcess,
    all_panels,
    dashboard_queries,
    query,
    query_returns_data,
    targets,
)

from backend_client import ExampleGRPCLearnerClient, Result, Weights
from backend_client.backend_metrics import BackendMetrics, round_outcome
from backend_client.fan_out import fan_out
from backend_client.resync import FleetWeights, resynced_round

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
BACKEND_JOB = "colearn-backend"
RUN = "monitoring-live"


def host_config(learner_metrics: list[str], backend_metrics: str, own_address: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the DNS discovery of learners and backend swapped for static
    targets."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    static = {LEARNER_JOB: learner_metrics, BACKEND_JOB: [backend_metrics], "prometheus": [own_address]}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(static)
    for job in config["scrape_configs"]:
        if job["job_name"] != "prometheus":
            assert "dns_sd_configs" in job, f"{job['job_name']} should be discovered by DNS"
            del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": static[job["job_name"]]}]
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
    backend: str
    exporter: Any
    prometheus: PrometheusProcess
    results: list[Result]
    #: The fleet's weights after the last round, as the backend reported them.
    fleet_sha256: str

    @property
    def accepted_rounds(self) -> int:
        return sum(round_outcome(r) == "accepted" for r in self.results)


def lag_behind(client: ExampleGRPCLearnerClient) -> None:
    """Gives a learner weights of its own (its own training, taken by SetWeights without a proposal id, so
    no accepted round of its own): the first resync must bring it back to the fleet's weights."""
    trained = client.mli_propose_weights()
    client.mli_accept_weights(Weights(weights=trained.weights.renamed("")))


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
    backend = BackendMetrics()
    exporter = backend.serve("127.0.0.1", 0)
    backend_address = f"127.0.0.1:{exporter.server_port}"
    config = work / "prometheus.yml"
    own = f"127.0.0.1:{prometheus_port}"
    config.write_text(yaml.safe_dump(host_config(metrics, backend_address, own), sort_keys=False))
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
        learners_up, backend_up = (f'count(up{{job="{job}"}} == 1)' for job in (LEARNER_JOB, BACKEND_JOB))
        scraped_all = f"{learners_up} == {N} and on () {backend_up} == 1"
        if not wait_for(lambda: query_returns_data(prometheus.url, scraped_all), timeout=60):
            raise RuntimeError(f"Prometheus did not scrape every learner and the backend:\n{prometheus.log}")
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
        backend.run_started(
            run=RUN,
            model="SKLEARN_DIGITS",
            dataloader="DIGITS",
            learners=N,
            first_round=0,
            total_rounds=ROUNDS,
        )
        lag_behind(clients[-1])
        fleet = FleetWeights()
        results: list[Result] = []
        for r in range(ROUNDS):
            result = resynced_round(fleet, clients, 0.5, r)
            results.append(result)
            backend.round_recorded(result)
            accepted = sum(round_outcome(done) == "accepted" for done in results)
            backend.fleet_weights(fleet.sha256 or result.base_sha256, accepted)
        yield Monitored(
            processes,
            grpc_ports,
            metrics,
            backend_address,
            exporter,
            prometheus,
            results,
            fleet.sha256 or results[-1].base_sha256,
        )
    finally:
        for client in clients:
            client.stop()
        prometheus.stop()
        exporter.shutdown()
        exporter.server_close()
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


def test_the_backend_target_is_up(monitored: Monitored, queries: list[str]) -> None:
    backend = [t for t in targets(monitored.prometheus.url) if t["labels"]["job"] == BACKEND_JOB]
    assert [(t["labels"]["instance"], t["health"]) for t in backend] == [(monitored.backend, "up")]


def test_every_dashboard_query_returns_data(monitored: Monitored, queries: list[str]) -> None:
    assert len(queries) > 30
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


def panel_targets(title: str) -> list[str]:
    """The queries of one dashboard panel, in refId order, with Grafana's built-ins set as
    ``dashboard_queries`` sets them."""
    (panel,) = [p for p in all_panels(json.loads(DASHBOARD.read_text())["panels"]) if p["title"] == title]
    found = []
    for target in sorted(panel["targets"], key=lambda t: t["refId"]):
        expr = target["expr"]
        for name, value in sorted(GRAFANA_BUILTINS.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(f"${name}", value)
        assert "$" not in expr, expr
        found.append(expr)
    return found


def values(url: str, promql: str, label: str | None = None) -> dict[str | None, float]:
    """An instant query's values, keyed by one label (None: a query of one series)."""
    return {(s["metric"].get(label) if label else None): float(s["value"][1]) for s in query(url, promql)}


@pytest.fixture(scope="module")
def scraped_rounds(monitored: Monitored, queries: list[str]) -> Monitored:
    """Waits (bounded) until Prometheus has scraped the backend after its last round."""
    last = f'colearn_backend_round{{job="{BACKEND_JOB}"}} == {ROUNDS - 1}'
    wait_for(lambda: query_returns_data(monitored.prometheus.url, last), timeout=30)
    return monitored


def test_the_experiment_panels_show_the_rounds_played(scraped_rounds: Monitored) -> None:
    """Each query of the Experiment row, run as Grafana runs it, answers what the rounds did."""
    url, results = scraped_rounds.prometheus.url, scraped_rounds.results
    outcomes = {outcome: 0.0 for outcome in ("accepted", "rejected", "void")}
    outcomes.update(Counter(round_outcome(r) for r in results))
    done, planned = panel_targets("Rounds done / planned")
    assert values(url, done) == {None: ROUNDS}
    assert values(url, planned) == {None: ROUNDS}
    (accepted,) = panel_targets("Accepted rounds")
    assert values(url, accepted) == {None: scraped_rounds.accepted_rounds}
    (by_outcome,) = panel_targets("Rounds by outcome")
    assert values(url, by_outcome, "outcome") == outcomes
    played, experiment_accepted = panel_targets("Rounds played by outcome")
    assert values(url, played, "outcome") == outcomes
    assert values(url, experiment_accepted) == {None: scraped_rounds.accepted_rounds}
    configured, absent, resynced = panel_targets("Learners in the last round")
    assert values(url, configured) == {None: N}
    assert values(url, absent) == {None: results[-1].outcomes.count("absent")}
    assert values(url, resynced) == {None: len(results[-1].resynced)}
    *_, resynced_run = panel_targets("Learners absent and resynced")
    # The lagging learner was resynced before the first round.
    assert N - 1 in results[0].resynced
    assert values(url, resynced_run) == {None: sum(len(r.resynced) for r in results)}


def test_the_experiment_panel_names_the_run_and_the_current_weights(scraped_rounds: Monitored) -> None:
    """One series each, though both info series changed their labels during the run (the run's from
    none to its name, the weights' from no digest to the fleet's)."""
    url = scraped_rounds.prometheus.url
    run, weights = panel_targets("Experiment and weights")
    assert [
        (s["metric"]["run"], s["metric"]["model"], s["metric"]["dataloader"]) for s in query(url, run)
    ] == [(RUN, "SKLEARN_DIGITS", "DIGITS")]
    assert len(scraped_rounds.fleet_sha256) == 64
    assert [s["metric"]["sha256"] for s in query(url, weights)] == [scraped_rounds.fleet_sha256]


def test_round_times_are_the_backends_measures(scraped_rounds: Monitored) -> None:
    url, results = scraped_rounds.prometheus.url, scraped_rounds.results
    job = f'{{job="{BACKEND_JOB}"}}'
    assert values(url, f"colearn_backend_round_seconds_count{job}") == {None: ROUNDS}
    total = values(url, f"colearn_backend_round_seconds_sum{job}")[None]
    assert math.isclose(total, sum(r.timings["total"] for r in results), rel_tol=1e-9)
    phases = values(url, f"colearn_backend_round_phase_seconds_count{job}", "phase")
    expected = Counter(phase for r in results for phase in r.timings if phase != "total")
    assert {phase: count for phase, count in phases.items() if count} == expected
    # The panels' quantiles and means are numbers once rounds have been timed.
    for promql in [*panel_targets("Round duration"), *panel_targets("Round phases (mean per round)")]:
        assert query(url, promql), promql


def test_recording_rules_evaluate_on_real_series(scraped_rounds: Monitored) -> None:
    url = scraped_rounds.prometheus.url
    names = [
        rule["record"]
        for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    assert names

    def recorded(name: str) -> float:
        found = query(url, name)
        return float(found[0]["value"][1]) if found else 0.0

    def counted() -> bool:
        return (
            recorded("job:colearn_backend_rounds:increase1h") >= ROUNDS
            and recorded("job:colearn_backend_accepted_rounds:increase1h") >= scraped_rounds.accepted_rounds
        )

    # Every rule has data, and the round counters have seen the last round (one evaluation after a scrape).
    wait_for(lambda: counted() and all(query_returns_data(url, n) for n in names), timeout=30)
    assert not [n for n in names if not query_returns_data(url, n)]
    # Counted from 0, so every round, once. increase() extrapolates from the few samples of a young
    # series to the window's edges, a little above the count; a rule that counted per learner instead of
    # per experiment would give 3x (9 here), far above the bound.
    assert ROUNDS <= recorded("job:colearn_backend_rounds:increase1h") < 2 * ROUNDS
    accepted = scraped_rounds.accepted_rounds
    assert accepted <= recorded("job:colearn_backend_accepted_rounds:increase1h") <= 2 * accepted
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


def test_the_experiment_stats_outlast_the_backend(scraped_rounds: Monitored) -> None:
    """A backend exits after its last round (compose, the Helm Job): its series go stale at the next
    scrape, but the Experiment row's stat panels read the last values in the time range and still answer.
    Stops the backend's exporter: runs after every other test that reads the backend."""
    url = scraped_rounds.prometheus.url
    stats = ["Rounds done / planned", "Accepted rounds", "Rounds by outcome", "Learners in the last round"]
    before = {q: values(url, q, "outcome") for title in stats for q in panel_targets(title)}
    run, weights = panel_targets("Experiment and weights")
    scraped_rounds.exporter.shutdown()
    scraped_rounds.exporter.server_close()
    gone = f'up{{job="{BACKEND_JOB}"}} == 0'
    assert wait_for(lambda: query_returns_data(url, gone), timeout=30)
    assert not query(url, f'colearn_backend_round{{job="{BACKEND_JOB}"}}'), "the backend's series are stale"
    assert {q: values(url, q, "outcome") for q in before} == before
    assert [s["metric"]["run"] for s in query(url, run)] == [RUN]
    assert [s["metric"]["sha256"] for s in query(url, weights)] == [scraped_rounds.fleet_sha256]


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
