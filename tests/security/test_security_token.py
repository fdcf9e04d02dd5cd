"""The optional bearer token: every learner call needs it, health stays open, reflection follows the token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from certs import Pki, make_pki
from conftest import free_ports
from pydantic import ValidationError
from security_kit import (
    SERVICE,
    SERVING,
    SecuredLearner,
    eventually,
    health_status,
    learner_stub,
    parts_for,
    rpc_code,
    venv_tool,
)

from backend_client import LearnerClient, LearnerError
from backend_client.local_fleet import wait_until_serving
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_learner import Settings
from colearn_runtime.transport_security import ClientSecurity

TOKEN = "s3cr3t-fleet-token"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def learner() -> Iterator[SecuredLearner]:
    with SecuredLearner(auth_token=TOKEN) as learner:
        learner.stub(ClientSecurity(auth_token=TOKEN)).MLSetup(
            pb.MLSetupRequest(dataloader_name="DIGITS", model_name="SKLEARN_DIGITS"), timeout=60
        )
        yield learner


def every_kind_of_call(stub: pb_grpc.LearnerStub, metadata: list[tuple[str, str]]) -> dict[str, object]:
    """One call of each shape (unary, server stream, client stream), each with ``metadata``."""
    part = parts_for(b"not weights")
    return {
        "unary": lambda: stub.GetStatus(pb.GetStatusRequest(), timeout=10, metadata=metadata),
        "server-stream": lambda: stub.GetCurrentWeights(
            pb.GetCurrentWeightsRequest(), timeout=10, metadata=metadata
        ),
        "client-stream": lambda: stub.SetWeights(iter(part), timeout=10, metadata=metadata),
    }


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([], id="no-token"),
        pytest.param([("authorization", "Bearer wrong-token")], id="wrong-token"),
        pytest.param([("authorization", f"Bearer {TOKEN[:-1]}")], id="a-prefix-of-the-token"),
        pytest.param([("authorization", f"Bearer {TOKEN}x")], id="the-token-and-more"),
        pytest.param([("authorization", f"Basic {TOKEN}")], id="another-scheme"),
        pytest.param([("authorization", TOKEN)], id="no-scheme"),
        pytest.param([("x-token", f"Bearer {TOKEN}")], id="another-header"),
    ],
)
def test_calls_without_the_right_token_are_unauthenticated(
    learner: SecuredLearner, metadata: list[tuple[str, str]]
) -> None:
    stub = learner.stub()
    before = stub.GetStatus(
        pb.GetStatusRequest(), timeout=10, metadata=[("authorization", f"Bearer {TOKEN}")]
    )
    for kind, call in every_kind_of_call(stub, metadata).items():
        code, details = rpc_code(call)
        assert code == UNAUTHENTICATED, (kind, code, details)
        assert "authorization: Bearer" in details and TOKEN not in details
    # The refused SetWeights never reached the model (it would have been INVALID_ARGUMENT there).
    after = stub.GetStatus(pb.GetStatusRequest(), timeout=10, metadata=[("authorization", f"Bearer {TOKEN}")])
    assert after == before


def test_the_right_token_works_for_every_kind_of_call(learner: SecuredLearner) -> None:
    stub = learner.stub()
    for kind, call in every_kind_of_call(stub, [("authorization", f"bearer {TOKEN}")]).items():
        code, details = rpc_code(call)
        # In: the garbage SetWeights gets as far as the weights check.
        expected = grpc.StatusCode.INVALID_ARGUMENT if kind == "client-stream" else grpc.StatusCode.OK
        assert code == expected, (kind, code, details)


def test_the_backend_client_sends_the_token_on_every_call(learner: SecuredLearner) -> None:
    with LearnerClient("learner-0", learner.address, security=ClientSecurity(auth_token=TOKEN)) as client:
        assert client.get_version()
        assert client.get_status().ready
        proposal = client.mli_propose_weights()
        assert client.mli_test_weights(proposal).vote is not None
        client.mli_accept_weights(proposal)
    with LearnerClient("learner-0", learner.address) as tokenless:
        with pytest.raises(LearnerError) as refused:
            tokenless.get_status()
        assert refused.value.code == UNAUTHENTICATED


def test_health_stays_open_without_a_token(learner: SecuredLearner) -> None:
    assert health_status(learner.address) == SERVING
    assert health_status(learner.address, SERVICE) == SERVING


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_tool("grpcurl"), "-max-time", "30", *args], capture_output=True, text=True, timeout=60
    )


def test_reflection_follows_the_token(learner: SecuredLearner) -> None:
    denied = grpcurl("-plaintext", learner.address, "list")
    assert denied.returncode != 0
    assert "Unauthenticated" in denied.stderr
    allowed = grpcurl("-plaintext", "-H", f"authorization: Bearer {TOKEN}", learner.address, "list")
    assert allowed.returncode == 0, allowed.stderr
    assert SERVICE in allowed.stdout.split()
    called = grpcurl(
        "-plaintext", "-H", f"authorization: Bearer {TOKEN}", learner.address, f"{SERVICE}/GetStatus"
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["ready"] is True
    # Health through grpcurl needs no token; grpcurl finds its schema only through reflection, so it
    # is given the token for reflection alone.
    health = grpcurl(
        "-plaintext",
        "-reflect-header",
        f"authorization: Bearer {TOKEN}",
        "-d",
        '{"service": ""}',
        learner.address,
        "grpc.health.v1.Health/Check",
    )
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}


def test_token_and_mtls_together_through_grpcurl(tmp_path: Path) -> None:
    pki: Pki = make_pki(tmp_path)
    tls = ["-cacert", str(pki.ca), "-cert", str(pki.client.cert), "-key", str(pki.client.key)]
    with SecuredLearner(
        tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=pki.ca, auth_token=TOKEN
    ) as learner:
        denied = grpcurl(*tls, learner.address, "list")
        assert denied.returncode != 0 and "Unauthenticated" in denied.stderr
        allowed = grpcurl(*tls, "-H", f"authorization: Bearer {TOKEN}", learner.address, "list")
        assert allowed.returncode == 0, allowed.stderr
        assert SERVICE in allowed.stdout.split()


@pytest.mark.parametrize("token", ["", " ", "two words", "tab\there", "caf\u00e9"], ids=repr)
def test_a_token_that_cannot_travel_in_a_header_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="auth token"):
        Settings(auth_token=token)


def test_serve_n_hands_the_token_to_its_children_in_their_environment(tmp_path: Path) -> None:
    port = free_ports(2)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    command = [
        sys.executable, "-m", "colearn_learner", "serve-n", "--n_learners=1", "--host=127.0.0.1",
        f"--port={port}", "--metrics-port=0", f"--health-port={port + 1}", f"--auth_token={TOKEN}",
    ]  # fmt: skip
    log = (tmp_path / "serve-n.log").open("w+")
    parent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean)
    try:
        wait_until_serving(f"127.0.0.1:{port + 1}", timeout=60)  # the child's plaintext health port
        child_pid = int(eventually(lambda: _child_pid(tmp_path / "serve-n.log")))
        child_command = Path(f"/proc/{child_pid}/cmdline").read_bytes()
        assert b"serve" in child_command and TOKEN.encode() not in child_command
        assert TOKEN.encode() in Path(f"/proc/{child_pid}/environ").read_bytes()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = learner_stub(channel)
            assert rpc_code(lambda: stub.GetStatus(pb.GetStatusRequest(), timeout=10))[0] == UNAUTHENTICATED
            metadata = [("authorization", f"Bearer {TOKEN}")]
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=10, metadata=metadata).ready is False
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(60)
        log.close()


def _child_pid(log: Path) -> str:
    for line in log.read_text().splitlines():
        if line.startswith("learner 0: pid "):
            return line.split()[3]
    return ""
