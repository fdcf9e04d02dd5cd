"""The API server's own validation of every rendered object, for the default values and every example.

``helm template | kubectl apply --dry-run=server --validate=strict``: the real schemas (unknown fields fail),
defaulting and admission, Pod Security's restricted profile included in the restricted namespace. Nothing
is created: this is the command an operator runs against a cluster before installing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from k8s_kit import (
    EXAMPLES,
    Cluster,
    Namespace,
    ensure_monitoring_crds,
    needs_monitoring_crds,
    ref,
    render,
    values_of,
)

VALUE_SETS: list[Path | None] = [None, *EXAMPLES]


def value_id(values_file: Path | None) -> str:
    return values_file.stem if values_file else "default"


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=value_id)
def test_api_server_accepts_every_rendered_object(
    cluster: Cluster, namespace: Namespace, values_file: Path | None
) -> None:
    if needs_monitoring_crds(values_of(values_file)):
        ensure_monitoring_crds(cluster)
    manifest, docs = render(cluster, namespace.name, values_file)

    done = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace.name, "-f", "-", input=manifest
    )

    assert done.returncode == 0, f"the API server refused the rendered objects:\n{done.stderr}"
    # A Pod Security violation of a workload is a warning, not an error: any warning counts here.
    assert "violate" not in done.stderr and "Warning" not in done.stderr, done.stderr
    accepted = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(docs), (
        f"{len(docs)} objects rendered ({', '.join(ref(d) for d in docs)}), "
        f"{len(accepted)} accepted:\n{done.stdout}"
    )
