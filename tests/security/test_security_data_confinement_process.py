"""Data confinement in a real learner process configured the way an operator does it: every setting from
``COLEARN_*`` variables (data root, TLS with client certificates, token, health port).

tests/learner/test_learner_data_confinement.py covers every path shape in-process; this adds the
process, the environment, and the refusal as a backend client sees it through mTLS and the token.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from certs import make_pki
from conftest import free_ports
from security_kit import SERVING, health_status, write_plugin

from backend_client import LearnerClient, LearnerError
from backend_client.local_fleet import wait_until_serving
from colearn_runtime.transport_security import ClientSecurity

TOKEN = "confined-learner-token"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("confined")
    root, secret = base / "data_root", base / "secret"
    for folder in (root / "learner0", secret):
        folder.mkdir(parents=True)
    np.savez(root / "learner0" / "data.npz", x=np.arange(4, dtype=np.float32))
    np.savez(secret / "data.npz", x=np.full(4, 99, dtype=np.float32))
    (root / "escape").symlink_to(secret, target_is_directory=True)
    write_plugin(base, "files_plugin", "CONFINED")
    return {"base": base, "root": root, "secret": secret}


@pytest.fixture(scope="module")
def client(layout: dict[str, Path]) -> Iterator[tuple[LearnerClient, str]]:
    """A learner process with everything from the environment, and a backend client with mTLS and token."""
    pki = make_pki(layout["base"] / "pki")
    port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(layout["base"]), os.environ.get("PYTHONPATH")])),
        COLEARN_HOST="127.0.0.1",
        COLEARN_PORT=str(port),
        COLEARN_HEALTH_PORT=str(port + 1),
        COLEARN_METRICS_PORT="0",
        COLEARN_DATA_ROOT=str(layout["root"]),
        COLEARN_TLS_CERT=str(pki.server.cert),
        COLEARN_TLS_KEY=str(pki.server.key),
        COLEARN_TLS_CLIENT_CA=str(pki.ca),
        COLEARN_AUTH_TOKEN=TOKEN,
        COLEARN_PLUGINS="files_plugin",
    )
    log = (layout["base"] / "learner.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "colearn_learner", "serve"], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    log.close()
    security = ClientSecurity(
        tls_ca=pki.ca, tls_cert=pki.client.cert, tls_key=pki.client.key, auth_token=TOKEN
    )
    learner = LearnerClient("confined", f"127.0.0.1:{port}", security=security)
    try:
        wait_until_serving(f"127.0.0.1:{port + 1}", timeout=60)  # the plaintext health port
        learner.start()
        yield learner, f"127.0.0.1:{port + 1}"
    finally:
        learner.stop()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def setup(learner: LearnerClient, location: str) -> str:
    data = json.dumps({"location": location})
    return learner.setup_ml("CONFINED_FILES", data, "CONFINED_FILES_MODEL", "{}")


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("{secret}", id="absolute-path-outside"),
        pytest.param("../secret", id="dotdot"),
        pytest.param("learner0/../../secret", id="dotdot-after-a-folder"),
        pytest.param("escape", id="symlink-that-escapes"),
    ],
)
def test_locations_outside_the_data_root_are_permission_denied(
    client: tuple[LearnerClient, str], layout: dict[str, Path], location: str
) -> None:
    learner, health_address = client
    with pytest.raises(LearnerError) as refused:
        setup(learner, location.format(secret=layout["secret"]))
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "data root" in refused.value.details
    assert health_status(health_address) == SERVING


def test_a_location_inside_the_data_root_is_loaded(client: tuple[LearnerClient, str]) -> None:
    learner, _ = client
    assert setup(learner, "learner0")
    status = learner.get_status()
    assert status.ready and status.dataloader_name == "CONFINED_FILES"
