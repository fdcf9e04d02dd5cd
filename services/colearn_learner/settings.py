"""One place for every learner setting: environment variables ``COLEARN_*``, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from colearn_contract.weight_stream import DEFAULT_PART_BYTES, MAX_PART_BYTES, MIB, MIN_PART_BYTES
from colearn_runtime.transport_security import (
    TransportSecurityError,
    check_token,
    read_certificates,
    read_private_key,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COLEARN_", extra="forbid", validate_default=True)

    host: str = Field("[::]", description="address to bind; [::] listens on every interface")
    port: int = Field(9995, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(9091, ge=0, le=65535, description="Prometheus port; 0 disables metrics")
    data_root: Path | None = Field(None, description="dataloader locations must resolve under this folder")
    worker_threads: int = Field(16, ge=2, le=1024, description="gRPC worker threads")
    max_message_bytes: int = Field(
        16 * MIB, ge=MAX_PART_BYTES + MIB, description="gRPC max send/receive message size"
    )
    max_weights_bytes: int = Field(4096 * MIB, ge=MIB, description="cap on a weights stream's total_bytes")
    part_bytes: int = Field(DEFAULT_PART_BYTES, ge=MIN_PART_BYTES, le=MAX_PART_BYTES)
    proposal_cache_size: int = Field(4, ge=1, le=64, description="proposals kept for AcceptProposal")
    grace_seconds: float = Field(10.0, ge=0, description="time in-flight calls get after SIGTERM")
    # Security (docs/reliability.md). TLS turns on when tls_cert and tls_key are set; tls_client_ca then
    # requires client certificates (mTLS). A configured file that cannot be read stops start-up.
    tls_cert: Path | None = Field(None, description="PEM server certificate chain; enables TLS with tls_key")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle; clients must present a cert it signed"
    )
    auth_token: SecretStr | None = Field(None, description="bearer token every learner RPC must carry")
    health_port: int | None = Field(
        None, ge=0, le=65535, description="plaintext port that serves only gRPC health (for probes under TLS)"
    )
    max_concurrent_streams: int = Field(64, ge=1, le=65536, description="HTTP/2 streams per connection")
    stream_timeout_seconds: float = Field(
        300.0, gt=0, description="server-side deadline of one weights stream; a stalled one is cut off"
    )
    # Faults: after every accept the weights are written here atomically, and set-up resumes from them.
    checkpoint_dir: Path | None = Field(None, description="folder for checkpoints; none keeps no checkpoint")
    plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="modules to import so that their registry decorators run"
    )

    @field_validator("plugins", mode="before")
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

    @property
    def bind_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        """The metrics port listens where gRPC does: ``[::]`` becomes ``::`` for the HTTP server."""
        return self.host.strip("[]")
