"""Renders the chart with the real helm binary and hands the tests parsed objects.

tests/helm needs tools/helm (``python helm/fetch_helm.py``, which ``make test-helm`` runs first); the
default ``pytest`` run ignores this folder (pyproject addopts) so that it needs no helm. Renders are cached
per values set: ``helm template`` takes about 50 ms, and many tests read the same render.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = REPO_ROOT / "helm"
CHART = HELM_DIR / "colearn-fleet"
HELM = REPO_ROOT / "tools" / "helm"
EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))
RELEASE, NAMESPACE = "fleet", "colearn"
KUBE_VERSIONS = ("1.30.0", "1.37.0")
CRD_API_GROUP = "monitoring.coreos.com/"


def helm_script(name: str) -> ModuleType:
    """A script of helm/ (not a package) as a module: the tests use the same code as `make test-helm`."""
    spec = importlib.util.spec_from_file_location(f"colearn_helm_{name}", HELM_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        pytest.fail(
            f"no helm at {HELM}: run `python helm/fetch_helm.py` (`make test-helm` does)", pytrace=False
        )
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def _values_args(values: dict[str, Any] | None, tmp: Path) -> list[str]:
    if not values:
        return []
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def template(
    values: dict[str, Any] | None = None,
    *extra: str,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` with ``values`` in a file (their types survive, unlike --set's) and ``extra``."""
    with tempfile.TemporaryDirectory(prefix="colearn-helm-values-") as tmp:
        args = _values_args(values, Path(tmp))
        return helm("template", release, str(CHART), "--namespace", namespace, *args, *extra)


def lint(values: dict[str, Any] | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="colearn-helm-values-") as tmp:
        return helm("lint", "--strict", str(CHART), *_values_args(values, Path(tmp)), *extra)


class Rendered:
    """The objects one ``helm template`` produced, with finders for the ones the tests read."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        assert len(found) <= 1, f"{len(found)} {kind} objects"
        return found[0] if found else None

    def one(self, kind: str) -> dict[str, Any]:
        found = self.maybe(kind)
        assert found is not None, f"no {kind} rendered; kinds: {sorted({d['kind'] for d in self.docs})}"
        return found

    @property
    def statefulset(self) -> dict[str, Any]:
        return self.one("StatefulSet")

    @property
    def learner_pod(self) -> dict[str, Any]:
        return self.statefulset["spec"]["template"]

    @property
    def learner(self) -> dict[str, Any]:
        """The learner container (the first: learner.sidecars follow it)."""
        container = self.learner_pod["spec"]["containers"][0]
        assert container["name"] == "learner"
        return container

    @property
    def job(self) -> dict[str, Any]:
        return self.one("Job")

    @property
    def backend(self) -> dict[str, Any]:
        (container,) = self.job["spec"]["template"]["spec"]["containers"]
        return container

    def backend_flags(self) -> dict[str, str]:
        """``--name=value`` arguments of the backend's ``run`` command by name; ``"true"`` for a bare flag."""
        args = self.backend["args"]
        assert args[0] == "run", args
        flags = (arg.removeprefix("--").partition("=") for arg in args[1:])
        return {name: value if equals else "true" for name, equals, value in flags}

    def learner_env(self) -> dict[str, Any]:
        """Name -> value, or the valueFrom mapping when the value comes from elsewhere."""
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in self.learner.get("env", [])}

    def core_objects(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if not d["apiVersion"].startswith(CRD_API_GROUP)]


@functools.cache
def _render_cached(values_json: str, extra: tuple[str, ...], release: str, namespace: str) -> Rendered:
    done = template(json.loads(values_json), *extra, release=release, namespace=namespace)
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return Rendered([d for d in yaml.safe_load_all(done.stdout) if d])


def render(
    values: dict[str, Any] | None = None,
    *extra: str,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> Rendered:
    return _render_cached(json.dumps(values or {}, sort_keys=True), extra, release, namespace)


def notes(values: dict[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install --dry-run=client` prints it (offline; helm template leaves it out)."""
    return _render_notes(json.dumps(values or {}, sort_keys=True))


@functools.cache
def _render_notes(values_json: str) -> str:
    with tempfile.TemporaryDirectory(prefix="colearn-helm-notes-") as tmp:
        args = _values_args(json.loads(values_json), Path(tmp))
        done = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args)
    assert done.returncode == 0, f"helm install --dry-run failed:\n{done.stderr}"
    _, _, tail = done.stdout.partition("NOTES:\n")
    return tail


def example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def labels_select(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A matchLabels selector selects an object when each of its labels is on the object."""
    return all(labels.get(key) == value for key, value in selector.items())


def names(items: Iterable[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]
