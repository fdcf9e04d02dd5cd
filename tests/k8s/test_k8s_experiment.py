"""The experiment's Job on the server: a replaced pod resumes the same run, a missing claim shows plainly.

The fake kubelet completes the backend's pod once its learners run; these tests keep it running by keeping
the learners off every node (a node selector no node matches), or by naming a claim that does not exist.
"""

from __future__ import annotations

import json

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
    learner_pods,
    running_ready,
    statefulset_ready,
    uninstall,
    wait_for,
)

NOWHERE = "learner.nodeSelector.colearn-test/none=x"


def _results_mount(pod: Obj) -> tuple[str | None, str | None]:
    """(the claim mounted at /results, its volume's name)."""
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "backend"]
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volume = mounts.get("/results")
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec["volumes"]}
    return claims.get(volume) if volume else None, volume


@pytest.mark.parametrize("how", ["evicted", "deleted"])
def test_a_lost_backend_pod_is_replaced_and_resumes_the_run(
    cluster: Cluster, namespace: Namespace, how: str
) -> None:
    ns = namespace.name
    install(cluster, ns, None, "--set", NOWHERE, wait=False)
    job = backend_job(cluster, ns)

    def the_running_pod() -> Obj | None:
        pods = job_pods(cluster, ns, job)
        return pods[0] if len(pods) == 1 and running_ready(pods[0]) else None

    first = wait_for("the backend pod Running (its learners Pending)", the_running_pod)
    assert all(p["status"]["phase"] == "Pending" for p in learner_pods(cluster, ns))
    name, uid = first["metadata"]["name"], first["metadata"]["uid"]

    if how == "evicted":  # what `kubectl drain` does to the pod
        done = evict(cluster, ns, name)
    else:
        done = cluster.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
    assert done.returncode == 0, f"the backend pod could not be {how}:\n{done.stderr}"

    def the_replacement() -> Obj | None:
        pods = [p for p in job_pods(cluster, ns, job) if p["metadata"]["uid"] != uid]
        return pods[0] if len(pods) == 1 and running_ready(pods[0]) else None

    second = wait_for("a replacement backend pod Running", the_replacement)
    wait_for(f"the {how} {name} gone", lambda: cluster.maybe("pod", name, ns) is None)

    after = backend_job(cluster, ns)
    assert after["metadata"]["uid"] == job["metadata"]["uid"], "the experiment's Job was replaced"
    run = job["metadata"]["annotations"]["colearn.io/run"]
    assert run == RELEASE and second["metadata"]["labels"].get("colearn.io/run") == run, run
    assert _results_mount(second) == _results_mount(first) == (f"{RELEASE}-results", "results")
    args = backend_args(second)
    assert args == backend_args(first), (backend_args(first), args)
    assert f"--out=/results/{run}" in args and "--resume_if_exists" in args, args
    # The lost pod is one retry of backoffLimit's 6; the Job goes on.
    assert after["status"].get("failed", 0) <= 1 and not condition(after, "Failed"), after["status"]

    uninstall(cluster, ns)
    wait_for("the backend Job gone", lambda: not cluster.items("jobs", ns))
    results = cluster.maybe("pvc", f"{RELEASE}-results", ns)
    assert results is not None and results["status"]["phase"] == "Bound", (
        "helm uninstall took the results claim"
    )


def test_a_missing_results_claim_shows_as_a_pending_backend_pod(
    cluster: Cluster, namespace: Namespace
) -> None:
    ns = namespace.name

    # Not a hook: helm does not wait for the experiment (60 s here would be a hook waiting for its claim).
    install(cluster, ns, None, "--set", "backend.results.existingClaim=missing-claim", wait=False, timeout=60)

    status = cluster.helm("status", RELEASE, "-n", ns, "-o", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    assert cluster.maybe("pvc", f"{RELEASE}-results", ns) is None, "the chart made a claim of its own"
    job = backend_job(cluster, ns)

    def pending_on_the_claim() -> Obj | None:
        pods = job_pods(cluster, ns, job)
        scheduled = pods and condition(pods[0], "PodScheduled")
        waiting = (
            scheduled and scheduled["status"] == "False" and "missing-claim" in scheduled.get("message", "")
        )
        return pods[0] if len(pods) == 1 and pods[0]["status"]["phase"] == "Pending" and waiting else None

    pod = wait_for("the backend pod Pending, waiting for claim missing-claim", pending_on_the_claim)
    assert _results_mount(pod) == ("missing-claim", "results")
    # The learners do not need the claim: the fleet runs, the experiment waits, visibly.
    wait_for("3 learners Running and Ready", lambda: statefulset_ready(cluster, ns, 3))
    assert not job_complete(cluster, ns)
