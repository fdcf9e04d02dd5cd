"""The chart's content digest, so that a test can insist the chart version is bumped when the chart changes.

The digest covers what decides what the chart renders: templates/, files/, values.yaml, values.schema.json
and Chart.yaml without its ``version:`` line (so that bumping the version alone does not change it). The
README, the examples and .helmignore are left out. tests/helm/chart_versions.json maps each released
chart version to its digest; a change under the same version fails tests/helm/test_helm_package.py.

    python helm/chart_digest.py            # prints: <version> <digest>
    python helm/chart_digest.py --record   # records the digest for Chart.yaml's current version
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = REPO_ROOT / "helm" / "colearn-fleet"
RECORD = REPO_ROOT / "tests" / "helm" / "chart_versions.json"
_VERSION_LINE = re.compile(r"^version:.*$", re.MULTILINE)


def chart_version(chart: Path = CHART) -> str:
    match = _VERSION_LINE.search((chart / "Chart.yaml").read_text())
    if match is None:
        raise ValueError(f"{chart / 'Chart.yaml'} has no version line")
    return match.group(0).split(":", 1)[1].strip().strip("\"'")


def chart_digest(chart: Path = CHART) -> str:
    """sha256 over each covered file's relative path and content, in path order."""
    files = [chart / "values.yaml", chart / "values.schema.json"]
    for folder in ("templates", "files"):
        files += [p for p in (chart / folder).rglob("*") if p.is_file()]
    digest = hashlib.sha256()
    digest.update(b"Chart.yaml\0" + _VERSION_LINE.sub("", (chart / "Chart.yaml").read_text()).encode())
    for path in sorted(files):
        digest.update(b"\0" + path.relative_to(chart).as_posix().encode() + b"\0" + path.read_bytes())
    return "sha256:" + digest.hexdigest()


def recorded(record: Path = RECORD) -> dict[str, str]:
    return json.loads(record.read_text()) if record.exists() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write the digest into {RECORD.name}")
    args = parser.parse_args(argv)
    version, digest = chart_version(), chart_digest()
    print(version, digest)
    if args.record:
        versions = recorded()
        if versions.get(version, digest) != digest:
            print(f"version {version} is recorded with another digest: bump `version` in Chart.yaml first",
                  file=sys.stderr)  # fmt: skip
            return 1
        versions[version] = digest
        RECORD.write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
