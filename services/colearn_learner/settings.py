"""One place for every learner setting: environment variables ``COLEARN_*``, overridden by CLI flags.

The model is the only source: the CLI's flags and help, ``serve-n``'s hand-over to its learners and the
settings tables in the README and the chart's README are all made from its fields. The functions at the
end describe a field in words (its variable, default and limits) for the help and the tables.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from colearn_contract.weight_stream import DEFAULT_PART_BYTES, MAX_PART_BYTES, MIB, MIN_PART_BYTES
from colearn_runtime.ports import LEARNER_METRICS_PORT, LEARNER_PORT
from colearn_runtime.transport_security import (
    TransportSecurityError,
    check_token,
    read_certificates,
    read_private_key,
)

ENV_PREFIX = "COLEARN_"


class Settings(BaseSettings):
    """Every learner setting, once: its type, default, limits and description. The CLI flags of
    ``colearn-learner serve`` and ``serve-n``, their help and the settings tables of the README and the
    chart are made from these fields; give each new field a ``description``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    host: str = Field("[::]", description="address to bind; [::] listens on every interface")
    port: int = Field(LEARNER_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(
        LEARNER_METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 disables metrics"
    )
    data_root: Path | None = Field(
        None, description="dataloader locations must resolve under this folder, else PERMISSION_DENIED"
    )
    worker_threads: int = Field(16, ge=2, le=1024, description="gRPC worker threads")
    max_message_bytes: int = Field(
        16 * MIB,
        ge=MAX_PART_BYTES + MIB,
        description=f"gRPC max message size; weights travel in {MIN_PART_BYTES // MIB} to "
        f"{MAX_PART_BYTES // MIB} MiB parts",
    )
    max_weights_bytes: int = Field(
        4096 * MIB, ge=MIB, description="cap on a weights stream's declared total_bytes"
    )
    part_bytes: int = Field(
        DEFAULT_PART_BYTES,
        ge=MIN_PART_BYTES,
        le=MAX_PART_BYTES,
        description="size of the weight stream parts this learner sends",
    )
    proposal_cache_size: int = Field(4, ge=1, le=64, description="proposals kept for AcceptProposal")
    grace_seconds: float = Field(10.0, ge=0, description="time in-flight calls get after SIGTERM")
    # Security (docs/reliability.md). TLS turns on when tls_cert and tls_key are set; tls_client_ca then
    # requires client certificates (mTLS). A configured file that cannot be read stops start-up.
    tls_cert: Path | None = Field(
        None, description="PEM server certificate chain; with tls_key the learner port serves TLS only"
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle; clients must present a certificate it signed: mTLS"
    )
    auth_token: SecretStr | None = Field(
        None,
        description="bearer token every call except health must carry (UNAUTHENTICATED otherwise); "
        "prefer the variable to the flag, since any local user can read a command line",
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="plaintext port that serves only gRPC health (and its reflection), for probes under TLS",
    )
    max_concurrent_streams: int = Field(
        64,
        ge=1,
        le=65536,
        description="calls one client connection may have open; more wait in the client, or in a burst "
        "are refused with UNAVAILABLE, which clients retry",
    )
    stream_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="deadline for sending or receiving one weights stream; a stalled one is cut off",
    )
    # Faults: after every accept the weights are written here atomically, and set-up resumes from them.
    checkpoint_dir: Path | None = Field(
        None,
        description="after every accept the weights are written here atomically, and set-up with the same "
        "model, dataloader and parameters resumes from them; one folder per learner: serve-n makes a "
        "learner_<i> folder in it for each",
    )
    plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="modules to import before serving, so that their registry decorators run",
    )
    model_families: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="the installed model families to serve (names in the colearn.models entry-point group); "
        "empty serves every one: an image built for one family names it",
    )

    @field_validator("plugins", "model_families", mode="before")
    @classmethod
    def _split_plugins(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        if self.port and self.port == self.metrics_port:
            raise ValueError(f"port and metrics_port must differ (both are {self.port})")
        if self.health_port:
            for name in ("port", "metrics_port"):
                if self.health_port == getattr(self, name):
                    raise ValueError(f"health_port and {name} must differ (both are {self.health_port})")
        return self

    @field_validator("auth_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_token(value.get_secret_value())
            except TransportSecurityError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _usable_tls_files(self) -> Settings:
        """Every configured TLS file is read once here, so that a learner never starts without TLS it
        was asked for, nor with a file it will fail on at the first handshake."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both to turn TLS on, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs TLS on the learner port: set tls_cert and tls_key as well")
        try:
            if self.tls_cert is not None and self.tls_key is not None:
                read_certificates(self.tls_cert, "tls_cert")
                read_private_key(self.tls_key, "tls_key")
            if self.tls_client_ca is not None:
                read_certificates(self.tls_client_ca, "tls_client_ca")
        except TransportSecurityError as exc:
            raise ValueError(str(exc)) from None
        return self

    def updated(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, validated like any other setting: a port of -7 fails here."""
        if not changes:
            return self
        return type(self)(**{**self.model_dump(), **changes})

    def to_environment(self) -> dict[str, str]:
        """The ``COLEARN_*`` variables that give another process exactly these settings (the secret too:
        an environment, unlike a command line, is not readable by other users). Unset settings are left
        out, so that the variable is absent there as well."""
        environment = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = ",".join(value)
            environment[env_variable(name)] = str(value)
        return environment

    @property
    def bind_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        """The metrics port listens where gRPC does: ``[::]`` becomes ``::`` for the HTTP server."""
        return self.host.strip("[]")


# -- each field in words, for the CLI's help and the settings tables ---------------------------------------


def env_variable(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def value_type(field: FieldInfo) -> Any:
    """The field's type without ``| None``: ``int``, ``Path``, ``SecretStr``, ``list[str]``..."""
    kinds = [kind for kind in typing.get_args(field.annotation) if kind is not type(None)]
    if typing.get_origin(field.annotation) in (typing.Union, types.UnionType) and len(kinds) == 1:
        return kinds[0]
    return field.annotation


def is_secret(field: FieldInfo) -> bool:
    return value_type(field) is SecretStr


def is_list(field: FieldInfo) -> bool:
    return typing.get_origin(value_type(field)) is list


def _number(value: float) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    for unit, size in (("GiB", 1024 * MIB), ("MiB", MIB)):
        if value >= size and value % size == 0:
            return f"{value} ({value // size} {unit})"
    return str(value)


def default_text(field: FieldInfo) -> str | None:
    """The default as a person reads it; None where there is none, and for a secret."""
    if is_secret(field) or field.default_factory is not None or field.default is None:
        return None
    if isinstance(field.default, int | float) and not isinstance(field.default, bool):
        return _number(field.default)
    return str(field.default)


def limits_text(field: FieldInfo) -> str | None:
    """``0 to 65535``, ``at least 2``, ``above 0``: the field's constraints in words, or None."""
    bounds = {
        kind: getattr(rule, kind)
        for rule in field.metadata
        for kind in ("ge", "gt", "le")
        if getattr(rule, kind, None) is not None
    }
    if "ge" in bounds and "le" in bounds:
        return f"{_number(bounds['ge'])} to {_number(bounds['le'])}"
    words = {"ge": "at least", "gt": "above", "le": "at most"}
    return ", ".join(f"{words[kind]} {_number(value)}" for kind, value in bounds.items()) or None
