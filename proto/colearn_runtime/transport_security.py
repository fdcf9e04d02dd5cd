"""TLS files and the bearer token, read and checked the same way by the learner and its clients.

A configured file that cannot be used is an error at once, never a quiet fall-back to plaintext: a
client that was told to use TLS either connects with TLS or does not connect at all.
"""

from __future__ import annotations

import logging
import re
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

_log = logging.getLogger(__name__)

#: The metadata key a bearer token travels in (gRPC metadata keys are lowercase).
AUTHORIZATION = "authorization"
#: Visible ASCII only: a token must fit an HTTP/2 header value unchanged, and spaces would split it.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


class TransportSecurityError(ValueError):
    """A TLS file or token that cannot be used; the message names the file and what is wrong."""


def read_certificates(path: Path, what: str) -> bytes:
    """PEM certificates (a chain or a CA bundle) from ``path``, or an error naming ``what`` they are for."""
    data = _read(path, what)
    if _CERTIFICATE not in data:
        raise TransportSecurityError(f"{what} {path} holds no PEM certificate")
    return data


def read_private_key(path: Path, what: str) -> bytes:
    data = _read(path, what)
    if not _PRIVATE_KEY.search(data):
        raise TransportSecurityError(f"{what} {path} holds no PEM private key")
    return data


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TransportSecurityError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def server_credentials(
    tls_cert: Path | None, tls_key: Path | None, tls_client_ca: Path | None = None
) -> grpc.ServerCredentials | None:
    """A server's TLS credentials from its files, read when it starts (they may have been rotated since
    its settings were checked); None when TLS is off. A client CA makes client certificates mandatory."""
    if tls_cert is None or tls_key is None:
        return None
    chain = read_certificates(tls_cert, "tls_cert")
    key = read_private_key(tls_key, "tls_key")
    client_ca = read_certificates(tls_client_ca, "tls_client_ca") if tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def check_token(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise TransportSecurityError(
            "the auth token must be non-empty visible ASCII without spaces (unset it to turn auth off)"
        )
    return token


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a learner: TLS when any TLS file is given, and a bearer token when one is.

    ``tls_ca`` is the CA bundle that signed the learners' certificates (without it the system's CAs are
    trusted); ``tls_cert`` and ``tls_key`` are the client's own certificate for learners that require
    one (mTLS); ``tls_server_name`` overrides the name checked against the learner's certificate.
    """

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    auth_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise TransportSecurityError("a client certificate needs both tls_cert and tls_key")
        if self.tls_server_name is not None and not self.tls:
            raise TransportSecurityError("tls_server_name needs TLS: give tls_ca or tls_cert and tls_key")
        if self.auth_token is not None:
            check_token(self.auth_token)

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads every configured file now; any one that is missing or wrong raises before a connection."""
        ca = read_certificates(self.tls_ca, "TLS CA") if self.tls_ca else None
        cert = read_certificates(self.tls_cert, "TLS client certificate") if self.tls_cert else None
        key = read_private_key(self.tls_key, "TLS client key") if self.tls_key else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel(self, address: str, options: list[tuple[str, Any]]) -> grpc.Channel:
        """A channel to ``address``: TLS or plaintext as configured, and the token on every call."""
        if self.tls:
            if self.tls_server_name:
                options = [*options, ("grpc.ssl_target_name_override", self.tls_server_name)]
            channel = grpc.secure_channel(address, self.credentials(), options=options)
        else:
            if self.auth_token is not None:
                _log.warning(
                    "sending the auth token to %s without TLS: anyone on the path can read it", address
                )
            channel = grpc.insecure_channel(address, options=options)
        if self.auth_token is None:
            return channel
        return grpc.intercept_channel(channel, BearerTokenClientInterceptor(self.auth_token))


class _CallDetails(
    namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerTokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call, plaintext or TLS alike.

    gRPC's own token call credentials refuse plaintext channels; a fleet behind a mesh that already
    encrypts may still want the token, so it travels as plain metadata on both kinds.
    """

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION, f"Bearer {check_token(token)}")

    def _with_token(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._with_token(details), requests)
