"""JSON schemas for the Prometheus Operator kinds the chart renders, which kubernetes-validate cannot check.

kubernetes-validate holds only Kubernetes' own API schemas: for a PodMonitor it prints a warning and
passes. These schemas close that gap structurally: they list the fields of the monitoring.coreos.com/v1
API (prometheus-operator's pkg/apis/monitoring/v1: PodMonitorSpec, PodMetricsEndpoint, ServiceMonitorSpec,
Endpoint, RelabelConfig, PrometheusRuleSpec, RuleGroup, Rule) with additionalProperties false, so that a
misspelt or misplaced field fails as ``kubernetes-validate --strict`` would fail it on a core kind. Nested
structures the chart never renders (TLS, auth) are accepted as objects.
"""

from __future__ import annotations

from typing import Any

# The operator's Duration type: 30s, 1m30s, 0.
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECT = {"type": "object"}
LABEL_NAME = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
    }


METADATA = closed(
    {
        "name": {
            "type": "string",
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        },
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    ("name",),
)
LABEL_SELECTOR = closed(
    {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": closed(
                {"key": {"type": "string"}, "operator": {"type": "string"}, "values": {"type": "array"}},
                ("key", "operator"),
            ),
        },
    }
)
NAMESPACE_SELECTOR = closed(
    {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}
)
RELABEL_ACTIONS = [
    "replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase",
    "keepequal", "dropequal",
]  # fmt: skip
RELABEL_CONFIG = closed(
    {
        "sourceLabels": {"type": "array", "items": LABEL_NAME},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
        "action": {"enum": RELABEL_ACTIONS + [a.capitalize() for a in RELABEL_ACTIONS]},
    }
)
RELABELINGS = {"type": "array", "items": RELABEL_CONFIG}
# Fields a PodMetricsEndpoint and a ServiceMonitor Endpoint share.
_SCRAPE_ENDPOINT = {
    "port": {"type": "string"},
    "targetPort": {"type": ["string", "integer"]},
    "path": {"type": "string"},
    "scheme": {"enum": ["http", "https"]},
    "params": {"type": "object"},
    "interval": DURATION,
    "scrapeTimeout": DURATION,
    "tlsConfig": ANY_OBJECT,
    "bearerTokenSecret": ANY_OBJECT,
    "honorLabels": {"type": "boolean"},
    "honorTimestamps": {"type": "boolean"},
    "trackTimestampsStaleness": {"type": "boolean"},
    "basicAuth": ANY_OBJECT,
    "oauth2": ANY_OBJECT,
    "authorization": ANY_OBJECT,
    "metricRelabelings": RELABELINGS,
    "relabelings": RELABELINGS,
    "proxyUrl": {"type": "string"},
    "followRedirects": {"type": "boolean"},
    "enableHttp2": {"type": "boolean"},
    "filterRunning": {"type": "boolean"},
}
_LIMIT_FIELDS = ("sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit")
_LIMITS = {name: {"type": "integer", "minimum": 0} for name in (*_LIMIT_FIELDS, "keepDroppedTargets")}
_MONITOR_COMMON = {
    "jobLabel": {"type": "string"},
    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
    "selector": LABEL_SELECTOR,
    "namespaceSelector": NAMESPACE_SELECTOR,
    "scrapeProtocols": {"type": "array", "items": {"type": "string"}},
    "attachMetadata": ANY_OBJECT,
    "scrapeClass": {"type": "string", "minLength": 1},
    **_LIMITS,
}


def _kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return closed(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


POD_MONITOR = _kind(
    "PodMonitor",
    closed(
        {**_MONITOR_COMMON, "podMetricsEndpoints": {"type": "array", "items": closed(_SCRAPE_ENDPOINT)}},
        ("selector",),
    ),
)
SERVICE_MONITOR = _kind(
    "ServiceMonitor",
    closed(
        {
            **_MONITOR_COMMON,
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "endpoints": {
                "type": "array",
                "items": closed({**_SCRAPE_ENDPOINT, "bearerTokenFile": {"type": "string"}}),
            },
        },
        ("selector", "endpoints"),
    ),
)
RULE = {
    **closed(
        {
            "record": LABEL_NAME | {"pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
            "alert": {"type": "string", "minLength": 1},
            "expr": {"type": ["string", "integer"]},
            "for": DURATION,
            "keep_firing_for": DURATION,
            "labels": STRING_MAP,
            "annotations": STRING_MAP,
        },
        ("expr",),
    ),
    # A rule records or alerts, never both.
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
}
PROMETHEUS_RULE = _kind(
    "PrometheusRule",
    closed(
        {
            "groups": {
                "type": "array",
                "items": closed(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "query_offset": DURATION,
                        "limit": {"type": "integer"},
                        "partial_response_strategy": {"type": "string"},
                        "labels": STRING_MAP,
                        "rules": {"type": "array", "items": RULE},
                    },
                    ("name",),
                ),
            }
        }
    ),
)
SCHEMAS = {"PodMonitor": POD_MONITOR, "ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
