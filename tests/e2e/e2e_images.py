"""The images the e2e tests run, built here without any registry.

Not a test module. No image can be pulled on the machines this runs on, and pip cannot reach the index
from inside an image build, so: a Debian 12 base is made with debootstrap and imported; the Python
packages come from a wheelhouse that pip downloads on the host, which the Dockerfiles take through their
air-gapped build option (``WHEELHOUSE``); Prometheus is the host's own binary on that base.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from e2e_docker import REPO_ROOT, STATE_DIR, PrivateDockerd

BASE_IMAGE = "localhost/debian-py:12"
PROMETHEUS_IMAGE = "localhost/prometheus:e2e"
# A folder of the build context (the repository root); .dockerignore lets exactly this one in.
WHEELHOUSE = "wheelhouse"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PROMETHEUS_DOCKERFILE = Path(__file__).with_name("prometheus.Dockerfile")


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float
    size_bytes: int

    @property
    def size_mb(self) -> float:
        return round(self.size_bytes / 1e6, 1)


@dataclass(frozen=True)
class LightImages:
    """The compose fleet's images: the learner with scikit-learn only, the backend, and Prometheus."""

    learner: Built
    backend: Built
    prometheus: Built


def apt_mirror() -> str:
    """The Debian mirror apt uses here (deb822 ``.sources`` or a classic ``sources.list``)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", block, re.MULTILINE))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.exists():
            found = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", path.read_text(), re.MULTILINE)
            if found:
                return found.group(1)
    return DEFAULT_MIRROR


def debian_base(engine: PrivateDockerd, cache_dir: Path = STATE_DIR / "cache") -> Built:
    """Debian 12 (minbase) with python3, venv and CA certificates, imported as ``localhost/debian-py:12``.

    The rootfs tarball is cached between local runs (CI starts from a fresh clone, so it builds it).
    """
    started = time.monotonic()
    if engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        # A kept data root (COLEARN_E2E_DATA_ROOT) has it already; importing anew would give it a new id
        # and throw away every cached build layer on top of it.
        return Built(BASE_IMAGE, time.monotonic() - started, image_size(engine, BASE_IMAGE))
    tarball = cache_dir / "debian-py-12.tar"
    if not tarball.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="debootstrap-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                [
                    "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                    "bookworm", str(rootfs), apt_mirror(),
                ],
                check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            # The package cache and lists are of no use in an image: about 90 MB less.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = tarball.with_suffix(".partial")
            tar = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."]
            subprocess.run(tar, check=True)
            partial.rename(tarball)
    engine.docker(
        "import",
        "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change", "ENV LANG=C.UTF-8",
        "--change", 'CMD ["/bin/bash"]',
        str(tarball), BASE_IMAGE,
    )  # fmt: skip
    return Built(BASE_IMAGE, time.monotonic() - started, image_size(engine, BASE_IMAGE))


def wheelhouse(extras: str = "sklearn,backend,keras,torch") -> tuple[str, float]:
    """Every wheel the images install, downloaded on the host with the pinned set, plus the build backend.

    Returns the folder relative to the build context, and the seconds it took.
    """
    started = time.monotonic()
    folder = REPO_ROOT / WHEELHOUSE
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "-d", str(folder), "-c", str(REPO_ROOT / "requirements.lock"),
            f"{REPO_ROOT}[{extras}]", "setuptools>=77", "wheel",
        ],
        check=True, capture_output=True, timeout=1200,
    )  # fmt: skip
    return WHEELHOUSE, time.monotonic() - started


def build(engine: PrivateDockerd, dockerfile: str, tag: str, context: Path = REPO_ROOT, **args: str) -> Built:
    """``docker build`` (the classic builder) of one of the repository's Dockerfiles."""
    started = time.monotonic()
    build_args = [arg for name, value in args.items() for arg in ("--build-arg", f"{name}={value}")]
    engine.docker(
        "build", "--quiet", "--force-rm", "-f", str(context / dockerfile), "-t", tag, *build_args,
        str(context), timeout=1800,
    )  # fmt: skip
    return Built(tag, time.monotonic() - started, image_size(engine, tag))


def prometheus_image(engine: PrivateDockerd, base: str = BASE_IMAGE) -> Built:
    """The host's Prometheus 2.x binaries on the Debian base, standing in for prom/prometheus."""
    with tempfile.TemporaryDirectory(prefix="prometheus-image-") as tmp:
        context = Path(tmp)
        for name in ("prometheus", "promtool"):
            found = shutil.which(name)
            if found is None:
                raise FileNotFoundError(f"{name} is not installed (apt-get install prometheus)")
            shutil.copy2(found, context / name)
        shutil.copy2(PROMETHEUS_DOCKERFILE, context / "Dockerfile")
        return build(engine, "Dockerfile", PROMETHEUS_IMAGE, context=context, BASE_IMAGE=base)


def image_size(engine: PrivateDockerd, tag: str) -> int:
    return int(engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def remove_dangling(engine: PrivateDockerd) -> None:
    """The build stages' images (a wheelhouse copy each) are of no further use: free their disk."""
    engine.docker("image", "prune", "--force", check=False)
