"""Monitoring objects: opt-in PodMonitor/ServiceMonitor/PrometheusRule (validated against the operator's
API structure, since kubernetes-validate knows no CRDs), scrape annotations, and the Grafana dashboard."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helm_kit import CHART, EXAMPLES, REPO_ROOT, Rendered, example, labels_select, names, render, template
from prometheus_operator_schemas import SCHEMAS

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "colearn-fleet.json"
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules"
RELEASE_LABEL = {"release": "kube-prometheus-stack"}
POD_MONITOR = {"monitoring": {"podMonitor": {"enabled": True, "labels": RELEASE_LABEL}}}
SERVICE_MONITOR = {"monitoring": {"serviceMonitor": {"enabled": True, "labels": RELEASE_LABEL}}}
RULE = {"monitoring": {"prometheusRule": {"enabled": True, "labels": RELEASE_LABEL}}}


def operator_objects(out: Rendered) -> list[dict[str, Any]]:
    return [d for d in out.docs if d["apiVersion"].startswith("monitoring.coreos.com/")]


def check_structure(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[doc["kind"]]).validate(doc)


def dashboard_job() -> str:
    """The job label every learner query of the dashboard selects (the backend's queries select its own)."""
    jobs = set(re.findall(r'job=\\?"([^"\\]+)\\?"', DASHBOARD.read_text())) - {"colearn-backend"}
    assert len(jobs) == 1, jobs
    return jobs.pop()


# -- the structural check itself can fail -------------------------------------------------------------


def test_structure_check_rejects_a_misplaced_field() -> None:
    monitor = copy.deepcopy(render(POD_MONITOR).one("PodMonitor"))
    check_structure(monitor)
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        check_structure(monitor)
    rule = copy.deepcopy(render(RULE).one("PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["record"] = "both:record_and_alert"
    with pytest.raises(jsonschema.ValidationError):
        check_structure(rule)


# -- monitors -----------------------------------------------------------------------------------------


def test_no_operator_object_by_default_and_pods_carry_scrape_annotations() -> None:
    out = render()
    assert operator_objects(out) == []
    annotations = out.learner_pod["metadata"]["annotations"]
    metrics_port = next(p["containerPort"] for p in out.learner["ports"] if p["name"] == "metrics")
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    quiet = render({"monitoring": {"scrapeAnnotations": False}, "learner": {"podAnnotations": {"a": "b"}}})
    assert quiet.learner_pod["metadata"]["annotations"] == {"a": "b"}


def test_pod_monitor_scrapes_the_learners_metrics_port_with_the_dashboards_job() -> None:
    out = render(POD_MONITOR)
    monitor = out.one("PodMonitor")
    check_structure(monitor)
    assert monitor["metadata"]["labels"].items() >= RELEASE_LABEL.items()
    spec = monitor["spec"]
    assert labels_select(spec["selector"]["matchLabels"], out.learner_pod["metadata"]["labels"])
    assert not labels_select(
        spec["selector"]["matchLabels"], out.job["spec"]["template"]["metadata"]["labels"]
    )
    assert spec["namespaceSelector"] == {"matchNames": ["colearn"]}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] in names(out.learner["ports"]) and endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    job = next(r for r in endpoint["relabelings"] if r["targetLabel"] == "job")
    # The dashboard and the alert rules select this job: without the relabeling the operator would name
    # the job <namespace>/<monitor>, and every panel would be empty.
    assert job["replacement"] == dashboard_job() == "colearn-learner"
    # With a monitor on, annotations would make an annotation-based job scrape the learners twice.
    assert "prometheus.io/scrape" not in out.learner_pod["metadata"].get("annotations", {})


def test_service_monitor_scrapes_the_headless_services_metrics_port() -> None:
    out = render(SERVICE_MONITOR)
    monitor = out.one("ServiceMonitor")
    check_structure(monitor)
    service = out.one("Service")
    assert labels_select(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in names(service["spec"]["ports"])
    assert {"action": "replace", "targetLabel": "job", "replacement": "colearn-learner"} in endpoint[
        "relabelings"
    ]
    assert out.maybe("PodMonitor") is None


def test_both_monitors_at_once_are_refused() -> None:
    done = template({"monitoring": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}})
    assert done.returncode != 0
    assert "enable one of them" in done.stderr


def test_prometheus_rule_carries_the_deploy_rules() -> None:
    rule = render(RULE).one("PrometheusRule")
    check_structure(rule)
    expected = [g for path in sorted(RULES.glob("*.yml")) for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected
    assert rule["metadata"]["labels"].items() >= RELEASE_LABEL.items()
    # Prometheus' own template syntax survives Helm's.
    assert any("{{ $labels.instance }}" in json.dumps(g) for g in rule["spec"]["groups"])


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_operator_objects_are_structurally_valid(path: Path) -> None:
    for doc in operator_objects(render(example(path))):
        check_structure(doc)


# -- the Grafana dashboard ----------------------------------------------------------------------------


def test_chart_copies_of_the_dashboard_and_rules_are_identical_to_deploys() -> None:
    """Helm reads no file outside the chart, so the chart holds copies; they must not drift."""
    assert (CHART / "files" / "colearn-fleet.json").read_bytes() == DASHBOARD.read_bytes()
    copies = sorted(p.name for p in (CHART / "files" / "rules").glob("*.yml"))
    assert copies == sorted(p.name for p in RULES.glob("*.yml"))
    for name in copies:
        assert (CHART / "files" / "rules" / name).read_bytes() == (RULES / name).read_bytes(), name


def test_dashboard_config_map_holds_the_dashboard_for_the_grafana_sidecar() -> None:
    out = render()
    (config_map,) = [c for c in out.all("ConfigMap") if "colearn-fleet.json" in c.get("data", {})]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"]["colearn-fleet.json"] == DASHBOARD.read_text()
    assert render({"monitoring": {"grafanaDashboard": {"enabled": False}}}).all("ConfigMap") == []


def test_dashboard_datasource_uid_follows_values_and_nothing_else_changes() -> None:
    values = {"monitoring": {"grafanaDashboard": {"datasourceUid": "prometheus", "labels": {"dash": "yes"}}}}
    (config_map,) = render(values).all("ConfigMap")
    assert config_map["metadata"]["labels"]["dash"] == "yes"
    rendered = json.loads(config_map["data"]["colearn-fleet.json"])
    original = json.loads(DASHBOARD.read_text())

    def uids(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["uid"]] if node.get("type") == "prometheus" and "uid" in node else []
            return found + [u for value in node.values() for u in uids(value)]
        if isinstance(node, list):
            return [u for value in node for u in uids(value)]
        return []

    assert set(uids(original)) == {"colearn-prometheus"}
    assert set(uids(rendered)) == {"prometheus"}
    assert len(uids(rendered)) == len(uids(original))
    assert json.loads(json.dumps(rendered).replace('"prometheus"}', '"colearn-prometheus"}')) == original
