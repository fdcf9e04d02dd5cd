"""values.schema.json rejects bad values in `helm lint` and `helm template` alike, with its own message;
values.yaml documents every value, and the chart README's table is the one made from those comments."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from helm_kit import CHART, EXAMPLES, helm_script, lint, template

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
values_table = helm_script("values_table")

# (values or --set flags, the schema's message). Helm prints the JSON pointer of the bad value.
BAD_VALUES = [
    (("--set", "replicas=0"), "at '/replicas': minimum: got 0, want 1"),
    (("--set-string", "gpu.count=two"), "at '/gpu/count': got string, want integer"),
    ({"gpu": {"count": "2"}}, "at '/gpu/count': got string, want integer"),
    ({"replicas": "three"}, "at '/replicas': got string, want integer"),
    ({"colour": "blue"}, "at '': additional properties 'colour' not allowed"),
    (
        {"learner": {"probes": {"startup": {"periodSecond": 5}}}},
        "additional properties 'periodSecond' not allowed",
    ),
    ({"data": {"mode": "nfs"}}, "at '/data/mode': value must be one of"),
    ({"vote": {"threshold": 1.5}}, "at '/vote/threshold': maximum: got 1.5, want 1"),
    ({"learner": {"tolerations": [{"key": "a", "efect": "NoSchedule"}]}}, "additional properties 'efect'"),
    # A topology key is a label key; anything else made pods that no node could ever satisfy.
    ({"learner": {"spreadTopologyKey": "kubernetes.io/host name"}}, "at '/learner/spreadTopologyKey'"),
    ({"learner": {"spreadTopologyKey": "-zone"}}, "at '/learner/spreadTopologyKey'"),
    ({"learner": {"spreadTopologyKey": "a/b/c"}}, "at '/learner/spreadTopologyKey'"),
    # GPUs come from gpu.count: a GPU in the learners' CPU/memory resources would contradict it.
    (
        {"learner": {"resources": {"limits": {"nvidia.com/gpu": 2}}}},
        "at '/learner/resources/limits/nvidia.com~1gpu'",
    ),
    (
        {"learner": {"resources": {"requests": {"amd.com/gpu": 1}}}},
        "at '/learner/resources/requests/amd.com~1gpu'",
    ),
    ({"gpu": {"resources": {"limits": {"nvidia.com/gpu": 2}}}}, "at '/gpu/resources/limits/nvidia.com~1gpu'"),
    ({"pdb": {"maxUnavailable": 0}}, "at '/pdb/maxUnavailable'"),
    ({"pdb": {"maxUnavailable": "0%"}}, "at '/pdb/maxUnavailable'"),
    ({"pdb": {"minAvailable": 2}}, "additional properties 'minAvailable' not allowed"),
    ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    ({"global": {"imageRegistry": "https://registry.example.com"}}, "at '/global/imageRegistry'"),
    ({"securityContext": {"runAsUser": 0}}, "at '/securityContext/runAsUser'"),
    ({"backend": {"runName": "../other"}}, "at '/backend/runName'"),
    ({"backend": {"learners": 1}}, "at '/backend/learners'"),
    ({"learner": {"extraVolumes": [{"emptyDir": {}}]}}, "missing property 'name'"),
]


def _args(bad: dict[str, Any] | tuple[str, ...]) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    return (None, bad) if isinstance(bad, tuple) else (bad, ())


@pytest.mark.parametrize(("bad", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_fail_lint_and_template_with_the_schemas_message(
    bad: dict[str, Any] | tuple[str, ...], message: str
) -> None:
    values, flags = _args(bad)
    rendered = template(values, *flags)
    assert rendered.returncode != 0
    assert "values don't meet the specifications of the schema" in rendered.stderr
    assert message in rendered.stderr
    linted = lint(values, *flags)
    assert linted.returncode != 0
    assert message in linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
        ({"tls": {"enabled": True, "secretName": "s", "mtls": True}}, "tls.mtls needs tls.clientSecretName"),
        ({"tls": {"mtls": True}}, "tls.mtls needs tls.enabled"),
        ({"data": {"mode": "sharedClaim"}}, "data.mode sharedClaim needs data.sharedClaim.claimName"),
        ({"learner": {"graceSeconds": 30}}, "must exceed learner.graceSeconds"),
        (
            {"learner": {"ports": {"grpc": 9091, "metrics": 9091, "health": 9996}}},
            "learner.ports must differ",
        ),
        # A GPU resource under another name than the chart's default resourceName.
        (
            {
                "gpu": {"resourceName": "example.com/accel"},
                "learner": {"resources": {"limits": {"example.com/accel": 1}}},
            },
            "learner.resources.limits holds example.com/accel: GPUs come from gpu.enabled and gpu.count",
        ),
        (
            {"monitoring": {"podMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "1m"}}},
            "monitoring.podMonitor.scrapeTimeout (1m) exceeds its interval (30s)",
        ),
        (
            {
                "monitoring": {
                    "serviceMonitor": {"enabled": True, "interval": "1m", "scrapeTimeout": "1m500ms"}
                }
            },
            "monitoring.serviceMonitor.scrapeTimeout (1m500ms) exceeds its interval (1m)",
        ),
        ({"replicas": 3, "backend": {"learners": 4}}, "backend.learners (4) exceeds replicas (3)"),
    ],
)
def test_values_that_contradict_each_other_stop_the_render(values: dict[str, Any], message: str) -> None:
    """The schema checks one value at a time; the chart's `fail` checks how values relate. (helm lint only
    logs a template's `fail`, so these are checked by template, as install would be.)"""
    done = template(values)
    assert done.returncode != 0
    assert message in done.stderr


def test_default_and_example_values_pass_lint_strict() -> None:
    for path in [None, *EXAMPLES]:
        done = lint(None, *(() if path is None else ("-f", str(path))))
        assert done.returncode == 0, f"{path}: {done.stdout}{done.stderr}"


def _objects(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every object schema in the schema, with its path."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path, node))
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                found += _objects(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                found += _objects(node[key], f"{path}[{key}]")
    return found


def test_schema_closes_every_object_of_the_chart() -> None:
    """additionalProperties is false on every object the chart defines. The open ones are data, not chart
    structure: label-like maps (their values typed), a model's own parameters, and Kubernetes structures
    passed through verbatim (kubernetes-validate checks them once rendered)."""
    passed_through = {".backend.modelParams", ".backend.dataloaderParams", ".global"}
    for path, node in _objects(SCHEMA):
        closed = node.get("additionalProperties") is False
        typed_map = isinstance(node.get("additionalProperties"), dict) and not node.get("properties")
        kubernetes = node.get("description") == "a Kubernetes structure, passed through as it is"
        assert closed or typed_map or kubernetes or path in passed_through, path
    replicas = SCHEMA["properties"]["replicas"]
    assert (replicas["type"], replicas["minimum"]) == ("integer", 1)


def test_every_value_is_documented_in_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = {row.path for row in values_table.rows()}
    for leaf in values_table.leaf_paths(values):
        parts = leaf.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{leaf} has no comment in values.yaml (nor has any key above it)"


def test_every_schema_property_is_a_value_in_values_yaml() -> None:
    """A key the schema allows but values.yaml lacks would be an undocumented knob. Empty defaults
    ({} for affinity, a dataSource) and a selector's matchExpressions stand for Kubernetes structures."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(schema: dict[str, Any], value: dict[str, Any], path: str) -> None:
        for name, child in schema.get("properties", {}).items():
            if name in ("global", "matchExpressions"):
                continue
            assert name in value, f"{path}{name} is in the schema, not in values.yaml"
            if child.get("additionalProperties") is False and value[name]:
                walk(child, value[name], f"{path}{name}.")

    walk(SCHEMA, values, "")


def test_readme_values_table_is_the_one_made_from_values_yaml() -> None:
    readme = (CHART / "README.md").read_text()
    assert values_table.table() in readme, "helm/colearn-fleet/README.md: paste `python helm/values_table.py`"


@pytest.mark.parametrize(
    "values",
    [
        {"learner": {"spreadTopologyKey": "topology.kubernetes.io/zone"}},
        {"learner": {"spreadTopologyKey": "rack"}},
        {"monitoring": {"podMonitor": {"enabled": True, "interval": "1m", "scrapeTimeout": "59s"}}},
        {"monitoring": {"serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "15s"}}},
        {"pdb": {"maxUnavailable": "100%"}},
        {"learner": {"resources": {"limits": {"memory": "2Gi", "ephemeral-storage": "1Gi"}}}},
    ],
)
def test_values_at_the_edge_of_the_rules_still_render(values: dict[str, Any]) -> None:
    """The rules above refuse exactly the contradictions, not their neighbours."""
    done = template(values)
    assert done.returncode == 0, done.stderr
