"""deploy/: the Prometheus config and rules pass promtool, and the Grafana files fit together.

promtool is the real checker (the one Prometheus itself uses to load them). The rule unit tests live in
deploy/prometheus/tests; the checks below also prove those tests can fail: an alert or recording rule
broken on purpose must make them fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_queries import all_panels, dashboard_queries
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backend_client.backend_metrics import BackendMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "colearn-fleet.json"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt prometheus)")

# What the issue asks the alerts and the dashboard to cover.
REQUIRED_ALERTS = {
    "ColearnLearnerDown",
    "ColearnRpcFaultRatioHigh",
    "ColearnNoAcceptedProposal",
    "ColearnSlowRounds",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recordings() -> dict[str, dict[str, Any]]:
    return {rule["record"]: rule for rule in rules() if "record" in rule}


def rule_tests() -> list[dict[str, Any]]:
    return [test for path in RULE_TESTS for test in load_yaml(path)["tests"]]


# --- Prometheus --------------------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_config_and_its_rule_files() -> None:
    checked = promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The rule_files glob (relative to the config) found every rule file, not none.
    assert f"{len(RULE_FILES)} rule files found" in checked.stdout + checked.stderr


def test_learners_are_discovered_by_the_compose_service_name() -> None:
    """`--scale learner=N` needs no config change: the targets come from DNS, on the metrics port."""
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    learner = jobs["colearn-learner"]
    assert "static_configs" not in learner
    assert learner["dns_sd_configs"] == [
        {"names": ["learner"], "type": "A", "port": 9091, "refresh_interval": "5s"}
    ]
    assert [p for pattern in config["rule_files"] for p in PROMETHEUS.glob(pattern)] == RULE_FILES


def test_the_backend_is_discovered_by_its_compose_service_name() -> None:
    """The backend serves its metrics on 9092 (`--metrics_port 9092` in compose); like the learners, it is
    found by DNS, so that it is a target only while its container runs."""
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]}
    backend = jobs["colearn-backend"]
    assert "static_configs" not in backend
    assert backend["dns_sd_configs"] == [
        {"names": ["backend"], "type": "A", "port": 9092, "refresh_interval": "5s"}
    ]


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", *RULE_FILES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    tested = promtool("test", "rules", *RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_says_how_bad_and_what_it_means() -> None:
    found = alerts()
    assert set(found) >= REQUIRED_ALERTS
    for name, rule in found.items():
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name} fires on a single evaluation"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in rule_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == set(alerts()), "alerts never shown to fire"
    assert quiet == set(alerts()), "alerts never shown to stay quiet"


def test_rounds_are_counted_by_the_backend_not_summed_over_learners() -> None:
    """Summed over learners, an accepted round counts once per learner that adopted it (6 read as 18+)."""
    found = recordings()
    assert "colearn_backend_rounds_total" in found["job:colearn_backend_rounds:increase1h"]["expr"]
    accepted = found["job:colearn_backend_accepted_rounds:increase1h"]["expr"]
    assert "colearn_backend_accepted_rounds_total" in accepted
    no_accept = alerts()["ColearnNoAcceptedProposal"]["expr"]
    assert "job:colearn_backend_rounds:increase1h" in no_accept
    assert "job:colearn_backend_accepted_rounds:increase1h" in no_accept
    for rule in rules():
        assert "colearn_accepted_proposals_total" not in rule["expr"], rule
        assert "colearn_train_seconds_count" not in rule["expr"], rule


def test_no_rule_or_query_reads_a_code_on_the_latency_histogram() -> None:
    """grpc_server_handling_seconds has the grpc-ecosystem labels (type, service, method) and no code."""
    histogram = re.compile(r"grpc_server_handling_seconds_\w+\{[^}]*grpc_code")
    everything = [rule["expr"] for rule in rules()] + dashboard_queries(DASHBOARD)
    assert [expr for expr in everything if "grpc_server_handling_seconds" in expr]
    assert not [expr for expr in everything if histogram.search(expr)]


def backend_metrics_read() -> set[str]:
    """The backend's series that the dashboard and the rules read (metric names as they are scraped)."""
    everything = [rule["expr"] for rule in rules()] + dashboard_queries(DASHBOARD)
    return {
        name for expr in everything for name in re.findall(r"(?<![:\w])colearn_backend_\w+(?![:\w])", expr)
    }


def test_every_backend_series_read_exists_before_the_first_round() -> None:
    """increase() cannot see the first increment of a series born with it; and a panel must not be empty
    before the first round. A fresh exporter already has every series that is read (the time series of
    histograms included)."""
    scraped = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(BackendMetrics().registry).decode())
        for sample in family.samples
    }
    read = backend_metrics_read()
    assert len(read) >= 12
    assert read <= scraped, read - scraped


def test_every_recording_rule_is_unit_tested() -> None:
    tested = " ".join(case["expr"] for test in rule_tests() for case in test.get("promql_expr_test", []))
    untested = [name for name in recordings() if name not in tested]
    assert not untested


def _broken_copy(tmp_path: Path, name: str, expr: str) -> list[Path]:
    """deploy/prometheus copied to tmp_path with one rule's expression replaced; returns its rule tests."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    for path in (copy / "rules").glob("*.yml"):
        document = load_yaml(path)
        for group in document["groups"]:
            for rule in group["rules"]:
                if name in (rule.get("alert"), rule.get("record")):
                    rule["expr"] = expr
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return sorted((copy / "tests").glob("*.yml"))


@needs_promtool
@pytest.mark.parametrize("alert", sorted(alerts()))
def test_the_unit_tests_fail_when_an_alert_never_fires(tmp_path: Path, alert: str) -> None:
    tested = promtool("test", "rules", *_broken_copy(tmp_path, alert, "vector(1) > 2"))
    assert tested.returncode != 0
    assert alert in tested.stdout + tested.stderr


@needs_promtool
@pytest.mark.parametrize("record", sorted(recordings()))
def test_the_unit_tests_fail_when_a_recording_rule_is_wrong(tmp_path: Path, record: str) -> None:
    tested = promtool("test", "rules", *_broken_copy(tmp_path, record, "vector(42)"))
    assert tested.returncode != 0
    assert record in tested.stdout + tested.stderr


# --- Grafana -----------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml")):
        for source in load_yaml(path)["datasources"]:
            found[source["uid"]] = source
    return found


def test_the_datasource_is_the_fleets_prometheus() -> None:
    sources = provisioned_datasources()
    assert len(sources) == 1
    (source,) = sources.values()
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True


def test_the_dashboard_provider_loads_files() -> None:
    providers = [
        provider
        for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
        for provider in load_yaml(path)["providers"]
    ]
    assert len(providers) == 1
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert [p.name for p in (GRAFANA / "dashboards").glob("*.json")] == [DASHBOARD.name]


def test_every_panel_and_query_uses_a_provisioned_datasource() -> None:
    uids = set(provisioned_datasources())
    board = dashboard()
    queried = [p for p in all_panels(board["panels"]) if p["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], f"{panel['title']} shows nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] in uids, variable["name"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    every = list(all_panels(board["panels"]))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queries = "\n".join(dashboard_queries(DASHBOARD))
    for needle in (
        'up{job="colearn-learner"',
        "colearn_model_ready",
        "sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total",
        "histogram_quantile(0.5, sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket",
        "histogram_quantile(0.95, sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket",
        "colearn_weight_bytes_total",
        "colearn_votes_total",
        "colearn_accepted_proposals_total",
        "colearn_vote_score",
        "colearn_test_score",
        # The experiment, from the backend.
        'colearn_backend_round{job="colearn-backend"}',
        'colearn_backend_planned_rounds{job="colearn-backend"}',
        'colearn_backend_rounds_total{job="colearn-backend"}',
        'colearn_backend_experiment_accepted_rounds{job="colearn-backend"}',
        'colearn_backend_round_seconds_bucket{job="colearn-backend"}',
        'colearn_backend_round_phase_seconds_sum{job="colearn-backend"}',
        'colearn_backend_learners_absent{job="colearn-backend"}',
        'colearn_backend_round_learners_resynced{job="colearn-backend"}',
        'colearn_backend_fleet_weights_info{job="colearn-backend"}',
        'colearn_backend_run_info{job="colearn-backend"}',
    ):
        assert needle in queries, needle


def test_the_experiment_row_comes_first_and_reads_the_backend_only() -> None:
    """Rounds are the backend's: no panel infers them from the learners' trainings or accepts any more."""
    panels = dashboard()["panels"]
    assert panels[0]["type"] == "row" and panels[0]["title"] == "Experiment"
    experiment = panels[1 : next(i for i, p in enumerate(panels) if i and p["type"] == "row")]
    assert len(experiment) >= 8
    for panel in experiment:
        for target in panel["targets"]:
            assert 'job="colearn-backend"' in target["expr"], panel["title"]
            assert "colearn-learner" not in target["expr"], panel["title"]
    queries = dashboard_queries(DASHBOARD)
    assert not [q for q in queries if "colearn_train_seconds_count" in q]
    summed = re.compile(
        r"(sum|max)\s*(by\s*\([^)]*\))?\s*\(\s*(increase|rate)\(colearn_accepted_proposals_total"
    )
    assert not [q for q in queries if summed.search(q)]


# --- the query extraction the live tests rely on -----------------------------------------------------


def test_dashboard_queries_substitutes_variables_and_finds_every_target(tmp_path: Path) -> None:
    board = {
        "templating": {
            "list": [
                {
                    "name": "instance",
                    "type": "query",
                    "query": {"query": 'label_values(up{job="j"}, instance)'},
                    "includeAll": True,
                    "allValue": ".*",
                },
                {"name": "method", "type": "custom", "current": {"value": "Propose"}},
            ]
        },
        "panels": [
            {"type": "stat", "targets": [{"expr": 'up{instance=~"$instance"}'}, {"refId": "no expr"}]},
            {
                "type": "row",
                "collapsed": True,
                "panels": [
                    {"type": "timeseries", "targets": [{"expr": 'rate(x{m="${method}"}[$__rate_interval])'}]},
                    {"type": "timeseries", "targets": [{"expr": 'y{i=~"[[instance]]"}'}]},
                ],
            },
        ],
    }
    path = tmp_path / "board.json"
    path.write_text(json.dumps(board))
    assert dashboard_queries(path) == [
        'up{job="j"}',
        'up{instance=~".*"}',
        'rate(x{m="Propose"}[1m])',
        'y{i=~".*"}',
    ]


def test_dashboard_queries_refuses_an_unknown_variable(tmp_path: Path) -> None:
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"panels": [{"targets": [{"expr": 'up{instance=~"$typo"}'}]}]}))
    with pytest.raises(ValueError, match=r"\$typo"):
        dashboard_queries(path)


def test_the_real_dashboard_leaves_no_variable_unset() -> None:
    queries = dashboard_queries(DASHBOARD)
    assert len(queries) == 1 + sum(len(p.get("targets", [])) for p in all_panels(dashboard()["panels"]))
    assert not [q for q in queries if "$" in q or "[[" in q]
