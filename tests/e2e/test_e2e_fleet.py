"""The compose fleet on a real Docker engine: up, healthy, probed, rounds, scraped, scaled, and gone.

The steps share one fleet and run in file order, as a user would take them: `docker-compose up` with 3
learners, grpcurl against a published port, the backend's rounds, Prometheus and the dashboard's
queries, `--scale learner=5`, and `down -v`. Everything is asserted through the real thing: Docker's own
health state, the real grpcurl binary, Prometheus's HTTP API, and the results file the backend wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dashboard_queries import dashboard_queries, query, query_returns_data, targets
from e2e_docker import REPO_ROOT, STATE_DIR, ComposeProject, PrivateDockerd, free_port, free_port_range
from e2e_images import LightImages
from e2e_timings import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROUNDS = 4
LEARNER_UID = 10001
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "colearn-fleet.json"
GRPCURL = Path(sys.executable).with_name("grpcurl")
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Polls ``probe`` until it returns something truthy; fails naming ``what`` (no timing is asserted)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as exc:  # a Prometheus that is still starting, a container still being created
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(every)


@dataclass
class Fleet:
    engine: PrivateDockerd
    project: ComposeProject
    scratch: Path
    prometheus_url: str
    baseline: dict[str, set[str]]
    down: bool = False
    seen: dict[str, Any] = field(default_factory=dict)

    def health(self, service: str) -> list[str]:
        return [c["State"].get("Health", {}).get("Status", "none") for c in self.project.containers(service)]

    def backend(self) -> dict[str, Any]:
        ids = self.project.run("ps", "-aq", "backend").stdout.split()
        (container,) = self.engine.inspect("container", *ids)
        return container

    def finished_backend(self, not_started_at: str | None = None) -> dict[str, Any] | None:
        """The backend container once it has exited (from a run that started after ``not_started_at``)."""
        container = self.backend()
        state = container["State"]
        if state["Status"] != "exited" or state["StartedAt"] == not_started_at:
            return None
        return container

    def fetch_results(self, run: str = "latest") -> Path:
        """A run directory from the backend's /results (compose's default: a named volume), copied out as
        a user would; ``latest`` is the newest run."""
        target = Path(tempfile.mkdtemp(dir=self.scratch))
        self.engine.docker("cp", f"{self.backend()['Id']}:/results/.", str(target))
        return (target / run).resolve()

    def journal(self, run: str) -> list[dict[str, Any]]:
        text = self.engine.docker(
            "exec", self.backend()["Id"], "cat", f"/results/{run}/journal.jsonl", check=False
        )
        return [json.loads(line) for line in text.stdout.splitlines() if line.endswith("}")]

    def learner_targets(self) -> list[dict[str, Any]]:
        return [t for t in targets(self.prometheus_url) if t["labels"].get("job") == "colearn-learner"]

    def save_logs(self) -> None:
        logs = self.project.run("logs", "--no-color", "--timestamps", check=False)
        (STATE_DIR / "compose-fleet.log").write_text(logs.stdout + logs.stderr)


@pytest.fixture(scope="module")
def fleet(
    engine: PrivateDockerd, light_images: LightImages, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    prometheus_port = free_port()
    variables = {
        "LEARNER_IMAGE": light_images.learner.tag,
        "BACKEND_IMAGE": light_images.backend.tag,
        "PROMETHEUS_IMAGE": light_images.prometheus.tag,
        "FLEET_LEARNERS": "3",
        "FLEET_ROUNDS": str(ROUNDS),
        "FLEET_GRPC_PORTS": free_port_range(10),
        "FLEET_METRICS_PORTS": free_port_range(10),
        "FLEET_PROMETHEUS_PORT": str(prometheus_port),
    }
    project = ComposeProject(engine, f"colearn-e2e-{os.getpid()}", variables)
    scratch = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(engine, project, scratch, f"http://127.0.0.1:{prometheus_port}", engine.state())
    try:
        yield fleet
    finally:
        if not fleet.down:
            fleet.save_logs()
            project.run("down", "--volumes", "--remove-orphans", check=False)


def test_images_run_as_their_fixed_user_and_the_backend_has_no_ml_library(
    engine: PrivateDockerd, light_images: LightImages
) -> None:
    for built in (light_images.learner, light_images.backend):
        (image,) = engine.inspect("image", built.tag)
        assert image["Config"]["User"] == f"{LEARNER_UID}:{LEARNER_UID}", built.tag
    (learner,) = engine.inspect("image", light_images.learner.tag)
    assert learner["Config"]["Entrypoint"] == ["colearn-learner", "serve"]
    assert set(learner["Config"]["ExposedPorts"]) == {"9995/tcp", "9091/tcp"}
    assert set(learner["Config"]["Volumes"]) == {"/data", "/checkpoints"}
    assert "colearn-learner health" in " ".join(learner["Config"]["Healthcheck"]["Test"])
    probe = (
        "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
        "['backend_client', 'colearn_contract', 'colearn_learner', 'numpy', 'torch', 'tensorflow', "
        "'keras', 'sklearn', 'scipy']}))"
    )
    run = engine.docker(
        "run", "--rm", "--network=none", "--entrypoint=python", light_images.backend.tag, "-c", probe
    )
    found = json.loads(run.stdout)
    assert found == {
        "backend_client": True,
        "colearn_contract": True,
        "colearn_learner": False,
        "numpy": True,
        "torch": False,
        "tensorflow": False,
        "keras": False,
        "sklearn": False,
        "scipy": False,
    }


def test_up_brings_every_container_to_healthy_through_its_own_healthcheck(fleet: Fleet) -> None:
    started = time.monotonic()
    # Returns once the backend has started, which depends_on holds back until every learner is healthy.
    fleet.project.run("up", "--detach", "--no-build")
    wait_for(
        "3 learners and Prometheus healthy",
        lambda: fleet.health("learner") == ["healthy"] * 3 and fleet.health("prometheus") == ["healthy"],
        timeout=180,
    )
    record(up_to_all_healthy_s=time.monotonic() - started)
    for container in fleet.project.containers("learner"):
        # Docker ran the image's check command itself: its last output is the health service's answer.
        assert "SERVING" in container["State"]["Health"]["Log"][-1]["Output"]
        assert container["Config"]["User"] == f"{LEARNER_UID}:{LEARNER_UID}"


def grpcurl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(GRPCURL), "-plaintext", "-max-time", "20", *args[:-1], address, *args[-1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_grpcurl_lists_and_health_checks_every_learner_on_its_published_port(fleet: Fleet) -> None:
    grpc_ports = fleet.project.published("learner", 9995)
    metrics_ports = fleet.project.published("learner", 9091)
    assert len(grpc_ports) == len(metrics_ports) == 3
    for host, _ in grpc_ports + metrics_ports + fleet.project.published("prometheus", 9090):
        assert host == "127.0.0.1"
    assert len({port for _, port in grpc_ports}) == 3  # a range: each replica got its own host port
    for _, port in grpc_ports:
        address = f"127.0.0.1:{port}"
        listed = grpcurl(address, "list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert {"colearn.v1.Learner", "grpc.health.v1.Health"} <= services
        assert services & {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
        checked = grpcurl(address, "grpc.health.v1.Health/Check")
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout) == {"status": "SERVING"}


def test_backend_runs_the_rounds_on_a_shard_per_learner_and_writes_results(fleet: Fleet) -> None:
    backend = wait_for("the backend to finish its rounds", fleet.finished_backend, timeout=300)
    logs = fleet.project.run("logs", "--no-color", "backend").stdout
    assert backend["State"]["ExitCode"] == 0, logs
    fleet.seen["backend_started"] = backend["State"]["StartedAt"]
    fleet.seen["backend_finished"] = backend["State"]["FinishedAt"]
    folder = fleet.fetch_results()
    assert folder.name == "fleet-of-3"
    results = json.loads((folder / "results.json").read_text())
    assert len(results["run"]["learners"]) == 3
    initial, *rounds = results["results"]
    assert len(rounds) == ROUNDS
    assert any(r["vote"] for r in rounds), logs
    # Equal weights, different scores: each learner evaluates on its own shard.
    assert len(set(initial["test_scores"])) == 3
    assert (folder / "results.png").stat().st_size > 0
    assert (folder / "model.safetensors").stat().st_size > 0
    kinds = [json.loads(line)["kind"] for line in (folder / "journal.jsonl").read_text().splitlines()]
    assert kinds[:2] == ["run", "start"] and kinds[-1] == "finished" and kinds.count("round") == ROUNDS


def test_prometheus_scrapes_every_learner_and_answers_every_dashboard_query(fleet: Fleet) -> None:
    wait_for(
        "Prometheus to scrape 3 learners",
        lambda: [t["health"] for t in fleet.learner_targets()] == ["up"] * 3,
        timeout=120,
    )
    up = query(fleet.prometheus_url, 'up{job="colearn-learner"}')
    assert len(up) == 3 and all(series["value"][1] == "1" for series in up)
    queries = dashboard_queries(DASHBOARD)
    assert queries
    # The backend exits when its rounds are done (its metrics stay up a few scrapes longer): the dashboard
    # is read as it was a moment before the backend's last scrape, as Grafana's time range would show it.
    finished = _unix_time(fleet.seen["backend_finished"]) - 2.0
    rounds = 'max(last_over_time(colearn_backend_experiment_accepted_rounds{job="colearn-backend"}[1h]))'
    wait_for("the backend's rounds in Prometheus", lambda: query(fleet.prometheus_url, rounds), timeout=60)

    def missing() -> list[str]:
        return [q for q in queries if not query_returns_data(fleet.prometheus_url, q, at=finished)]

    wait_for("every dashboard query to return data", lambda: not missing() or None, timeout=180, every=5)
    played = query(
        fleet.prometheus_url, 'sum(colearn_backend_rounds_total{job="colearn-backend"})', at=finished
    )
    assert float(played[0]["value"][1]) == ROUNDS


def _unix_time(docker_time: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as a unix time."""
    from datetime import datetime

    seconds, _, fraction = docker_time.rstrip("Z").partition(".")
    return datetime.fromisoformat(seconds + "+00:00").timestamp() + float(f"0.{fraction or 0}")


def test_scaling_to_five_learners_is_a_new_experiment_that_survives_its_backend(fleet: Fleet) -> None:
    """The scaled fleet's experiment gets a run directory of its own (fleet-of-5). Its backend container
    is killed (SIGKILL) in the middle of the run and started again: the run resumes where it was and
    ends with every round once, as one experiment."""
    rounds = 120
    fleet.project.variables["FLEET_ROUNDS"] = str(rounds)
    fleet.project.run("up", "--detach", "--no-build", "--scale", "learner=5")
    wait_for("5 healthy learners", lambda: fleet.health("learner") == ["healthy"] * 5, timeout=180)

    def recorded() -> int:
        return sum(1 for record in fleet.journal("fleet-of-5") if record["kind"] == "round")

    wait_for("a few rounds of the new experiment", lambda: recorded() >= 5, timeout=300, every=0.5)
    backend_id = fleet.backend()["Id"]
    fleet.engine.docker("kill", "--signal=KILL", backend_id)
    killed = wait_for("the killed backend", lambda: fleet.finished_backend(), timeout=60)["State"]
    assert killed["ExitCode"] == 137
    assert recorded() < rounds, "the run ended before the kill: raise the round count"
    fleet.engine.docker("start", backend_id)  # the same container, the same command: --resume_if_exists
    backend = wait_for(
        "the resumed run to finish",
        lambda: fleet.finished_backend(not_started_at=killed["StartedAt"]),
        timeout=600,
    )
    logs = fleet.project.run("logs", "--no-color", "backend").stdout
    assert backend["State"]["ExitCode"] == 0, logs
    assert "resuming /results/fleet-of-5 at round" in logs
    folder = fleet.fetch_results("fleet-of-5")
    results = json.loads((folder / "results.json").read_text())
    assert len(results["run"]["learners"]) == 5
    assert [r["round_index"] for r in results["results"]] == [None, *range(rounds)]
    assert len(set(results["results"][0]["test_scores"])) == 5
    kinds = [json.loads(line)["kind"] for line in (folder / "journal.jsonl").read_text().splitlines()]
    assert kinds.count("resumed") == 1 and kinds[-1] == "finished"
    # The first experiment is still there, untouched.
    assert (
        json.loads((fleet.fetch_results("fleet-of-3") / "results.json").read_text())["run"]["rounds"]
        == ROUNDS
    )
    grpc_ports = fleet.project.published("learner", 9995)
    assert len({port for _, port in grpc_ports}) == 5 and {host for host, _ in grpc_ports} == {"127.0.0.1"}
    wait_for(
        "Prometheus to scrape 5 learners",
        lambda: [t["health"] for t in fleet.learner_targets()] == ["up"] * 5,
        timeout=120,
    )


def test_down_leaves_no_container_network_or_volume(fleet: Fleet) -> None:
    fleet.save_logs()
    fleet.project.run("down", "--volumes", "--remove-orphans")
    fleet.down = True
    assert fleet.engine.state() == fleet.baseline
