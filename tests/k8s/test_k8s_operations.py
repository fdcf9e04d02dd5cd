"""What an operator does to an installed fleet: scale, re-image, drain a node, ``helm test``, uninstall.

Each test installs the default values (3 CPU learners) and reads the outcome back from the API server. The
experiment's Job keeps its fleet through upgrades of the learners; drains take learners one at a time and
never wait for ever; ``helm uninstall`` leaves the documented claims and nothing else.
"""

from __future__ import annotations

import functools
import json
import re
from typing import NamedTuple

import pytest
from k8s_kit import (
    RELEASE,
    Cluster,
    Namespace,
    Obj,
    backend_args,
    backend_job,
    condition,
    evict,
    install,
    job_complete,
    job_pods,
    learner_addresses,
    pods_of_release,
    settle,
    statefulset_ready,
    uninstall,
    upgrade,
    wait_for,
)

PDB = f"{RELEASE}-learner"


class Experiment(NamedTuple):
    """The backend Job as an upgrade of the learners must leave it."""

    name: str
    uid: str
    args: list[str]
    learners_annotation: str
    pod_uids: list[str]


def _experiment(cluster: Cluster, ns: str) -> Experiment:
    job = backend_job(cluster, ns)
    pods = sorted(p["metadata"]["uid"] for p in job_pods(cluster, ns, job))
    meta = job["metadata"]
    return Experiment(
        meta["name"], meta["uid"], backend_args(job), meta["annotations"]["colearn.io/learners"], pods
    )


def test_upgrades_scale_and_reimage_the_learners_and_leave_the_experiment_alone(
    cluster: Cluster, namespace: Namespace
) -> None:
    ns = namespace.name
    install(cluster, ns, None)
    wait_for("3 learners Running and Ready", lambda: statefulset_ready(cluster, ns, 3))
    experiment = _experiment(cluster, ns)
    assert len(experiment.pod_uids) == 1, f"the backend Job has {len(experiment.pod_uids)} pods, not one"
    assert len(learner_addresses(experiment.args)) == 3 and experiment.learners_annotation == "3", experiment

    for replicas in (5, 2):
        upgrade(cluster, ns, f"replicas={replicas}")
        ready = functools.partial(statefulset_ready, cluster, ns, replicas)
        pods = wait_for(f"{replicas} learners Running and Ready", ready)
        names = [p["metadata"]["name"] for p in pods]
        assert names == [f"{RELEASE}-learner-{i}" for i in range(replicas)], names
        assert _experiment(cluster, ns) == experiment, f"the experiment changed with replicas={replicas}"

    upgrade(cluster, ns, "image.tag=9.9.9")

    def reimaged() -> list[Obj] | None:
        pods = statefulset_ready(cluster, ns, 2)
        images = [c["image"] for p in pods or [] for c in p["spec"]["containers"] if c["name"] == "learner"]
        return pods if images and all(i.endswith(":9.9.9") for i in images) else None

    wait_for("2 learners on image tag 9.9.9, Running and Ready", reimaged)
    assert _experiment(cluster, ns) == experiment, "re-imaging the learners changed the experiment"


def test_drain_moves_the_learners_off_the_node_and_finishes(cluster: Cluster, namespace: Namespace) -> None:
    ns = namespace.name
    install(cluster, ns, None)
    pods = wait_for("3 learners Running and Ready", lambda: statefulset_ready(cluster, ns, 3))
    # Drain only once the experiment is done: the fake kubelet never ends an evicted Job pod that still runs
    # (test_k8s_experiment replaces one by hand), so a drain would wait for it until its timeout.
    wait_for("the backend Job Complete", lambda: job_complete(cluster, ns))
    node = pods[0]["spec"]["nodeName"]
    moved = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods if p["spec"]["nodeName"] == node}
    try:
        done = cluster.kubectl(
            "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s", timeout=150
        )
        assert done.returncode == 0, f"kubectl drain {node} failed ({done.returncode}):\n{done.stderr}"

        def back_elsewhere() -> list[Obj] | None:
            pods = statefulset_ready(cluster, ns, 3)
            return pods if pods and all(p["spec"]["nodeName"] != node for p in pods) else None

        after = wait_for(f"3 learners Running and Ready again, none on {node}", back_elsewhere)
    finally:
        cluster.kubectl("uncordon", node)
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in after}
    assert all(uids[name] != uid for name, uid in moved.items()), f"{sorted(moved)} were not moved off {node}"


def _mark_not_ready(cluster: Cluster, pod: Obj) -> None:
    """As a kubelet reports a failing readiness probe (the fake kubelet leaves running learners alone)."""
    conditions = [
        {**c, "status": "False"} if c["type"] in ("Ready", "ContainersReady") else c
        for c in pod["status"]["conditions"]
    ]
    statuses = [{**s, "ready": False} for s in pod["status"]["containerStatuses"]]
    patch = {"status": {"conditions": conditions, "containerStatuses": statuses}}
    name = pod["metadata"]["name"]
    args = ["patch", "pod", name, "-n", pod["metadata"]["namespace"], "--subresource=status", "--type=merge"]
    cluster.ok(*args, "-p", json.dumps(patch))


def test_a_not_ready_learner_can_be_evicted_when_the_budget_is_spent(
    cluster: Cluster, namespace: Namespace
) -> None:
    ns = namespace.name
    install(cluster, ns, None)
    pods = wait_for("3 learners Running and Ready", lambda: statefulset_ready(cluster, ns, 3))
    spec = cluster.get("pdb", PDB, "-n", ns)["spec"]
    assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow", spec
    assert spec.get("maxUnavailable", 0) >= 1, spec

    for pod in pods[1:]:
        _mark_not_ready(cluster, pod)
    status = settle(
        lambda: cluster.get("pdb", PDB, "-n", ns)["status"],
        lambda s: s.get("currentHealthy") == 1 and s.get("disruptionsAllowed") == 0,
    )
    assert status.get("currentHealthy") == 1 and status.get("disruptionsAllowed") == 0, status

    refused = evict(cluster, ns, pods[0]["metadata"]["name"])
    assert refused.returncode != 0 and "disruption budget" in refused.stderr, (
        f"the budget let a healthy learner go with 2 of 3 unhealthy: {refused.stdout}{refused.stderr}"
    )
    # IfHealthyBudget would refuse this too (1 healthy < 2 desired); AlwaysAllow lets a drain move on.
    unhealthy = pods[1]["metadata"]["name"]
    allowed = evict(cluster, ns, unhealthy)
    assert allowed.returncode == 0, f"a not-ready learner could not be evicted:\n{allowed.stderr}"
    old_uid = pods[1]["metadata"]["uid"]

    def replaced() -> Obj | None:
        pod = cluster.maybe("pod", unhealthy, ns)
        ready = pod and condition(pod, "Ready")
        return (
            pod if pod and pod["metadata"]["uid"] != old_uid and ready and ready["status"] == "True" else None
        )

    wait_for(f"{unhealthy} evicted and back, Ready", replaced)


def test_helm_test_runs_the_test_pod_and_passes(cluster: Cluster, namespace: Namespace) -> None:
    ns = namespace.name
    install(cluster, ns, None)
    wait_for("3 learners Running and Ready", lambda: statefulset_ready(cluster, ns, 3))
    test_pod = f"{RELEASE}-test-learners"

    done = cluster.helm("test", RELEASE, "-n", ns, "--timeout", "60s", timeout=120)

    assert done.returncode == 0, f"helm test failed:\n{done.stdout}\n{done.stderr}"
    assert re.search(rf"TEST SUITE:\s+{test_pod}\b", done.stdout), done.stdout
    assert re.search(r"Phase:\s+Succeeded", done.stdout), done.stdout
    scheduled = [
        e
        for e in cluster.items("events", ns)
        if e["involvedObject"].get("name") == test_pod and e.get("reason") == "Scheduled"
    ]
    assert scheduled, f"no Scheduled event for pod {test_pod}: the test pod never ran"
    # hook-delete-policy hook-succeeded: a passing test leaves no pod behind.
    wait_for(f"pod {test_pod} deleted", lambda: cluster.maybe("pod", test_pod, ns) is None)


def _leftovers(cluster: Cluster, ns: str, resources: str) -> set[tuple[str, str]]:
    """Every object in the namespace of the release: its instance label, or its name."""
    items = json.loads(cluster.ok("get", resources, "-n", ns, "-o", "json", "--ignore-not-found") or "{}")
    return {
        (i["kind"], i["metadata"]["name"])
        for i in items.get("items", [])
        if (i["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == RELEASE
        or RELEASE in i["metadata"]["name"]
    }


@pytest.mark.parametrize("data_mode", ["embedded", "perPodClaim"])
def test_uninstall_leaves_only_the_documented_claims(
    cluster: Cluster, namespace: Namespace, data_mode: str
) -> None:
    ns = namespace.name
    install(cluster, ns, None, "--set", f"data.mode={data_mode}")
    wait_for("3 learners Running and Ready", lambda: statefulset_ready(cluster, ns, 3))
    resources = ",".join(
        r
        for r in cluster.ok("api-resources", "--verbs=list", "--namespaced", "-o", "name").split()
        if r.split(".")[0] != "events"
    )
    claims = {f"{RELEASE}-results"} | {f"checkpoints-{RELEASE}-learner-{i}" for i in range(3)}
    if data_mode == "perPodClaim":
        claims |= {f"data-{RELEASE}-learner-{i}" for i in range(3)}
    expected = {("PersistentVolumeClaim", name) for name in claims}

    uninstall(cluster, ns)

    wait_for("the release's pods gone", lambda: not pods_of_release(cluster, ns))
    left = settle(lambda: _leftovers(cluster, ns, resources), lambda found: found == expected)
    assert left == expected, f"left behind: {sorted(left - expected)}; missing: {sorted(expected - left)}"
    phases = {c["metadata"]["name"]: c["status"].get("phase") for c in cluster.items("pvc", ns)}
    assert all(phases[name] == "Bound" for name in claims), phases
