"""A real Kubernetes control plane for the chart's operator tests, and the helpers they share.

tests/k8s installs helm/colearn-fleet on a real kube-apiserver (1.36) with etcd, the controller-manager, the
scheduler and fake nodes (the kit in ../shared/k8s: see its README). ``make test-k8s`` runs it; the default
``pytest`` run ignores this folder (pyproject addopts). Which cluster (conftest.py, ``cluster`` fixture):

1. ``$KUBECONFIG`` is set and ``kubectl version`` reaches its server: that cluster, left running.
2. Else the kit (``$COLEARN_K8S_KIT``, or ``<repo>/../shared/k8s``): a private cluster in ``.k8s/state`` on
   ports of its own (so it never meets a developer's cluster), stopped again at the end of the session.
3. Else every test is skipped, with one line that says how to run them.

No container runs there: a pod bound to a node goes Running and Ready at once, the backend Job's pod
Succeeds once its learners run. Each test gets a fresh namespace, plain or Pod Security ``restricted``.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "colearn-fleet"
HELM = REPO_ROOT / "tools" / "helm"
EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))
RELEASE = "fleet"  # the examples' Secret and claim names (fleet-learner-tls, fleet-data) assume it

# The private cluster: its own state folder and ports, so that it never collides with a developer's.
STATE = REPO_ROOT / ".k8s" / "state"
PRIVATE_ENV = {
    "K8S_STATE": str(STATE),
    "K8S_API_PORT": "26443",
    "K8S_ETCD_PORT": "33790",
    "K8S_ETCD_PEER_PORT": "33800",
}
NO_CLUSTER = (
    "no Kubernetes cluster: set KUBECONFIG (kubectl on PATH), "
    "or put the control-plane kit at ../shared/k8s (COLEARN_K8S_KIT)"
)
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}
# The provider examples select node labels (GKE's accelerator, an EKS instance type, AKS's pool label) that
# no node of this cluster has: their learners belong nowhere here, so they must stay Pending, Unschedulable.
UNSCHEDULABLE_HERE = {"values-gpu-gke.yaml", "values-gpu-eks.yaml", "values-gpu-aks.yaml"}
MONITORING_CRDS = (
    "podmonitors.monitoring.coreos.com",
    "servicemonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
)
FAKE_PROVISIONER = "fake.local/hostpath"
LEARNERS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=learner"
BACKEND = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=backend"

T = TypeVar("T")
Obj = dict[str, Any]


# -- finding or starting a cluster ------------------------------------------------------------------------


def kit_dir() -> Path | None:
    """The control-plane kit (a folder with start.sh), from $COLEARN_K8S_KIT or next to the checkout."""
    configured = os.environ.get("COLEARN_K8S_KIT")
    folder = Path(configured) if configured else REPO_ROOT.parent / "shared" / "k8s"
    return folder.resolve() if (folder / "start.sh").is_file() else None


def _quiet_env(base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env["NO_PROXY"] = ",".join(x for x in ("127.0.0.1,localhost", env.get("NO_PROXY")) if x)
    env["no_proxy"] = env["NO_PROXY"]
    return env


def reaches_server(env: dict[str, str]) -> bool:
    try:
        done = subprocess.run(
            ["kubectl", "version", "--request-timeout=5s", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and '"serverVersion"' in done.stdout


@dataclass(frozen=True)
class Found:
    """Which cluster the session will use (found without starting anything)."""

    kubeconfig: str | None  # a reachable $KUBECONFIG
    kit: Path | None  # the kit: starts the private cluster when kubeconfig is None

    @property
    def usable(self) -> bool:
        return self.kubeconfig is not None or self.kit is not None

    def describe(self) -> str:
        if self.kubeconfig:
            return f"k8s: the cluster of KUBECONFIG={self.kubeconfig} (left running)"
        if self.kit:
            unreachable = os.environ.get("KUBECONFIG")
            why = f" (KUBECONFIG={unreachable} does not answer)" if unreachable else ""
            return (
                f"k8s: a private cluster from {self.kit}, state {STATE}, "
                f"API 127.0.0.1:{PRIVATE_ENV['K8S_API_PORT']}, stopped at the end{why}"
            )
        return f"k8s: {NO_CLUSTER}"


@functools.cache
def find_cluster() -> Found:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig and reaches_server(_quiet_env(dict(os.environ))):
        return Found(kubeconfig, kit_dir())
    return Found(None, kit_dir())


class Cluster:
    """kubectl and helm against one cluster: every call has a timeout and this cluster's environment."""

    def __init__(self, env: dict[str, str], kit: Path | None, private: bool) -> None:
        self.env = _quiet_env(env)
        self.kit = kit
        self.private = private

    def run(
        self, *cmd: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                list(cmd), env=self.env, input=input, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"`{shlex.join(cmd)}` did not return in {timeout:.0f}s", pytrace=False)
            raise AssertionError from e  # unreachable: pytest.fail raises

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", "--request-timeout=30s", *args, input=input, timeout=timeout)

    def helm(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        require_helm()
        return self.run(str(HELM), *args, timeout=timeout)

    def ok(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        """kubectl ARGS, which must succeed: its stdout."""
        done = self.kubectl(*args, input=input, timeout=timeout)
        assert done.returncode == 0, f"kubectl {shlex.join(args)} failed ({done.returncode}):\n{done.stderr}"
        return done.stdout

    def get(self, *args: str) -> Obj:
        """``kubectl get ARGS -o json``, parsed (a List for a kind, the object for kind/name)."""
        return json.loads(self.ok("get", *args, "-o", "json"))

    def items(self, resource: str, ns: str, selector: str | None = None) -> list[Obj]:
        args = [resource, "-n", ns] + (["-l", selector] if selector else [])
        return list(self.get(*args)["items"])

    def maybe(self, resource: str, name: str, ns: str | None = None) -> Obj | None:
        """The object, or None where the server has none of that name."""
        args = ["get", resource, name, "-o", "json", "--ignore-not-found"] + (["-n", ns] if ns else [])
        out = self.ok(*args)
        return json.loads(out) if out.strip() else None


def require_helm() -> None:
    if not HELM.is_file():
        pytest.fail(f"no helm at {HELM}: run python helm/fetch_helm.py (`make test-k8s` does)", pytrace=False)


def _kit_script(kit: Path, script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **PRIVATE_ENV}
    env.pop("KUBECONFIG", None)
    return subprocess.run(
        ["bash", str(kit / script), *args],
        env=_quiet_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def start_private(kit: Path) -> Cluster:
    """Starts (or finds running) the private cluster: start.sh prints ``export KUBECONFIG=... PATH=...``."""
    STATE.mkdir(parents=True, exist_ok=True)
    done = _kit_script(kit, "start.sh", timeout=240)
    if done.returncode != 0 and "partly running" in done.stderr:  # a session that died half-way before
        stop_private(kit)
        done = _kit_script(kit, "start.sh", timeout=240)
    if done.returncode != 0:
        pytest.fail(f"{kit}/start.sh failed: {_last_line(done.stderr)}", pytrace=False)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    exports = [line for line in done.stdout.splitlines() if line.startswith("export ")]
    assert len(exports) == 1, f"start.sh printed no single export line on stdout: {done.stdout!r}"
    for word in shlex.split(exports[0])[1:]:
        name, _, value = word.partition("=")
        assert name in ("KUBECONFIG", "PATH"), f"start.sh exports {name}"
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    return Cluster(env, kit, private=True)


def stop_private(kit: Path, wipe: bool = False) -> str:
    """stop.sh with the same settings: it stops exactly the processes start.sh recorded in .k8s/state."""
    done = _kit_script(kit, "stop.sh", *(["--wipe"] if wipe else []), timeout=120)
    return done.stderr


def connect(found: Found) -> Cluster:
    if found.kubeconfig:
        return Cluster(dict(os.environ), found.kit, private=False)
    assert found.kit is not None, NO_CLUSTER
    return start_private(found.kit)


# -- waiting ----------------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60, interval: float = 0.5) -> T:
    """Polls ``probe`` until it returns something truthy (and returns that), or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}", pytrace=False)
        time.sleep(interval)


def settle(
    probe: Callable[[], T], accept: Callable[[T], bool], timeout: float = 60, interval: float = 0.5
) -> T:
    """Polls ``probe`` until ``accept`` takes its value, or ``timeout``: the last value, for an assertion."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not accept(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = probe()
    return value


# -- namespaces -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    name: str
    restricted: bool

    def __str__(self) -> str:
        return self.name


def create_namespace(cluster: Cluster, name: str, restricted: bool) -> Namespace:
    """Labelled colearn.io/test=k8s: ``kubectl delete namespace -l colearn.io/test=k8s`` clears them all."""
    labels = {"colearn.io/test": "k8s", **(RESTRICTED if restricted else {})}
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    cluster.ok("create", "-f", "-", input=json.dumps(manifest))
    return Namespace(name, restricted)


def delete_namespace(cluster: Cluster, ns: str) -> None:
    """Deletes the namespace without waiting for it to go.

    Its Jobs go first, so that their pods are orphans whose tracking finalizer the Job controller drops at
    once (the fake kubelet never reports a deleted pod's terminal phase).
    """
    cluster.kubectl("delete", "jobs", "--all", "-n", ns, "--wait=false")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


# -- prerequisites the examples name ----------------------------------------------------------------------


@functools.cache
def _chart_defaults() -> Obj:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def values_of(path: Path | None) -> Obj:
    return dict(yaml.safe_load(path.read_text()) or {}) if path else {}


def setting(values: Obj, dotted: str) -> Any:
    """A value as the chart sees it: the values file's, else the chart default."""
    for source in (values, _chart_defaults()):
        node: Any = source
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return node
    return None


def needs_monitoring_crds(values: Obj) -> bool:
    return any(
        setting(values, f"monitoring.{kind}.enabled")
        for kind in ("podMonitor", "serviceMonitor", "prometheusRule")
    )


def ensure_monitoring_crds(cluster: Cluster) -> None:
    """The prometheus-operator CRDs, from the kit's crds/ (cluster-scoped: applied once, server-side)."""
    present = cluster.kubectl("get", "crd", *MONITORING_CRDS, "-o", "name")
    if present.returncode == 0 and len(present.stdout.split()) == len(MONITORING_CRDS):
        return
    if cluster.kit is None:
        pytest.skip("needs the prometheus-operator CRDs, and no kit (COLEARN_K8S_KIT) to apply them from")
    cluster.ok("apply", "--server-side", "-f", str(cluster.kit / "crds"))
    for crd in MONITORING_CRDS:
        cluster.ok("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")


def _apply(cluster: Cluster, ns: str, obj: Obj) -> None:
    cluster.ok("apply", "-n", ns, "-f", "-", input=json.dumps(obj))


def ensure_storage_class(cluster: Cluster, name: str) -> None:
    """A StorageClass the fake kubelet provisions for (cluster-scoped: made once, AlreadyExists is fine)."""
    if not name or cluster.maybe("storageclass", name):
        return
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": FAKE_PROVISIONER,
        "volumeBindingMode": "Immediate",
        "reclaimPolicy": "Delete",
    }
    done = cluster.kubectl("create", "-f", "-", input=json.dumps(sc))
    assert done.returncode == 0 or "AlreadyExists" in done.stderr, done.stderr


def _dummy_secret(name: str, keys: Iterable[str]) -> Obj:
    data = {key: "ZHVtbXk=" for key in keys}  # "dummy": nothing reads them, the pods only need them there
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": data}


def prepare(cluster: Cluster, ns: str, values: Obj) -> None:
    """What the values expect to find in the cluster, created before the install (pods wait for them)."""
    if needs_monitoring_crds(values):
        ensure_monitoring_crds(cluster)
    for key in (
        "data.perPodClaim.storageClassName",
        "checkpoints.storageClassName",
        "backend.results.persistence.storageClassName",
    ):
        ensure_storage_class(cluster, setting(values, key) or "")
    secrets: list[tuple[str, tuple[str, ...]]] = []
    if setting(values, "tls.enabled"):
        secrets.append((setting(values, "tls.secretName"), ("tls.crt", "tls.key", "ca.crt")))
        if setting(values, "tls.mtls") and setting(values, "tls.clientSecretName"):
            secrets.append((setting(values, "tls.clientSecretName"), ("tls.crt", "tls.key")))
    if setting(values, "auth.existingSecret"):
        secrets.append((setting(values, "auth.existingSecret"), (setting(values, "auth.secretKey"),)))
    for name, keys in secrets:
        _apply(cluster, ns, _dummy_secret(name, keys))
    if setting(values, "data.mode") == "sharedClaim":
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": setting(values, "data.sharedClaim.claimName")},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        _apply(cluster, ns, claim)


# -- the release ------------------------------------------------------------------------------------------


def values_args(values_file: Path | None) -> list[str]:
    return ["-f", str(values_file)] if values_file else []


def render(cluster: Cluster, ns: str, values_file: Path | None, *extra: str) -> tuple[str, list[Obj]]:
    """``helm template fleet CHART -f VALUES --namespace NS``: the manifest and its objects."""
    done = cluster.helm("template", RELEASE, str(CHART), "--namespace", ns, *values_args(values_file), *extra)
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return done.stdout, [d for d in yaml.safe_load_all(done.stdout) if d]


def is_hook(obj: Obj) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def ref(obj: Obj) -> str:
    """kind.version.group/name, as kubectl get takes it."""
    group, _, version = obj["apiVersion"].rpartition("/")
    resource = f"{obj['kind'].lower()}.{version}.{group}" if group else obj["kind"].lower()
    return f"{resource}/{obj['metadata']['name']}"


def key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def install(
    cluster: Cluster, ns: str, values_file: Path | None, *extra: str, wait: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    args = ["install", RELEASE, str(CHART), "-n", ns, *values_args(values_file), *extra]
    if wait:
        args += ["--wait", "--timeout", "120s"]
    done = cluster.helm(*args, timeout=timeout)
    assert done.returncode == 0, f"helm {shlex.join(args)} failed:\n{done.stderr}"
    return done


def upgrade(cluster: Cluster, ns: str, *sets: str) -> None:
    args = ["upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values", "--wait", "--timeout", "120s"]
    for s in sets:
        args += ["--set", s]
    done = cluster.helm(*args, timeout=180)
    assert done.returncode == 0, f"helm {shlex.join(args)} failed:\n{done.stderr}"


def learner_pods(cluster: Cluster, ns: str) -> list[Obj]:
    pods = cluster.items("pods", ns, LEARNERS)
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def backend_job(cluster: Cluster, ns: str) -> Obj:
    jobs = cluster.items("jobs", ns, BACKEND)
    assert len(jobs) == 1, f"{len(jobs)} backend Jobs: {[j['metadata']['name'] for j in jobs]}"
    return jobs[0]


def job_pods(cluster: Cluster, ns: str, job: Obj) -> list[Obj]:
    selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
    return cluster.items("pods", ns, selector)


def running_ready(pod: Obj) -> bool:
    status = pod.get("status", {})
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    return status.get("phase") == "Running" and ready and not pod["metadata"].get("deletionTimestamp")


def condition(obj: Obj, kind: str) -> Obj | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def backend_args(job_or_pod: Obj) -> list[str]:
    spec = job_or_pod["spec"]
    pod_spec = spec["template"]["spec"] if "template" in spec else spec
    (container,) = [c for c in pod_spec["containers"] if c["name"] == "backend"]
    return list(container["args"])


def learner_addresses(args: list[str]) -> list[str]:
    (flag,) = [a for a in args if a.startswith("--learners=")]
    return flag.removeprefix("--learners=").split(",")


def job_complete(cluster: Cluster, ns: str) -> bool:
    complete = condition(backend_job(cluster, ns), "Complete")
    return bool(complete and complete["status"] == "True")


def statefulset_ready(cluster: Cluster, ns: str, replicas: int) -> list[Obj] | None:
    """The learner pods once the StatefulSet has ``replicas`` of them, all current and ready."""
    sts = cluster.get("statefulset", f"{RELEASE}-learner", "-n", ns)
    status = sts["status"]
    if sts["spec"]["replicas"] != replicas or status.get("readyReplicas") != replicas:
        return None
    if status.get("currentRevision") != status.get("updateRevision"):
        return None
    pods = learner_pods(cluster, ns)
    if len(pods) != replicas or not all(running_ready(p) for p in pods):
        return None
    return pods


def evict(cluster: Cluster, ns: str, pod: str) -> subprocess.CompletedProcess[str]:
    """The Eviction API, as ``kubectl drain`` calls it for each pod: it honours the PodDisruptionBudgets."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": ns}}
    path = f"/api/v1/namespaces/{ns}/pods/{pod}/eviction"
    return cluster.kubectl("create", "--raw", path, "-f", "-", input=json.dumps(body))


def uninstall(cluster: Cluster, ns: str) -> None:
    done = cluster.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "60s", timeout=120)
    assert done.returncode == 0, f"helm uninstall failed:\n{done.stderr}"


def pods_of_release(cluster: Cluster, ns: str) -> list[Obj]:
    return [p for p in cluster.items("pods", ns) if p["metadata"]["name"].startswith(f"{RELEASE}-")]
