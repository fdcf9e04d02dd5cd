"""Branches of the templates that neither the defaults nor the examples reach, validated like them:
against Kubernetes 1.30 and 1.37 API schemas, strictly (helm/validate_chart.py covers the examples)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from helm_kit import CRD_API_GROUP, KUBE_VERSIONS, render

VARIANTS: dict[str, dict[str, Any]] = {
    "tls-without-mtls-and-every-knob": {
        "replicas": 2,
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"create": False, "name": "team"},
        "tls": {"enabled": True, "secretName": "learner-tls", "serverName": "learners.internal"},
        "checkpoints": {"enabled": False},
        "data": {"mode": "perPodClaim", "readOnly": False, "perPodClaim": {"storageClassName": "-"}},
        "learner": {
            "spread": "none",
            "priorityClassName": "batch-high",
            "podLabels": {"team": "ml"},
            "extraEnv": [
                {"name": "OMP_NUM_THREADS", "value": "4"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "z", "operator": "In", "values": ["a"]}]}
                        ]
                    }
                }
            },
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
        },
        "pdb": {"maxUnavailable": "25%", "unhealthyPodEvictionPolicy": "IfHealthyBudget"},
        "backend": {
            "ttlSecondsAfterFinished": 600,
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "batch", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
            "podAnnotations": {"note": "x"},
            "results": {"persistence": {"enabled": False}},
            "runName": "exp-2",
            "learners": 2,
        },
        "monitoring": {
            "serviceMonitor": {"enabled": True, "scrapeTimeout": "10s"},
            "prometheusRule": {"enabled": True},
        },
        "networkPolicy": {
            "enabled": True,
            "extraIngress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": "grpc"}]}],
        },
    },
    "gpu-shared-claim-hard-spread": {
        "gpu": {"enabled": True, "count": 8, "runtimeClassName": "nvidia", "tolerations": []},
        "data": {
            "mode": "sharedClaim",
            "sharedClaim": {"claimName": "datasets", "subPathExpr": "$(POD_NAME)"},
        },
        "learner": {"spread": "hard", "tolerations": [{"key": "spot", "operator": "Exists"}]},
        "auth": {"existingSecret": "token"},
    },
    "platform-extension-points": {
        "global": {"imageRegistry": "registry.example.com:5000/mirror"},
        "image": {"digest": "sha256:" + "a" * 64},
        "securityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
        "gpu": {"enabled": True, "resources": {"requests": {"memory": "8Gi"}}},
        "learner": {
            "schedulerName": "volcano",
            "shm": {"enabled": True, "sizeLimit": "256Mi"},
            "extraEnvFrom": [
                {"secretRef": {"name": "env"}},
                {"configMapRef": {"name": "cm"}, "prefix": "X_"},
            ],
            "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
            "sidecars": [{"name": "side", "image": "busybox", "command": ["sleep", "1"]}],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 2,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ],
        },
        "backend": {
            "results": {"existingClaim": "results"},
            "schedulerName": "volcano",
            "priorityClassName": "batch",
            "affinity": {"podAffinity": {}},
            "podLabels": {"queue": "a"},
            "extraEnv": [{"name": "A", "value": "1"}],
            "extraEnvFrom": [{"secretRef": {"name": "env"}}],
            "extraVolumes": [{"name": "cfg", "configMap": {"name": "cfg"}}],
            "extraVolumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
        },
        "networkPolicy": {
            "enabled": True,
            "egress": {
                "extraEgress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]
            },
        },
        "tests": {"timeoutSeconds": 3},
    },
    "learners-only": {
        "backend": {"enabled": False},
        "pdb": {"enabled": False},
        "tests": {"enabled": False},
        "networkPolicy": {"enabled": True, "egress": {"enabled": False}},
        "monitoring": {"grafanaDashboard": {"enabled": False}, "scrapeAnnotations": False},
    },
}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_renders_objects_valid_for_kubernetes(name: str, kube_version: str) -> None:
    out = render(VARIANTS[name], "--kube-version", kube_version)
    assert out.statefulset  # every variant runs learners
    for doc in out.docs:
        if doc["apiVersion"].startswith(CRD_API_GROUP):
            continue  # tests/helm/test_helm_monitoring.py checks these
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:  # a core kind must have a schema
            pytest.fail(exc.message)


def test_strict_validation_catches_an_unknown_field() -> None:
    """The check above can fail: strict mode rejects a field the API does not have."""
    sts = render().statefulset
    broken = {**sts, "spec": {**sts["spec"], "podManagmentPolicy": "Parallel"}}
    with pytest.raises(kubernetes_validate.ValidationError, match="podManagmentPolicy"):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)
