"""The cluster (one per session) and a fresh namespace per test, plain and Pod Security ``restricted``.

Collected only by ``make test-k8s`` (``pytest tests/k8s``). Without $KUBECONFIG reaching a server and without
the kit, every test here is skipped, for the one reason the header line gives. A private cluster is stopped by
stop.sh at the end of the session (also from an atexit hook when the session dies first); its data is wiped
when every test passed, and kept, with its logs in .k8s/state/logs, when one failed.
"""

from __future__ import annotations

import atexit
import itertools
import secrets
from collections.abc import Generator, Iterator

import pytest
from k8s_kit import (
    NO_CLUSTER,
    Cluster,
    Namespace,
    connect,
    create_namespace,
    delete_namespace,
    find_cluster,
    require_helm,
    stop_private,
)

_counter = itertools.count(1)


def pytest_report_header(config: pytest.Config) -> str:
    return find_cluster().describe()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Without a cluster, every test's skip names this file, so that ``-rs`` gives one line for them all."""
    report: pytest.TestReport = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and longrepr[2].endswith(NO_CLUSTER):
        report.longrepr = (__file__, 1, longrepr[2])
    return report


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    found = find_cluster()
    if not found.usable:  # one skip, cached with the fixture: one line for the whole folder with -rs
        pytest.skip(NO_CLUSTER)
    require_helm()
    if found.kubeconfig:
        yield connect(found)
        return
    kit = found.kit
    assert kit is not None
    atexit.register(stop_private, kit)  # a session that dies (or a start that is killed) before the end
    try:
        yield connect(found)
    finally:
        stop_private(kit, wipe=request.session.testsfailed == 0)
        atexit.unregister(stop_private)


@pytest.fixture(params=["plain", "restricted"])
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """A fresh namespace; ``restricted`` enforces (and warns about) Pod Security's restricted profile."""
    restricted = request.param == "restricted"
    name = f"colearn-k8s-{next(_counter):03d}-{'rst' if restricted else 'pln'}-{secrets.token_hex(3)}"
    ns = create_namespace(cluster, name, restricted)
    try:
        yield ns
    finally:
        delete_namespace(cluster, ns.name)
