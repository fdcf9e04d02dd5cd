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


IDENTITY = ("runAsUser", "runAsGroup", "fsGroup")


def pod_specs(out: Rendered) -> list[dict[str, Any]]:
    """Every pod the chart makes: learners, the experiment Job and `helm test`'s pod."""
    test_pod = out.one("Pod")
    return [out.learner_pod["spec"], out.job["spec"]["template"]["spec"], test_pod["spec"]]


def without_identity(context: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in context.items() if k not in IDENTITY}


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
    """The chart's own containers keep it in every example (a user's sidecars bring their own)."""
    for path in EXAMPLES:
        values = example(path)
        platform_identity = "securityContext" in values  # values-openshift.yaml leaves it to the platform
        for spec in pod_specs(render(values)):
            pod = without_identity(POD_SECURITY) if platform_identity else POD_SECURITY
            container = without_identity(CONTAINER_SECURITY) if platform_identity else CONTAINER_SECURITY
            assert spec["securityContext"] == pod, path.name
            ours = [c for c in spec["containers"] if c["name"] in ("learner", "backend", "health")]
            assert len(ours) == 1 and ours[0]["securityContext"] == container, path.name


def test_openshift_leaves_user_and_groups_to_the_platform_and_keeps_the_rest() -> None:
    """OpenShift's restricted SCC refuses a fixed uid: null leaves each of them out, nothing else."""
    out = render({"securityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}})
    for spec in pod_specs(out):
        assert spec["securityContext"] == without_identity(POD_SECURITY)
        for container in spec["containers"]:
            assert container["securityContext"] == without_identity(CONTAINER_SECURITY)
    only_user = render({"securityContext": {"runAsUser": None}}).learner_pod["spec"]["securityContext"]
    assert "runAsUser" not in only_user and only_user["fsGroup"] == 10001


def test_extension_points_reach_the_learner_pod() -> None:
    volume = {"name": "scratch", "emptyDir": {}}
    mount = {"name": "scratch", "mountPath": "/scratch"}
    init = {"name": "init", "image": "busybox", "command": ["true"]}
    sidecar = {"name": "side", "image": "busybox"}
    env_from = [{"secretRef": {"name": "env"}}]
    out = render(
        {
            "learner": {
                "extraVolumes": [volume],
                "extraVolumeMounts": [mount],
                "initContainers": [init],
                "sidecars": [sidecar],
                "extraEnvFrom": env_from,
                "shm": {"enabled": True, "sizeLimit": "2Gi"},
            }
        }
    )
    spec = out.learner_pod["spec"]
    assert volume in spec["volumes"] and mount in out.learner["volumeMounts"]
    assert spec["initContainers"] == [init]
    assert [c["name"] for c in spec["containers"]] == ["learner", "side"]
    assert out.learner["envFrom"] == env_from
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in out.learner["volumeMounts"]
    plain = render()
    assert "initContainers" not in plain.learner_pod["spec"] and "envFrom" not in plain.learner
    assert all(v["name"] != "shm" for v in plain.learner_pod["spec"]["volumes"])


def test_images_take_a_registry_and_a_digest() -> None:
    digest = "sha256:" + "ab" * 32
    out = render(
        {
            "global": {"imageRegistry": "mirror.example.com:5000/ml/"},
            "image": {"digest": digest},
            "backend": {"image": {"tag": "1.2"}},
        }
    )
    assert out.learner["image"] == f"mirror.example.com:5000/ml/colearn-learner:0.1.0@{digest}"
    assert out.backend["image"] == "mirror.example.com:5000/ml/colearn-backend:1.2"
    assert out.one("Pod")["spec"]["containers"][0]["image"] == out.backend["image"]


def test_pods_run_under_the_charts_service_account_without_its_token() -> None:
    out = render()
    account = out.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    learners_and_job = pod_specs(out)[:2]
    for spec in learners_and_job:
        assert spec["serviceAccountName"] == account["metadata"]["name"]
    # `helm test`'s bare Pod uses the namespace's default account, which always exists: a server-side dry
    # run of `helm template` (where the chart's account is not created) would refuse it otherwise.
    test_pod = out.one("Pod")["spec"]
    assert "serviceAccountName" not in test_pod and test_pod["automountServiceAccountToken"] is False

    existing = render({"serviceAccount": {"create": False, "name": "team-sa"}})
    assert existing.maybe("ServiceAccount") is None
    assert all(spec["serviceAccountName"] == "team-sa" for spec in pod_specs(existing)[:2])


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


def _policies(out: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    learner, backend = out.all("NetworkPolicy")
    assert learner["metadata"]["name"].endswith("-learner") and backend["metadata"]["name"].endswith(
        "-backend"
    )
    return learner["spec"], backend["spec"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector with matchLabels and `In` matchExpressions, as the API server reads it."""
    if not labels_select(selector.get("matchLabels", {}), labels):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def test_network_policy_admits_only_the_backend_to_grpc_and_prometheus_to_metrics() -> None:
    out = render({"networkPolicy": {"enabled": True}})
    policy, backend_policy = _policies(out)
    learner_labels = out.learner_pod["metadata"]["labels"]
    backend_labels = out.job["spec"]["template"]["metadata"]["labels"]
    test_labels = out.one("Pod")["metadata"]["labels"]
    # It applies to the learners, and to nothing else of the release.
    assert _selects(policy["podSelector"], learner_labels)
    assert not _selects(policy["podSelector"], backend_labels)
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    grpc_rule, metrics_rule = policy["ingress"]
    (client_peer,) = grpc_rule["from"]
    assert list(client_peer) == ["podSelector"]  # same namespace only
    assert _selects(client_peer["podSelector"], backend_labels)
    assert _selects(client_peer["podSelector"], test_labels)  # `helm test`
    assert not _selects(client_peer["podSelector"], learner_labels)
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    (prometheus_peer,) = metrics_rule["from"]
    assert prometheus_peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    # Prometheus' own namespace, not every namespace.
    assert prometheus_peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    # The named ports are the learner container's own.
    assert {"grpc", "metrics"} <= set(names(out.learner["ports"]))
    # The backend's and the test pod's policy: only Prometheus reaches the backend's metrics.
    assert _selects(backend_policy["podSelector"], backend_labels)
    assert _selects(backend_policy["podSelector"], test_labels)
    assert not _selects(backend_policy["podSelector"], learner_labels)
    (backend_metrics,) = backend_policy["ingress"]
    assert backend_metrics["ports"] == [{"port": 9092, "protocol": "TCP"}]


def test_egress_is_denied_but_dns_and_the_fleets_own_traffic() -> None:
    out = render({"networkPolicy": {"enabled": True}})
    policy, backend_policy = _policies(out)
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    # Learners answer calls and make none: DNS only.
    (dns,) = policy["egress"]
    assert dns["ports"] == dns_ports
    (peer,) = dns["to"]
    assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    # The backend: the learners' gRPC port, and DNS.
    to_learners, backend_dns = backend_policy["egress"]
    assert backend_policy["policyTypes"] == ["Ingress", "Egress"]
    (learners,) = to_learners["to"]
    assert _selects(learners["podSelector"], out.learner_pod["metadata"]["labels"])
    assert to_learners["ports"] == [{"port": 9995, "protocol": "TCP"}]
    assert backend_dns == dns
    # Allowed destinations, for both.
    extra = [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]
    out = render({"networkPolicy": {"enabled": True, "egress": {"extraEgress": extra}}})
    policy, backend_policy = _policies(out)
    assert policy["egress"][1:] == extra and backend_policy["egress"][2:] == extra
    # Egress left open when asked.
    policy, backend_policy = _policies(
        render({"networkPolicy": {"enabled": True, "egress": {"enabled": False}}})
    )
    assert policy["policyTypes"] == ["Ingress"] and "egress" not in policy
    assert backend_policy["policyTypes"] == ["Ingress"]


def test_network_policy_takes_the_prometheus_selectors_and_extra_rules() -> None:
    # Helm merges a map with its default: null removes the default's label (values.yaml says so).
    pods = {"matchLabels": {"app.kubernetes.io/name": None, "app": "prometheus-server"}}
    namespaces = {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
    extra = [{"from": [{"podSelector": {"matchLabels": {"role": "operator"}}}], "ports": [{"port": 9995}]}]
    policy, _ = _policies(
        render(
            {
                "networkPolicy": {
                    "enabled": True,
                    "prometheus": {"namespaceSelector": namespaces, "podSelector": pods},
                    "extraIngress": extra,
                }
            }
        )
    )
    (peer,) = policy["ingress"][1]["from"]
    assert peer == {
        "namespaceSelector": namespaces,
        "podSelector": {"matchLabels": {"app": "prometheus-server"}},
    }
    assert policy["ingress"][2:] == extra
