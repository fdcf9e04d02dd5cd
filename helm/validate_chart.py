"""Lints the chart and validates what it renders against real Kubernetes API schemas, offline.

For the default values and each examples/values-*.yaml:
  1. ``helm lint --strict``;
  2. ``helm template --kube-version V`` for each Kubernetes version (1.30 and 1.37), then
     ``kubernetes-validate --strict -k V`` over every rendered object, so that an unknown or misplaced
     field fails, not only a wrong type.

kubernetes-validate knows no CRDs and only *warns* (exit 0) when it has no schema for a kind. So the
Prometheus Operator kinds (PodMonitor, ServiceMonitor, PrometheusRule) are set aside here, and
tests/helm/test_helm_monitoring.py checks their structure; any other kind without a schema is an error.

    python helm/validate_chart.py               # lint and validate (make test-helm)
    python helm/validate_chart.py --lint-only   # make helm-lint
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = REPO_ROOT / "helm" / "colearn-fleet"
HELM = REPO_ROOT / "tools" / "helm"
KUBE_VERSIONS = ("1.30.0", "1.37.0")
CRD_API_GROUPS = ("monitoring.coreos.com/",)
RELEASE, NAMESPACE = "fleet", "colearn"


def values_sets(chart: Path) -> list[Path | None]:
    """None is the chart's own values.yaml."""
    return [None, *sorted((chart / "examples").glob("values-*.yaml"))]


def label(values: Path | None) -> str:
    return "default values" if values is None else values.name


def helm(*args: str, helm_bin: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, timeout=120)


def lint(chart: Path, values: Path | None, helm_bin: Path) -> list[str]:
    extra = [] if values is None else ["-f", str(values)]
    done = helm("lint", "--strict", str(chart), *extra, helm_bin=helm_bin)
    if done.returncode == 0:
        return []
    return [f"helm lint --strict ({label(values)}):\n{done.stdout}{done.stderr}"]


def render(chart: Path, values: Path | None, kube_version: str, helm_bin: Path) -> list[dict]:
    extra = [] if values is None else ["-f", str(values)]
    done = helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", kube_version,
                *extra, helm_bin=helm_bin)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"helm template ({label(values)}, {kube_version}) failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def is_crd_kind(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).startswith(CRD_API_GROUPS)


def validate(docs_by_set: dict[str, list[dict]], kube_version: str, workdir: Path) -> list[str]:
    """One kubernetes-validate run over every values set's core objects; any warning is an error too."""
    files = []
    for name, docs in docs_by_set.items():
        path = workdir / f"{Path(name).stem.replace(' ', '-')}-{kube_version}.yaml"
        path.write_text(yaml.safe_dump_all([d for d in docs if not is_crd_kind(d)], sort_keys=False))
        files.append(str(path))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", kube_version, *files],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or output:  # --quiet prints only warnings and failures
        return [f"kubernetes-validate --strict -k {kube_version}:\n{output}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lint-only", action="store_true", help="only helm lint --strict")
    parser.add_argument("--helm", type=Path, default=HELM, help="the helm binary (helm/fetch_helm.py)")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    if not args.helm.is_file():
        print(f"validate_chart: no helm at {args.helm}; run python helm/fetch_helm.py", file=sys.stderr)
        return 2
    sets = values_sets(args.chart)
    problems = [p for values in sets for p in lint(args.chart, values, args.helm)]
    print(f"helm lint --strict: {len(sets) - len(problems)} of {len(sets)} values sets pass")
    if not args.lint_only:
        with tempfile.TemporaryDirectory(prefix="colearn-helm-") as tmp:
            for version in KUBE_VERSIONS:
                try:
                    rendered = {label(v): render(args.chart, v, version, args.helm) for v in sets}
                except RuntimeError as exc:
                    problems.append(str(exc))
                    continue
                found = validate(rendered, version, Path(tmp))
                problems += found
                core = sum(1 for docs in rendered.values() for d in docs if not is_crd_kind(d))
                crds = sum(1 for docs in rendered.values() for d in docs if is_crd_kind(d))
                verdict = "FAILED" if found else "valid"
                print(f"Kubernetes {version}: {core} objects {verdict} (strict); {crds} Prometheus Operator "
                      f"objects left to tests/helm")  # fmt: skip
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
