"""``colearn-backend health``: the standard gRPC health check of every learner, one line each.

What ``helm test`` runs in the cluster: it asks each learner's server (health service "") whether it
serves, over the same TLS and token settings as the rounds, and fails when any one does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from backend_client.fan_out import fan_out
from colearn_runtime.grpc_options import channel_options
from colearn_runtime.transport_security import ClientSecurity

_MESSAGE_BYTES = 1 << 20  # a health reply is a few bytes


@dataclass(frozen=True)
class Health:
    address: str
    status: str  # SERVING, NOT_SERVING, ... or the gRPC status code of a failed call
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def line(self) -> str:
        mark = "ok  " if self.serving else "FAIL"
        return f"{mark} {self.address} {self.status}" + (f": {self.detail}" if self.detail else "")


def check(address: str, security: ClientSecurity, timeout: float, service: str = "") -> Health:
    """One learner's health; a learner that cannot be reached is reported, not raised."""
    channel = security.channel(address, channel_options(_MESSAGE_BYTES))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=True
        )
        return Health(address, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        return Health(address, exc.code().name, (exc.details() or "")[:200])
    finally:
        channel.close()


def check_all(addresses: Sequence[str], security: ClientSecurity, timeout: float) -> list[Health]:
    """Every learner at once (``fan_out``), in the order given."""
    checked = fan_out(lambda i: check(addresses[i], security, timeout), range(len(addresses)))
    results = []
    for i in range(len(addresses)):
        health = checked[i]
        if isinstance(health, BaseException):
            raise health  # not a learner's answer (those are reported): a fault of this process
        results.append(health)
    return results
