"""TLS and mTLS on the learner port, the plaintext health-only port, and refusing to start or connect
when a configured TLS file cannot be used. Certificates come from ``certs.py`` (the cryptography library).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from certs import Pki, make_pki
from conftest import free_port
from security_kit import (
    NOT_SERVING,
    SERVICE,
    SERVING,
    SecuredLearner,
    health_status,
    rpc_code,
    venv_tool,
)

from backend_client import LearnerClient, collective_learning_round, initial_result, set_equal_weights
from backend_client.learner_client import Deadlines
from colearn_contract.v1 import learner_pb2 as pb
from colearn_runtime.transport_security import ClientSecurity, TransportSecurityError

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls(pki: Pki) -> Iterator[SecuredLearner]:
    """A learner that requires client certificates signed by the fleet CA, with a plaintext health port."""
    with SecuredLearner(
        tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=pki.ca, health_port=0
    ) as learner:
        yield learner


def backend(pki: Pki, **changes: object) -> ClientSecurity:
    """The backend's identity: trusts the fleet CA and presents the fleet-signed client certificate."""
    fields: dict[str, object] = {"tls_ca": pki.ca, "tls_cert": pki.client.cert, "tls_key": pki.client.key}
    return ClientSecurity(**{**fields, **changes})


def version(learner: SecuredLearner, security: ClientSecurity | None) -> tuple[grpc.StatusCode, str]:
    stub = learner.stub(security)
    return rpc_code(lambda: stub.QueryVersion(pb.QueryVersionRequest(), timeout=10))


# --- who gets in --------------------------------------------------------------------------------------------


def test_mtls_happy_path_runs_rounds(pki: Pki) -> None:
    n = 3
    servers = [
        SecuredLearner(tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=pki.ca)
        for _ in range(n)
    ]
    learners = [
        LearnerClient(f"learner-{i}", s.address, security=backend(pki)) for i, s in enumerate(servers)
    ]
    try:
        for i, learner in enumerate(learners):
            learner.start()
            learner.setup_ml("DIGITS", json.dumps({"shard": i, "n_shards": n}), "SKLEARN_DIGITS", "{}")
        set_equal_weights(learners)
        assert initial_result(learners).test_scores
        results = [collective_learning_round(learners, 0.5, r) for r in range(2)]
        for result in results:
            assert result.errors == {} and not result.void  # every voter answered over mTLS
        digests = {learner.get_status().weights_sha256 for learner in learners}
        assert len(digests) == 1  # accepts and rejects kept the fleet in step
    finally:
        for learner in learners:
            learner.stop()
        for server in servers:
            server.close()


def test_a_client_without_a_certificate_is_rejected(pki: Pki, mtls: SecuredLearner) -> None:
    code, details = version(mtls, ClientSecurity(tls_ca=pki.ca))
    assert code == UNAVAILABLE, details
    assert version(mtls, backend(pki)) == (grpc.StatusCode.OK, "")  # the learner is unharmed


def test_a_certificate_from_another_ca_is_rejected(pki: Pki, mtls: SecuredLearner) -> None:
    intruder = backend(pki, tls_cert=pki.foreign_client.cert, tls_key=pki.foreign_client.key)
    code, details = version(mtls, intruder)
    assert code == UNAVAILABLE, details
    assert version(mtls, backend(pki))[0] == grpc.StatusCode.OK


def test_plaintext_to_a_tls_port_fails(mtls: SecuredLearner) -> None:
    code, details = version(mtls, None)
    assert code == UNAVAILABLE, details


def test_the_client_refuses_a_learner_its_ca_did_not_sign(pki: Pki) -> None:
    with SecuredLearner(tls_cert=pki.foreign_server.cert, tls_key=pki.foreign_server.key) as impostor:
        assert version(impostor, backend(pki))[0] == UNAVAILABLE
        # The same impostor is reachable for a client that trusts its CA: the refusal was the check.
        assert version(impostor, ClientSecurity(tls_ca=pki.foreign_ca))[0] == grpc.StatusCode.OK


def test_the_server_name_is_checked_against_the_certificate(pki: Pki, mtls: SecuredLearner) -> None:
    assert version(mtls, backend(pki, tls_server_name="localhost"))[0] == grpc.StatusCode.OK
    assert version(mtls, backend(pki, tls_server_name="learner-9.example"))[0] == UNAVAILABLE


def test_tls_without_a_client_ca_takes_clients_without_certificates(pki: Pki) -> None:
    with SecuredLearner(tls_cert=pki.server.cert, tls_key=pki.server.key) as learner:
        assert version(learner, ClientSecurity(tls_ca=pki.ca))[0] == grpc.StatusCode.OK
        assert version(learner, None)[0] == UNAVAILABLE  # still no plaintext


# --- the health-only port -----------------------------------------------------------------------------------


def test_the_health_port_answers_in_plaintext_while_the_main_port_is_tls(
    pki: Pki, mtls: SecuredLearner
) -> None:
    assert mtls.server.health_port not in (0, mtls.server.port)
    assert health_status(mtls.health_address) == SERVING
    # It shares the main port's health servicer: the model's readiness shows on both at once.
    with SecuredLearner(
        tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=pki.ca, health_port=0
    ) as fresh:
        assert health_status(fresh.health_address, SERVICE) == NOT_SERVING
        fresh.stub(backend(pki)).MLSetup(
            pb.MLSetupRequest(dataloader_name="DIGITS", model_name="SKLEARN_DIGITS"), timeout=60
        )
        assert health_status(fresh.health_address, SERVICE) == SERVING
        assert health_status(fresh.address, SERVICE, backend(pki)) == SERVING


def test_the_health_port_carries_no_learner_service(mtls: SecuredLearner) -> None:
    with grpc.insecure_channel(mtls.health_address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/QueryVersion",
            request_serializer=pb.QueryVersionRequest.SerializeToString,
            response_deserializer=pb.QueryVersionResponse.FromString,
        )
        code, _ = rpc_code(lambda: call(pb.QueryVersionRequest(), timeout=10))
        assert code == grpc.StatusCode.UNIMPLEMENTED
    listed = subprocess.run(
        [venv_tool("grpcurl"), "-plaintext", "-max-time", "30", mtls.health_address, "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert "grpc.health.v1.Health" in services
    assert SERVICE not in services


def learner_health(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    return subprocess.run(
        [venv_tool("colearn-learner"), "health", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_the_health_command_speaks_tls_and_the_health_port(pki: Pki, mtls: SecuredLearner) -> None:
    tls = [f"--tls_ca={pki.ca}", f"--tls_cert={pki.client.cert}", f"--tls_key={pki.client.key}"]
    result = learner_health(f"--address={mtls.address}", *tls)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SERVING" in result.stdout
    # From the environment: the CA, and the learner's own certificate as the client's (COLEARN_TLS_*).
    env = {"COLEARN_TLS_CA": str(pki.ca), "COLEARN_TLS_CERT": str(pki.client.cert)}
    env["COLEARN_TLS_KEY"] = str(pki.client.key)
    assert learner_health(f"--address={mtls.address}", env=env).returncode == 0
    # Plaintext against the TLS port fails; the health port needs no TLS at all.
    assert learner_health(f"--address={mtls.address}").returncode == 1
    assert learner_health(f"--address={mtls.health_address}").returncode == 0
    missing = learner_health(f"--address={mtls.address}", f"--tls_ca={pki.ca}.missing")
    assert missing.returncode != 0
    assert "cannot be read" in missing.stderr and "Traceback" not in missing.stderr


# --- files that cannot be used ------------------------------------------------------------------------------


def serve(*argv: str) -> subprocess.CompletedProcess[str]:
    """A `serve` that must fail at start-up; the timeout is a backstop for one that would serve."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    command = [venv_tool("colearn-learner"), "serve", "--host=127.0.0.1", "--port=0", "--metrics-port=0"]
    return subprocess.run([*command, *argv], capture_output=True, text=True, timeout=60, env=clean)


@pytest.mark.parametrize(
    ("flags", "mentions"),
    [
        pytest.param({"tls_cert": "{missing}", "tls_key": "{key}"}, "cannot be read", id="cert-missing"),
        pytest.param({"tls_cert": "{cert}", "tls_key": "{folder}"}, "cannot be read", id="key-unreadable"),
        pytest.param({"tls_cert": "{cert}", "tls_key": "{cert}"}, "no PEM private key", id="key-not-a-key"),
        pytest.param(
            {"tls_cert": "{cert}", "tls_key": "{key}", "tls_client_ca": "{missing}"},
            "tls_client_ca",
            id="client-ca-missing",
        ),
        pytest.param({"tls_key": "{key}"}, "go together", id="key-without-cert"),
        pytest.param({"tls_client_ca": "{ca}"}, "needs TLS", id="client-ca-without-tls"),
        pytest.param(
            {"health_port": "{port}", "port": "{port}"}, "health_port", id="health-port-is-the-port"
        ),
    ],
)
def test_an_unusable_tls_configuration_stops_the_learner_with_one_line(
    pki: Pki, tmp_path: Path, flags: dict[str, str], mentions: str
) -> None:
    values = {
        "missing": tmp_path / "no-such.pem",
        "folder": tmp_path,
        "cert": pki.server.cert,
        "key": pki.server.key,
        "ca": pki.ca,
        "port": free_port(),
    }
    result = serve(*(f"--{name}={value.format(**values)}" for name, value in flags.items()))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("colearn-learner: invalid configuration")
    assert mentions in lines[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_key_without_read_permission_stops_the_learner(pki: Pki, tmp_path: Path) -> None:
    key = tmp_path / "locked.key"
    key.write_bytes(pki.server.key.read_bytes())
    key.chmod(0)
    result = serve(f"--tls_cert={pki.server.cert}", f"--tls_key={key}")
    assert result.returncode != 0 and "cannot be read" in result.stderr


def test_the_client_refuses_to_connect_when_a_tls_file_is_missing(pki: Pki, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        listener.setblocking(False)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        client = LearnerClient(
            "learner-0", address, deadlines=Deadlines(connect=5), security=backend(pki, tls_ca=tmp_path / "x")
        )
        with pytest.raises(TransportSecurityError, match=r"TLS CA .* cannot be read"):
            client.start()
        # It raised before opening a channel, so nothing reached the port (plaintext least of all).
        with pytest.raises(BlockingIOError):
            listener.accept()
    with pytest.raises(TransportSecurityError, match="tls_cert and tls_key"):
        ClientSecurity(tls_ca=pki.ca, tls_cert=pki.client.cert)


def test_the_backend_cli_refuses_a_missing_ca_with_one_line(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLEARN_")}
    clean["COLUMNS"] = "400"  # rich wraps at the terminal's width; the message itself is one line
    result = subprocess.run(
        [
            venv_tool("colearn-backend"),
            "probe",
            f"--address=127.0.0.1:{free_port()}",
            f"--tls_ca={tmp_path}/ca",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be read" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        pytest.param({"tls_cert": Path("c.pem")}, "tls_cert and tls_key", id="cert-without-key"),
        pytest.param({"tls_key": Path("c.key")}, "tls_cert and tls_key", id="key-without-cert"),
        pytest.param({"tls_server_name": "learner-0"}, "needs TLS", id="server-name-without-tls"),
        pytest.param({"auth_token": "two words"}, "auth token", id="token-with-a-space"),
    ],
)
def test_a_client_configuration_that_cannot_work_is_refused_at_once(
    fields: dict[str, object], mentions: str
) -> None:
    with pytest.raises(TransportSecurityError, match=mentions):
        ClientSecurity(**fields)  # type: ignore[arg-type]


# --- colearn's own GRPCServer keywords --------------------------------------------------------------------


def test_colearns_encryption_keywords_serve_tls(pki: Pki) -> None:
    """colearn's ``GRPCServer(mli_factory, port, max_workers, enable_encryption, server_key, server_crt)``."""
    from colearn_learner import ExampleMliFactory, GRPCServer

    server = GRPCServer(
        ExampleMliFactory(), 0, host="127.0.0.1", max_workers=5,
        enable_encryption=True, server_key=str(pki.server.key), server_crt=str(pki.server.cert),
    ).start()  # fmt: skip
    try:
        assert server.settings.worker_threads == 5 and server.settings.tls_cert == pki.server.cert
        address = f"127.0.0.1:{server.port}"
        assert health_status(address, security=ClientSecurity(tls_ca=pki.ca)) == SERVING
        code, _ = rpc_code(lambda: health_status(address))  # plaintext is not served
        assert code == UNAVAILABLE
    finally:
        server.stop(grace=0)


@pytest.mark.parametrize("files", [{}, {"server_key": "k.pem"}, {"server_crt": "c.pem"}])
def test_encryption_asked_for_without_its_files_is_refused_never_plaintext(files: dict[str, str]) -> None:
    from colearn_learner import ExampleMliFactory, GRPCServer

    with pytest.raises(ValueError, match="enable_encryption needs server_key and server_crt"):
        GRPCServer(ExampleMliFactory(), 0, enable_encryption=True, **files)
