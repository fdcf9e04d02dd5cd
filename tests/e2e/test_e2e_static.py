"""Static checks of the Dockerfiles, compose files and build context: what a reviewer would check by eye.

Dockerfiles: a fixed non-root USER, a HEALTHCHECK, no `latest` (or untagged) base image. Compose files:
valid for docker-compose 1.29 (`docker-compose config -q`) and for the Compose Specification that
Compose v2 implements (its JSON schema), published ports on 127.0.0.1 only, no fixed host port on the
scaled service, pinned images. The build context: the allowlist in .dockerignore, seen by a real build.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_kit import instructions
from e2e_docker import REPO_ROOT, PrivateDockerd

pytestmark = pytest.mark.timeout(600)

LEARNER_DOCKERFILES = ["learner_image/Dockerfile", "learner_image/Dockerfile.gpu"]
DOCKERFILES = [*LEARNER_DOCKERFILES, "learner_image/Dockerfile.backend", "tests/e2e/prometheus.Dockerfile"]
COMPOSE_SETS = [
    ("compose.yaml",),
    ("compose.yaml", "compose.gpu.yaml"),
    ("compose.yaml", "compose.data.yaml"),
]
COMPOSE_BIN = "/usr/bin/docker-compose"


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    start = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[start:]


def global_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The ARG defaults declared before the first FROM: what ``FROM ${NAME}`` resolves to."""
    found = {}
    for name, rest in steps:
        if name == "FROM":
            break
        if name == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            found[key.strip()] = value.strip()
    return found


def assert_pinned(image: str, where: str) -> None:
    tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
    assert "@sha256:" in image or (tag and tag != "latest"), f"{where}: image {image!r} must be pinned"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_runs_as_a_fixed_non_root_user_from_a_pinned_base(dockerfile: str) -> None:
    steps = instructions(REPO_ROOT / dockerfile)
    users = [rest for name, rest in final_stage(steps) if name == "USER"]
    assert users, f"{dockerfile}: the final stage sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile}: USER {users[-1]} must be a numeric non-root uid"
    args = global_args(steps)
    stages = {rest.split()[-1] for name, rest in steps if name == "FROM" and " AS " in rest.upper()}
    for name, rest in steps:
        if name != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if image not in stages:
            assert_pinned(image, dockerfile)


@pytest.mark.parametrize("dockerfile", LEARNER_DOCKERFILES)
def test_learner_dockerfile_declares_the_image_contract(dockerfile: str) -> None:
    steps = instructions(REPO_ROOT / dockerfile)
    last = final_stage(steps)
    args = global_args(steps)
    assert "BASE_IMAGE" in args
    assert any(name == "ARG" and rest == "EXTRAS=keras,torch" for name, rest in steps)
    # The air-gapped build's switch.
    assert any(name == "ARG" and rest.startswith("WHEELHOUSE") for name, rest in steps)
    (healthcheck,) = [rest for name, rest in last if name == "HEALTHCHECK"]
    assert "colearn-learner health" in healthcheck
    assert ("ENTRYPOINT", '["colearn-learner", "serve"]') in last
    assert set(" ".join(rest for name, rest in last if name == "EXPOSE").split()) == {"9995", "9091"}
    assert ("VOLUME", '["/data", "/checkpoints"]') in last
    env = " ".join(rest for name, rest in last if name == "ENV")
    assert "COLEARN_DATA_ROOT=/data" in env and "COLEARN_CHECKPOINT_DIR=/checkpoints" in env
    assert any(name == "COPY" and rest.startswith("--from=build /opt/venv") for name, rest in last)


def test_backend_dockerfile_is_a_batch_job_without_ml_extras() -> None:
    steps = instructions(REPO_ROOT / "learner_image/Dockerfile.backend")
    last = final_stage(steps)
    assert ("HEALTHCHECK", "NONE") in last  # a job that exits, not a service to probe
    assert ("ENTRYPOINT", '["colearn-backend"]') in last
    installs = " ".join(rest for name, rest in steps if name == "RUN" and "pip install" in rest)
    assert '"/src[backend]"' in installs  # the core and the backend's console and plot, no ML extra


def compose(*files: str, args: tuple[str, ...] = ("config", "-q")) -> subprocess.CompletedProcess[str]:
    command = [COMPOSE_BIN, *(arg for name in files for arg in ("-f", str(REPO_ROOT / name))), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


@pytest.mark.parametrize("files", COMPOSE_SETS, ids="+".join)
def test_compose_files_are_valid_for_docker_compose_1_29(files: tuple[str, ...]) -> None:
    result = compose(*files)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml", "compose.data.yaml"])
def test_compose_files_match_the_compose_specification_schema(name: str) -> None:
    # The JSON schema of the Compose Specification, which Compose v2 implements, vendored by the tool.
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run([*command, str(REPO_ROOT / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def resolved(*files: str) -> dict[str, Any]:
    result = compose(*files, args=("config",))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("files", COMPOSE_SETS, ids="+".join)
def test_compose_publishes_on_loopback_only_with_pinned_images(files: tuple[str, ...]) -> None:
    services = resolved(*files)["services"]
    for name, service in services.items():
        assert_pinned(service["image"], f"service {name}")
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
            assert published.startswith("127.0.0.1:"), f"service {name} publishes {port} beyond 127.0.0.1"
    for port in services["learner"]["ports"]:
        host_port = port.split(":")[1] if isinstance(port, str) else str(port["published"])
        assert "-" in host_port, f"the scaled learner service needs a host port range, not {port}"


def test_compose_wires_discovery_health_and_monitoring() -> None:
    config = resolved("compose.yaml")
    services = config["services"]
    learner, backend, prometheus = services["learner"], services["backend"], services["prometheus"]
    assert "colearn-learner" in learner["healthcheck"]["test"] and "health" in learner["healthcheck"]["test"]
    assert backend["depends_on"]["learner"]["condition"] == "service_healthy"
    assert "--dns=learner:9995" in backend["command"]
    # A restarted backend resumes its experiment, and Prometheus finds its metrics on 9092.
    assert {"--resume_if_exists", "--metrics_port=9092", "--out=/results/fleet-of-{learners}"} <= set(
        backend["command"]
    )
    assert any(volume.endswith(":/results:rw") for volume in backend["volumes"])
    assert services["grafana"]["profiles"] == ["grafana"]
    # Prometheus finds the learners by the service's DNS name on the learners' metrics port.
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    scrape = yaml.safe_load((Path(mounts["/etc/prometheus"]) / "prometheus.yml").read_text())
    sd = {
        entry["names"][0]: entry["port"]
        for job in scrape["scrape_configs"]
        for entry in job.get("dns_sd_configs", [])
    }
    assert sd == {"learner": 9091, "backend": 9092}
    assert {port.rsplit(":", 1)[1] for port in learner["ports"]} == {"9995/tcp", "9091/tcp"}
    # Grafana reads the dashboards from where the provisioning file says they are.
    binds = [v.split(":") for v in services["grafana"]["volumes"] if v.startswith("/")]
    grafana = {target: Path(source) for source, target, *_ in binds}
    provisioning = grafana["/etc/grafana/provisioning"] / "dashboards" / "colearn.yml"
    provider = yaml.safe_load(provisioning.read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert list(grafana[dashboards_path].glob("*.json"))


def test_build_context_holds_the_sources_and_nothing_else(engine: PrivateDockerd, tmp_path: Path) -> None:
    """A real build copies its whole context into an image; its file list shows what .dockerignore lets in."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /context/\n")
    dockerfile = str(tmp_path / "Dockerfile")
    engine.docker("build", "--quiet", "-f", dockerfile, "-t", "colearn-context:e2e", str(REPO_ROOT))
    container = engine.docker("create", "colearn-context:e2e", "none").stdout.strip()
    try:
        archive = tmp_path / "context.tar"
        engine.docker("export", f"--output={archive}", container)
    finally:
        engine.docker("rm", container)
        engine.docker("image", "rm", "colearn-context:e2e")
    with tarfile.open(archive) as tar:
        members = {
            m.name.removeprefix("context/"): m.size for m in tar.getmembers() if m.name.startswith("context/")
        }
    names = set(members)
    assert {"pyproject.toml", "README.md", "requirements.lock", "learner_image/Dockerfile"} <= names
    assert "services/colearn_learner/server.py" in names and "backend_client/cli.py" in names
    for unwanted in (".venv/", ".git/", ".e2e/", "runs/", "tests/", ".pytest_cache/", "deploy/"):
        assert not any(name.startswith(unwanted) for name in names), unwanted
    assert not any("__pycache__" in name for name in names)
    sources = sum(size for name, size in members.items() if not name.startswith("wheelhouse/"))
    assert sources < 20_000_000, f"the build context holds {sources} bytes of sources"
