"""``helm install`` of the default values and every example, and where the learners land.

Every object the chart renders must be on the server afterwards; the experiment is a release object, not a
hook (``helm get hooks`` holds the test pod only). Learners: CPU ones on the CPU nodes, spread over both;
GPU ones on GPU nodes with a GPU each, one per node; a provider example's ones nowhere (Pending,
Unschedulable), since this cluster has none of the nodes they select.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from k8s_kit import (
    RELEASE,
    UNSCHEDULABLE_HERE,
    Cluster,
    Namespace,
    backend_args,
    backend_job,
    condition,
    install,
    is_hook,
    job_complete,
    key,
    learner_addresses,
    learner_pods,
    prepare,
    ref,
    render,
    setting,
    statefulset_ready,
    values_of,
    wait_for,
)
from test_k8s_validate import VALUE_SETS, value_id


def unschedulable(pod: dict) -> bool:
    scheduled = condition(pod, "PodScheduled")
    return (
        not pod["spec"].get("nodeName")
        and pod["status"].get("phase") == "Pending"
        and scheduled is not None
        and scheduled["status"] == "False"
        and scheduled.get("reason") == "Unschedulable"
    )


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=value_id)
def test_install_creates_every_object_and_places_the_learners(
    cluster: Cluster, namespace: Namespace, values_file: Path | None
) -> None:
    ns = namespace.name
    values = values_of(values_file)
    replicas = int(setting(values, "replicas"))
    gpu = bool(setting(values, "gpu.enabled"))
    expected_here = values_file is None or values_file.name not in UNSCHEDULABLE_HERE
    prepare(cluster, ns, values)

    install(cluster, ns, values_file, wait=expected_here)

    _, docs = render(cluster, ns, values_file)
    objects = [d for d in docs if not is_hook(d)]
    found = cluster.get("-n", ns, "--ignore-not-found", *(ref(d) for d in objects))
    found_keys = {key(item) for item in found.get("items", [found])}
    missing = sorted({key(d) for d in objects} - found_keys)
    assert not missing, f"rendered but not on the server: {missing}"

    hooks = cluster.helm("get", "hooks", RELEASE, "-n", ns)
    assert hooks.returncode == 0, hooks.stderr
    hook_objects = sorted(key(d) for d in yaml.safe_load_all(hooks.stdout) if d)
    assert hook_objects == [("Pod", f"{RELEASE}-test-learners")], hook_objects

    job = backend_job(cluster, ns)
    annotations = job["metadata"]["annotations"]
    assert annotations["colearn.io/learners"] == str(replicas), annotations
    assert len(learner_addresses(backend_args(job))) == replicas

    if not expected_here:

        def all_unschedulable() -> list[dict]:
            pods = learner_pods(cluster, ns)
            return pods if len(pods) == replicas and all(unschedulable(p) for p in pods) else []

        pods = wait_for(f"{replicas} learners Pending, PodScheduled=False (Unschedulable)", all_unschedulable)
        for pod in pods:
            limits = pod["spec"]["containers"][0]["resources"].get("limits", {})
            assert limits.get("nvidia.com/gpu") == "1", (pod["metadata"]["name"], limits)
        return

    pods = wait_for(
        f"{replicas} learners Running and Ready", lambda: statefulset_ready(cluster, ns, replicas)
    )
    nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    if gpu:
        assert all(node.startswith("gpu-") for node in nodes.values()), nodes
        for pod in pods:
            limits = pod["spec"]["containers"][0]["resources"]["limits"]
            assert limits.get("nvidia.com/gpu") == "1", (pod["metadata"]["name"], limits)
        assert len(set(nodes.values())) == replicas, (
            f"{replicas} GPU learners on 4 GPU nodes, not spread: {nodes}"
        )
    else:
        assert all(node.startswith("cpu-") for node in nodes.values()), nodes
        assert set(nodes.values()) == {"cpu-0", "cpu-1"}, f"learners not spread over both CPU nodes: {nodes}"
    # The fake kubelet completes the backend's pod once as many learners run as its --learners names.
    wait_for("the backend Job Complete", lambda: job_complete(cluster, ns))
