"""NOTES.txt, which `helm install` prints: how to reach a learner with grpcurl, with the flags it needs."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helm_kit import notes
from wire_kit import venv_tool

from colearn_learner import GRPCServer

TLS = {"enabled": True, "secretName": "learner-tls"}


def grpcurl_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("grpcurl ")]


def test_plaintext_fleet_notes_port_forward_and_probe_with_plaintext_grpcurl() -> None:
    text = notes()
    assert "kubectl --namespace colearn port-forward pod/fleet-learner-0 9995:9995" in text
    lines = grpcurl_lines(text)
    assert "grpcurl -plaintext 127.0.0.1:9995 list" in lines
    assert "grpcurl -plaintext 127.0.0.1:9995 grpc.health.v1.Health/Check" in lines
    assert "fleet-learner-<i>.fleet-learner.colearn.svc.cluster.local:9995" in text
    assert "helm test fleet --namespace colearn --logs" in text


def test_tls_notes_use_the_ca_and_the_learners_name_and_the_health_port_stays_plaintext() -> None:
    text = notes({"tls": TLS})
    assert "get secret learner-tls -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt" in text
    on_grpc = [line for line in grpcurl_lines(text) if "127.0.0.1:9995" in line]
    assert len(on_grpc) == 3
    authority = "fleet-learner-0.fleet-learner.colearn.svc.cluster.local"
    for line in on_grpc:
        assert "-plaintext" not in line
        assert f"-cacert ca.crt -authority {authority}" in line
        assert "-cert " not in line  # no mTLS asked for
    assert "grpcurl -plaintext 127.0.0.1:9996 grpc.health.v1.Health/Check" in grpcurl_lines(text)
    named = notes({"tls": {**TLS, "serverName": "learners.internal"}})
    assert "grpcurl -cacert ca.crt -authority learners.internal 127.0.0.1:9995 list" in grpcurl_lines(named)


def test_mtls_and_token_notes_add_the_client_certificate_and_the_header() -> None:
    tls = {**TLS, "mtls": True, "clientSecretName": "backend-tls"}
    text = notes({"tls": tls, "auth": {"existingSecret": "fleet-token"}})
    assert "get secret backend-tls -o jsonpath='{.data.tls\\.key}'" in text
    assert re.search(
        r"TOKEN=\$\(kubectl --namespace colearn get secret fleet-token .*\{\.data\.token\}", text
    )
    for line in grpcurl_lines(text):
        if "127.0.0.1:9995" in line:
            assert "-cert client.crt -key client.key" in line
            assert '-H "authorization: Bearer $TOKEN"' in line
    plain = notes({"auth": {"existingSecret": "fleet-token"}})
    assert 'grpcurl -plaintext -H "authorization: Bearer $TOKEN" 127.0.0.1:9995 list' in grpcurl_lines(plain)


# -- the printed commands work against a real learner --------------------------------------------------


def _write_pki(folder: Path) -> tuple[Path, Path]:
    """A CA, a learner certificate for *.fleet-learner.colearn.svc.cluster.local (the name the chart's
    README asks for) and a client certificate; the client's files under the names NOTES.txt uses."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[str, ec.EllipticCurvePrivateKey],
        *extensions: tuple[x509.ExtensionType, bool],
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer[1], hashes.SHA256())

    def save(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            key_bytes = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            path.with_suffix(".key").write_bytes(key_bytes)

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = issue(
        "fleet CA", ca_key, ("fleet CA", ca_key), (x509.BasicConstraints(ca=True, path_length=0), True)
    )
    leaf = (x509.BasicConstraints(ca=False, path_length=None), True)
    wildcard = x509.SubjectAlternativeName([x509.DNSName("*.fleet-learner.colearn.svc.cluster.local")])
    server_auth = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    client_auth = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    server = issue("learner", server_key, ("fleet CA", ca_key), leaf, (wildcard, False), (server_auth, False))
    client = issue("backend", client_key, ("fleet CA", ca_key), leaf, (client_auth, False))
    save(folder / "ca.crt", ca)
    save(folder / "client.crt", client, client_key)
    server_dir = folder / "server"
    server_dir.mkdir()
    save(server_dir / "tls.crt", server, server_key)
    return server_dir / "tls.crt", server_dir / "tls.key"


def _paste(
    line: str, server: GRPCServer, folder: Path, token: str, connect_timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    """Runs a NOTES.txt grpcurl line in a shell, its port-forwarded ports swapped for the local learner's.
    (A refused handshake makes grpcurl retry until its connect timeout.)"""
    command = line.replace("127.0.0.1:9995", f"127.0.0.1:{server.port}")
    command = command.replace("127.0.0.1:9996", f"127.0.0.1:{server.health_port}")
    timeouts = f"-connect-timeout {connect_timeout} -max-time 20"
    command = command.replace("grpcurl ", f"{venv_tool('grpcurl')} {timeouts} ", 1)
    env = {**os.environ, "TOKEN": token}
    return subprocess.run(
        ["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=60
    )


def test_printed_grpcurl_commands_work_against_a_real_mtls_learner(
    start_server: Callable[..., GRPCServer], tmp_path: Path
) -> None:
    """What an operator pastes, run in a folder holding the files NOTES.txt's kubectl lines would write."""
    cert, key = _write_pki(tmp_path)
    token = "s3cret-token"
    server = start_server(
        tls_cert=cert, tls_key=key, tls_client_ca=tmp_path / "ca.crt", auth_token=token, health_port=0
    )
    tls = {**TLS, "mtls": True, "clientSecretName": "backend-tls"}
    lines = grpcurl_lines(notes({"tls": tls, "auth": {"existingSecret": "fleet-token"}}))
    assert len(lines) == 4
    outputs = []
    for line in lines:
        done = _paste(line, server, tmp_path, token)
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        outputs.append(done.stdout)
    assert "colearn.v1.Learner" in outputs[0]  # list
    assert '"status": "SERVING"' in outputs[1] and '"status": "SERVING"' in outputs[3]  # TLS and health port
    # Without the client certificate the learner refuses the call: the flags are needed, not decoration.
    without_cert = lines[0].replace("-cert client.crt -key client.key ", "")
    assert _paste(without_cert, server, tmp_path, token, connect_timeout=1).returncode != 0
