"""The chart's security: hardened pods, no API token, TLS and token wiring, and the NetworkPolicy."""

from __future__ import annotations

from typing import Any

import pytest
from helm_kit import EXAMPLES, Rendered, example, labels_select, names, render

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
TLS = {"enabled": True, "secretName": "learner-tls"}
MTLS = {**TLS, "mtls": True, "clientSecretName": "backend-tls"}
ALL_ON = {"tls": MTLS, "auth": {"existingSecret": "token"}, "networkPolicy": {"enabled": True}}


def pod_specs(out: Rendered) -> list[dict[str, Any]]:
    return [out.learner_pod["spec"], out.job["spec"]["template"]["spec"]]


@pytest.mark.parametrize("values", [{}, ALL_ON, {"gpu": {"enabled": True}}], ids=["default", "tls", "gpu"])
def test_every_pod_and_container_is_exactly_hardened(values: dict) -> None:
    out = render(values)
    for spec in pod_specs(out):
        assert spec["securityContext"] == POD_SECURITY
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"] == CONTAINER_SECURITY, container["name"]
            # A read-only root needs somewhere to write: /tmp is an emptyDir.
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])


def test_examples_keep_the_hardening() -> None:
    for path in EXAMPLES:
        for spec in pod_specs(render(example(path))):
            assert spec["securityContext"] == POD_SECURITY, path.name
            assert all(c["securityContext"] == CONTAINER_SECURITY for c in spec["containers"]), path.name


def test_pods_run_under_the_charts_service_account_without_its_token() -> None:
    out = render()
    account = out.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for spec in pod_specs(out):
        assert spec["serviceAccountName"] == account["metadata"]["name"]

    existing = render({"serviceAccount": {"create": False, "name": "team-sa"}})
    assert existing.maybe("ServiceAccount") is None
    assert all(spec["serviceAccountName"] == "team-sa" for spec in pod_specs(existing))


# -- TLS and the token: present exactly when asked for ------------------------------------------------


def _volumes(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in spec.get("volumes", [])}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_without_tls_no_secret_is_mounted_and_no_tls_variable_is_set() -> None:
    out = render()
    for spec in pod_specs(out):
        assert not any("secret" in volume for volume in spec["volumes"])
    env = out.learner_env()
    assert not [name for name in env if name.startswith("COLEARN_TLS_")]
    assert "COLEARN_HEALTH_PORT" not in env
    assert not [flag for flag in out.backend_flags() if flag.startswith("tls_")]
    assert "COLEARN_AUTH_TOKEN" not in env and "env" not in out.backend


def test_tls_mounts_the_secret_read_only_and_points_the_learner_at_it() -> None:
    out = render({"tls": TLS})
    volume = _volumes(out.learner_pod["spec"])["tls"]
    assert volume["secret"]["secretName"] == "learner-tls"
    assert volume["secret"]["defaultMode"] == 0o440
    mount = _mounts(out.learner)["tls"]
    assert mount["readOnly"] is True
    env = out.learner_env()
    assert env["COLEARN_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["COLEARN_TLS_KEY"] == f"{mount['mountPath']}/tls.key"
    assert "COLEARN_TLS_CLIENT_CA" not in env  # no mTLS asked for
    # The backend trusts the learners' CA, and gets only that key of their Secret: never their private key.
    flags = out.backend_flags()
    ca = _volumes(out.job["spec"]["template"]["spec"])["tls-ca"]["secret"]
    assert ca["secretName"] == "learner-tls"
    assert ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert flags["tls_ca"] == f"{_mounts(out.backend)['tls-ca']['mountPath']}/ca.crt"
    assert "tls_cert" not in flags and "tls_key" not in flags


def test_mtls_requires_client_certificates_and_gives_the_backend_one() -> None:
    out = render({"tls": {**MTLS, "serverName": "learners.example"}})
    env = out.learner_env()
    assert env["COLEARN_TLS_CLIENT_CA"] == f"{_mounts(out.learner)['tls']['mountPath']}/ca.crt"
    client = _volumes(out.job["spec"]["template"]["spec"])["tls-client"]["secret"]
    assert client["secretName"] == "backend-tls"
    path = _mounts(out.backend)["tls-client"]["mountPath"]
    assert _mounts(out.backend)["tls-client"]["readOnly"] is True
    flags = out.backend_flags()
    assert (flags["tls_cert"], flags["tls_key"]) == (f"{path}/tls.crt", f"{path}/tls.key")
    assert flags["tls_server_name"] == "learners.example"


def test_the_token_comes_from_the_secret_never_from_a_value_or_a_flag() -> None:
    out = render({"auth": {"existingSecret": "fleet-token", "secretKey": "bearer"}})
    reference = {"secretKeyRef": {"name": "fleet-token", "key": "bearer"}}
    assert out.learner_env()["COLEARN_AUTH_TOKEN"] == reference
    (backend_env,) = out.backend["env"]
    assert backend_env == {"name": "COLEARN_AUTH_TOKEN", "valueFrom": reference}
    assert "auth_token" not in out.backend_flags()  # a command line is visible to anyone listing processes


# -- NetworkPolicy --------------------------------------------------------------------------------------


def test_network_policy_is_opt_in() -> None:
    assert render().maybe("NetworkPolicy") is None


def test_network_policy_admits_only_the_backend_to_grpc_and_prometheus_to_metrics() -> None:
    out = render({"networkPolicy": {"enabled": True}})
    policy = out.one("NetworkPolicy")["spec"]
    learner_labels = out.learner_pod["metadata"]["labels"]
    backend_labels = out.job["spec"]["template"]["metadata"]["labels"]
    # It applies to the learners, and to nothing else of the release.
    assert labels_select(policy["podSelector"]["matchLabels"], learner_labels)
    assert not labels_select(policy["podSelector"]["matchLabels"], backend_labels)
    assert policy["policyTypes"] == ["Ingress"]
    grpc_rule, metrics_rule = policy["ingress"]
    (backend_peer,) = grpc_rule["from"]
    assert list(backend_peer) == ["podSelector"]  # same namespace only
    assert labels_select(backend_peer["podSelector"]["matchLabels"], backend_labels)
    assert not labels_select(backend_peer["podSelector"]["matchLabels"], learner_labels)
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    (prometheus_peer,) = metrics_rule["from"]
    assert prometheus_peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert prometheus_peer["namespaceSelector"] == {}
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    # The named ports are the learner container's own.
    assert {"grpc", "metrics"} <= set(names(out.learner["ports"]))


def test_network_policy_takes_the_prometheus_selectors_and_extra_rules() -> None:
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    # Helm merges a map with its default: null removes the default's label (values.yaml says so).
    pods = {"matchLabels": {"app.kubernetes.io/name": None, "app": "prometheus-server"}}
    extra = [{"from": [{"podSelector": {"matchLabels": {"role": "operator"}}}], "ports": [{"port": 9995}]}]
    policy = render(
        {
            "networkPolicy": {
                "enabled": True,
                "prometheus": {"namespaceSelector": {"matchLabels": monitoring}, "podSelector": pods},
                "extraIngress": extra,
            }
        }
    ).one("NetworkPolicy")["spec"]
    (peer,) = policy["ingress"][1]["from"]
    assert peer == {
        "namespaceSelector": {"matchLabels": monitoring},
        "podSelector": {"matchLabels": {"app": "prometheus-server"}},
    }
    assert policy["ingress"][2:] == extra
