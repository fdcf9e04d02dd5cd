"""The learner StatefulSet, its headless Service and the backend Job, as `helm template` renders them.

Each test reads the parsed objects and checks what Kubernetes would do with them: which names resolve,
which port a probe dials, what a GPU node is asked for, where the data comes from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helm_kit import EXAMPLES, NAMESPACE, RELEASE, Rendered, example, labels_select, names, render

# -- names: the backend's learner list is the StatefulSet's pods, by their DNS names --------------------


@pytest.mark.parametrize(
    ("replicas", "release", "namespace", "domain"),
    [
        (1, "fleet", "colearn", "cluster.local"),
        (3, "fleet", "colearn", "cluster.local"),
        (7, "exp-42", "research", "k8s.example.org"),
    ],
)
def test_backend_learner_list_is_every_statefulset_pod_by_dns_name(
    replicas: int, release: str, namespace: str, domain: str
) -> None:
    out = render({"replicas": replicas, "clusterDomain": domain}, release=release, namespace=namespace)
    sts, service = out.statefulset, out.one("Service")
    assert sts["spec"]["replicas"] == replicas
    assert sts["metadata"]["name"] == f"{release}-learner"
    # Pod i of a StatefulSet is <sts>-<i>; with serviceName pointing at a headless Service it resolves as
    # <pod>.<service>.<namespace>.svc.<domain>.
    assert sts["spec"]["serviceName"] == service["metadata"]["name"] == f"{release}-learner"
    pods = [f"{sts['metadata']['name']}-{i}" for i in range(replicas)]
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    expected = [f"{pod}.{service['metadata']['name']}.{namespace}.svc.{domain}:{grpc_port}" for pod in pods]
    assert out.backend_flags()["learners"].split(",") == expected


def test_headless_service_publishes_every_learner_before_it_is_ready() -> None:
    out = render()
    spec = out.one("Service")["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert labels_select(spec["selector"], out.learner_pod["metadata"]["labels"])
    assert not labels_select(spec["selector"], out.job["spec"]["template"]["metadata"]["labels"])
    assert {(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]} == {
        ("grpc", 9995, "grpc"),
        ("metrics", 9091, "metrics"),
    }
    container_ports = {p["name"]: p["containerPort"] for p in out.learner["ports"]}
    assert container_ports == {"grpc": 9995, "metrics": 9091}


def test_statefulset_starts_learners_in_parallel_and_selects_only_its_pods() -> None:
    out = render()
    spec = out.statefulset["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert labels_select(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    labels = spec["template"]["metadata"]["labels"]
    for key in (
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    ):
        assert key in labels, key
    # The selector is immutable: nothing in it may change with an upgrade.
    assert "app.kubernetes.io/version" not in spec["selector"]["matchLabels"]
    assert "helm.sh/chart" not in spec["selector"]["matchLabels"]


def test_settings_reach_the_learner_as_its_colearn_variables() -> None:
    learner = {"ports": {"grpc": 7000, "metrics": 7001}, "logLevel": "DEBUG", "graceSeconds": 5}
    env = render({"learner": {**learner, "plugins": ["my_models", "more.models"]}}).learner_env()
    assert env["COLEARN_PORT"] == "7000"
    assert env["COLEARN_METRICS_PORT"] == "7001"
    assert env["COLEARN_LOG_LEVEL"] == "DEBUG"
    assert env["COLEARN_GRACE_SECONDS"] == "5"
    assert env["COLEARN_PLUGINS"] == "my_models,more.models"
    assert env["COLEARN_DATA_ROOT"] == "/data"
    assert env["COLEARN_CHECKPOINT_DIR"] == "/checkpoints"
    assert "COLEARN_HEALTH_PORT" not in env  # only under TLS


def test_every_colearn_variable_is_a_learner_setting() -> None:
    """pydantic rejects no unknown COLEARN_* variable from the environment, so a typo would be ignored
    silently: each one the chart sets must name a real setting (or the CLI's log level)."""
    from colearn_learner.settings import Settings

    known = {f"COLEARN_{name.upper()}" for name in Settings.model_fields} | {"COLEARN_LOG_LEVEL"}
    tls = {"tls": {"enabled": True, "secretName": "s", "mtls": True, "clientSecretName": "c"}}
    for values in ({}, {**tls, "auth": {"existingSecret": "t"}, "learner": {"plugins": ["p"]}}):
        used = {name for name in render(values).learner_env() if name.startswith("COLEARN_")}
        assert used <= known, used - known


# -- probes -------------------------------------------------------------------------------------------


def _probes(container: dict) -> dict[str, dict]:
    return {kind: container[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}


def test_probes_are_native_grpc_on_the_server_health_service() -> None:
    out = render()
    for kind, probe in _probes(out.learner).items():
        assert set(probe) >= {"grpc"}, kind
        assert "exec" not in probe and "httpGet" not in probe and "tcpSocket" not in probe
        assert probe["grpc"] == {"port": 9995, "service": ""}, kind
    startup = out.learner["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_startup_budget_is_configurable() -> None:
    probes = {
        "startup": {"periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 80},
        "liveness": {"periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
        "readiness": {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    }
    startup = render({"learner": {"probes": probes}}).learner["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 1200


def test_under_tls_probes_move_to_the_plaintext_health_port() -> None:
    out = render(
        {
            "tls": {"enabled": True, "secretName": "learner-tls"},
            "learner": {"ports": {"grpc": 9995, "metrics": 9091, "health": 9444}},
        }
    )
    for kind, probe in _probes(out.learner).items():
        assert probe["grpc"] == {"port": 9444, "service": ""}, kind
    assert out.learner_env()["COLEARN_HEALTH_PORT"] == "9444"
    assert {"name": "health", "containerPort": 9444, "protocol": "TCP"} in out.learner["ports"]
    # The health port serves the kubelet only: the Service does not publish it.
    assert "health" not in names(out.one("Service")["spec"]["ports"])


# -- GPUs ---------------------------------------------------------------------------------------------


def test_gpu_limits_image_and_scheduling_appear_only_with_gpus() -> None:
    cpu = render()
    assert "nvidia.com/gpu" not in cpu.learner["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in cpu.learner["resources"].get("requests", {})
    assert cpu.learner["image"] == "colearn-learner:0.1.0"
    assert "runtimeClassName" not in cpu.learner_pod["spec"]
    assert "tolerations" not in cpu.learner_pod["spec"]

    gpu = render(
        {
            "gpu": {
                "enabled": True,
                "count": 2,
                "runtimeClassName": "nvidia",
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
            },
            "learner": {"nodeSelector": {"pool": "ml"}},
        }
    )
    limits = gpu.learner["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2
    # A GPU learner's host memory comes from gpu.resources, not from the CPU learner's 4Gi.
    assert (limits["memory"], gpu.learner["resources"]["requests"]["memory"]) == ("32Gi", "16Gi")
    assert gpu.learner["image"] == "colearn-learner-gpu:0.1.0"
    spec = gpu.learner_pod["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"pool": "ml", "nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_runtime_class_is_off_by_default_even_with_gpus() -> None:
    """A RuntimeClass the cluster lacks makes the API server refuse every pod: only on request."""
    assert "runtimeClassName" not in render({"gpu": {"enabled": True}}).learner_pod["spec"]
    assert "runtimeClassName" not in render({"gpu": {"runtimeClassName": "nvidia"}}).learner_pod["spec"]


def test_gpu_resources_replace_the_cpu_learners() -> None:
    out = render({"gpu": {"enabled": True, "resources": {"requests": {"cpu": "8", "memory": "64Gi"}}}})
    assert out.learner["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi"},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": 1},  # values maps merge with the defaults
    }
    assert out.learner["resources"]["limits"] != render().learner["resources"]["limits"]


def test_gpu_count_and_image_tag_follow_values() -> None:
    out = render({"gpu": {"enabled": True, "count": 4, "image": {"repository": "reg/lg", "tag": "cuda"}}})
    assert out.learner["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert out.learner["image"] == "reg/lg:cuda"


def test_learners_spread_across_nodes_by_default() -> None:
    """A topology spread constraint, soft by default: it never leaves a learner unschedulable, and a
    hard one allows a second learner on a node once every eligible node has one (unlike a required
    anti-affinity, which left a fifth learner unschedulable on four 8-GPU nodes)."""
    out = render()
    (spread,) = out.learner_pod["spec"]["topologySpreadConstraints"]
    assert (spread["maxSkew"], spread["whenUnsatisfiable"]) == (1, "ScheduleAnyway")
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    # Nodes whose taints a learner does not tolerate are no domain of its spread.
    assert spread["nodeTaintsPolicy"] == "Honor"
    assert labels_select(spread["labelSelector"]["matchLabels"], out.learner_pod["metadata"]["labels"])
    assert "affinity" not in out.learner_pod["spec"]

    (hard,) = render({"learner": {"spread": "hard"}}).learner_pod["spec"]["topologySpreadConstraints"]
    assert hard["whenUnsatisfiable"] == "DoNotSchedule"
    zone = render({"learner": {"spreadTopologyKey": "topology.kubernetes.io/zone"}})
    assert (
        zone.learner_pod["spec"]["topologySpreadConstraints"][0]["topologyKey"]
        == "topology.kubernetes.io/zone"
    )
    assert "topologySpreadConstraints" not in render({"learner": {"spread": "none"}}).learner_pod["spec"]
    extra = {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}
    both = render({"learner": {"topologySpreadConstraints": [extra]}}).learner_pod["spec"]
    assert both["topologySpreadConstraints"][1] == extra
    own = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    with_affinity = render({"learner": {"affinity": own}}).learner_pod["spec"]
    assert with_affinity["affinity"] == own
    assert "topologySpreadConstraints" in with_affinity  # affinity and spreading are separate concerns


def test_scheduler_name_for_gang_schedulers() -> None:
    out = render({"learner": {"schedulerName": "volcano"}, "backend": {"schedulerName": "volcano"}})
    assert out.learner_pod["spec"]["schedulerName"] == "volcano"
    assert out.job["spec"]["template"]["spec"]["schedulerName"] == "volcano"
    assert "schedulerName" not in render().learner_pod["spec"]


# -- data and checkpoints -----------------------------------------------------------------------------


def _mounts(out: Rendered) -> dict[str, dict]:
    return {m["mountPath"]: m for m in out.learner["volumeMounts"]}


def test_embedded_data_mounts_nothing_and_the_backend_gives_shards() -> None:
    out = render()
    assert "/data" not in _mounts(out)
    assert "data" not in [t["metadata"]["name"] for t in out.statefulset["spec"]["volumeClaimTemplates"]]
    assert "data_locations" not in out.backend_flags()  # DIGITS: learner i gets shard i of N by itself


def test_per_pod_claim_gives_each_learner_its_own_data_volume() -> None:
    snapshot = {"kind": "VolumeSnapshot", "name": "snap", "apiGroup": "snapshot.storage.k8s.io"}
    claim = {"size": "50Gi", "storageClassName": "ssd", "dataSource": snapshot}
    out = render({"data": {"mode": "perPodClaim", "perPodClaim": claim}})
    templates = {t["metadata"]["name"]: t["spec"] for t in out.statefulset["spec"]["volumeClaimTemplates"]}
    assert templates["data"]["resources"]["requests"]["storage"] == "50Gi"
    assert templates["data"]["storageClassName"] == "ssd"
    assert templates["data"]["dataSource"]["name"] == "snap"
    assert _mounts(out)["/data"] == {"name": "data", "mountPath": "/data", "readOnly": True}
    assert "data" not in names(out.learner_pod["spec"]["volumes"])  # the template provides it
    assert out.backend_flags()["data_locations"] == "/data"


def test_shared_claim_mounts_each_learners_own_sub_folder() -> None:
    out = render({"data": {"mode": "sharedClaim", "sharedClaim": {"claimName": "datasets"}}})
    mount = _mounts(out)["/data"]
    assert mount["subPathExpr"] == "learner_$(POD_INDEX)"
    env = out.learner_env()
    # The variable the sub-path expands is the pod's ordinal, from the label the StatefulSet controller sets.
    assert env["POD_INDEX"] == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    for variable in re.findall(r"\$\((\w+)\)", mount["subPathExpr"]):
        assert variable in env
    (volume,) = [v for v in out.learner_pod["spec"]["volumes"] if v["name"] == "data"]
    assert volume["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
    by_name = render(
        {"data": {"mode": "sharedClaim", "sharedClaim": {"claimName": "d", "subPathExpr": "$(POD_NAME)"}}}
    )
    assert _mounts(by_name)["/data"]["subPathExpr"] == "$(POD_NAME)"
    assert by_name.learner_env()["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_checkpoints_get_a_claim_per_learner_or_an_empty_dir() -> None:
    out = render({"checkpoints": {"size": "5Gi", "storageClassName": "-"}})
    (template,) = out.statefulset["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "checkpoints"
    assert template["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert template["spec"]["storageClassName"] == ""  # "-": no class at all
    assert _mounts(out)["/checkpoints"]["name"] == "checkpoints"
    assert "storageClassName" not in render().statefulset["spec"]["volumeClaimTemplates"][0]["spec"]

    off = render({"checkpoints": {"enabled": False}})
    assert "volumeClaimTemplates" not in off.statefulset["spec"]
    (volume,) = [v for v in off.learner_pod["spec"]["volumes"] if v["name"] == "checkpoints"]
    assert volume == {"name": "checkpoints", "emptyDir": {}}
    assert off.learner_env()["COLEARN_CHECKPOINT_DIR"] == "/checkpoints"


# -- the backend Job ----------------------------------------------------------------------------------


def test_backend_job_is_a_release_object_with_the_values() -> None:
    out = render(
        {
            "backend": {
                "modelTag": "KERAS_MNIST",
                "dataloaderTag": "KERAS_MNIST",
                "rounds": 7,
                "modelParams": {"steps_per_epoch": 20, "learning_rate": 0.01},
                "dataloaderParams": {"batch_size": 32},
                "backoffLimit": 4,
                "activeDeadlineSeconds": 999,
                "ttlSecondsAfterFinished": 60,
            },
            "vote": {"threshold": 0.75, "quorum": 1},
        }
    )
    job = out.job
    # Not a hook: `helm install --wait` returns when the learners are ready, upgrades do not re-run it.
    assert not any(key.startswith("helm.sh/hook") for key in job["metadata"].get("annotations", {}))
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (4, 999)
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    flags = out.backend_flags()
    assert flags["model_tag"] == flags["dataloader_tag"] == "KERAS_MNIST"
    assert (flags["rounds"], flags["vote_threshold"], flags["quorum"]) == ("7", "0.75", "1")
    assert json.loads(flags["model_params"]) == {"steps_per_epoch": 20, "learning_rate": 0.01}
    assert json.loads(flags["dataloader_params"]) == {"batch_size": 32}
    # The run directory of the experiment, resumed by a retried or replaced pod.
    assert (flags["out"], flags["resume_if_exists"]) == ("/results/fleet", "true")
    assert flags["metrics_port"] == "9092"
    assert out.backend["image"] == "colearn-backend:0.1.0"
    assert job["metadata"]["annotations"] == {"colearn.io/run": "fleet", "colearn.io/learners": "3"}


def test_a_lost_backend_pod_is_replaced_at_once() -> None:
    """No podFailurePolicy: with one, the Job would replace a pod only once it reached a terminal phase,
    so a backend on a lost node would wait for pod garbage collection before the run resumes."""
    spec = render().job["spec"]
    assert "podFailurePolicy" not in spec and "podReplacementPolicy" not in spec
    assert spec["backoffLimit"] == 6  # room for drains and lost nodes: each new pod resumes the run


def test_job_name_follows_its_spec_and_not_the_learners_image_or_count() -> None:
    """A Job's pod template is immutable: the name carries its digest, so an upgrade that changes the
    experiment's Job replaces it (and the new one resumes the run), while one that only re-images or
    scales the learners renders the very same Job."""
    base = render().job
    assert re.fullmatch(r"fleet-backend-[0-9a-f]{8}", base["metadata"]["name"])
    pinned = {"backend": {"learners": 3}}
    for same in ({"image": {"tag": "9.9"}}, {"replicas": 5, **pinned}, {"learner": {"logLevel": "DEBUG"}}):
        assert render(same).job == base, same
    assert render({"backend": {"rounds": 11}}).job["metadata"]["name"] != base["metadata"]["name"]
    # The pod template holds no chart version: a chart upgrade alone keeps the Job.
    assert "helm.sh/chart" not in base["spec"]["template"]["metadata"]["labels"]


def test_experiment_fleet_and_run_name() -> None:
    out = render({"replicas": 5, "backend": {"learners": 4, "runName": "exp-2"}})
    assert len(out.backend_flags()["learners"].split(",")) == 4
    assert out.backend_flags()["out"] == "/results/exp-2"
    assert out.job["spec"]["template"]["metadata"]["labels"]["colearn.io/run"] == "exp-2"
    assert out.job["metadata"]["annotations"]["colearn.io/learners"] == "4"


def test_backend_waits_for_learners_that_are_not_up_yet() -> None:
    """The Job can start before a learner listens: its names resolve early (publishNotReadyAddresses), and
    --connect_timeout is how long the backend waits for each learner's connection."""
    flags = render({"backend": {"connectTimeoutSeconds": 900}}).backend_flags()
    assert flags["connect_timeout"] == "900"


def test_backend_flags_are_ones_the_real_cli_accepts() -> None:
    """The rendered arguments parse with colearn-backend's own parser: no flag the CLI lacks."""
    from backend_client.cli import build_parser

    tls = {"enabled": True, "secretName": "s", "mtls": True, "clientSecretName": "c", "serverName": "learner"}
    for values in ({}, {"tls": tls, "data": {"mode": "perPodClaim"}, "backend": {"modelParams": {"a": 1}}}):
        args = build_parser().parse_args(render(values).backend["args"])
        assert args.command == "run"
        assert args.learners.count(",") == 2


def _results_volume(out: Rendered) -> dict:
    (volume,) = [v for v in out.job["spec"]["template"]["spec"]["volumes"] if v["name"] == "results"]
    return volume


def test_results_live_on_a_kept_claim_by_default() -> None:
    out = render()
    assert _results_volume(out)["persistentVolumeClaim"] == {"claimName": "fleet-results"}
    claim = out.one("PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "fleet-results"
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "storageClassName" not in claim["spec"]
    assert "ttlSecondsAfterFinished" not in out.job["spec"]
    unkept = render({"backend": {"results": {"persistence": {"keep": False, "storageClassName": "fast"}}}})
    assert "annotations" not in unkept.one("PersistentVolumeClaim")["metadata"]
    assert unkept.one("PersistentVolumeClaim")["spec"]["storageClassName"] == "fast"


def test_backend_job_can_be_left_out_and_results_can_go_to_another_claim_or_nowhere() -> None:
    off = render({"backend": {"enabled": False}})
    assert off.maybe("Job") is None and off.maybe("PersistentVolumeClaim") is None
    out = render({"backend": {"results": {"existingClaim": "results"}}})
    assert _results_volume(out)["persistentVolumeClaim"] == {"claimName": "results"}
    assert out.maybe("PersistentVolumeClaim") is None
    scratch = render({"backend": {"results": {"persistence": {"enabled": False}}}})
    assert _results_volume(scratch)["emptyDir"] == {}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_render_their_own_replica_count_into_the_backend_list(path: Path) -> None:
    values = example(path)
    out = render(values)
    replicas = values.get("replicas", 3)
    learners = out.backend_flags()["learners"].split(",")
    assert len(learners) == out.statefulset["spec"]["replicas"] == replicas
    assert learners[-1].startswith(f"{RELEASE}-learner-{replicas - 1}.{RELEASE}-learner.{NAMESPACE}.svc.")
