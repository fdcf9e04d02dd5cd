"""Helpers for the security tests: learners with TLS, tokens and limits, on 127.0.0.1, and a tiny model;
plus (re-exported) the wire helpers of tests/wire_kit.py that the learner and reliability tests share.

Not a test module; the security test modules import it by name (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wire_kit import (  # noqa: F401  (re-exported for the security tests)
    MIB,
    NOT_SERVING,
    SERVICE,
    SERVING,
    learner_stub,
    params,
    parts_for,
    rpc_code,
    venv_tool,
    write_plugin,
)

from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_learner import ExampleMliFactory, GRPCServer, Settings
from colearn_learner.registry import ModelRegistry
from colearn_runtime.transport_security import ClientSecurity

SEC_DATA = "SEC_DATA"
SEC_MODEL = "SEC_MODEL"


class SecuredLearner:
    """One in-process learner; ``channel(...)`` and ``stub(...)`` connect to it with any client security."""

    def __init__(self, **settings: Any) -> None:
        base: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "grace_seconds": 1.0}
        factory = ExampleMliFactory(registries=[SIZED])
        self.server = GRPCServer(mli_factory=factory, settings=Settings(**{**base, **settings}))
        self.server.start()
        self.address = f"127.0.0.1:{self.server.port}"
        self._channels: list[grpc.Channel] = []

    def channel(self, security: ClientSecurity | None = None) -> grpc.Channel:
        # A connection of its own: channels to one address otherwise share one (a global subchannel pool).
        channel = (security or ClientSecurity()).channel(
            self.address, [("grpc.use_local_subchannel_pool", 1)]
        )
        self._channels.append(channel)
        return channel

    def stub(self, security: ClientSecurity | None = None) -> pb_grpc.LearnerStub:
        return learner_stub(self.channel(security))

    @property
    def health_address(self) -> str:
        return f"127.0.0.1:{self.server.health_port}"

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.server.stop(grace=0)

    def __enter__(self) -> SecuredLearner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def health_status(address: str, service: str = "", security: ClientSecurity | None = None) -> int:
    with (security or ClientSecurity()).channel(address, []) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def current_weights(stub: pb_grpc.LearnerStub) -> bytes:
    return b"".join(p.data for p in stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=60))


def eventually(probe: Callable[[], Any], seconds: float = 30.0) -> Any:
    """Polls ``probe`` until it returns something truthy (a wait for an event, not a timing claim)."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def stalled_stream(first: pb.WeightsPart, release: threading.Event) -> Iterator[pb.WeightsPart]:
    """Sends one part, then goes quiet until ``release`` is set (a hung or hostile sender)."""
    yield first
    release.wait(60)


# --- a tiny numpy model whose size the test picks --------------------------------------------------------


class SizedMli(MachineLearningInterface):
    def __init__(self, size: int) -> None:
        self.w = np.zeros(size, np.float32)

    def mli_propose_weights(self) -> Weights:
        return Weights({"w": self.w + 1})

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        return ProposedWeights(weights=weights, vote_score=1.0, test_score=1.0, vote=True, criterion="sized")

    def mli_accept_weights(self, weights: Weights) -> None:
        self.w = np.array(weights.weights["w"])

    def mli_get_current_weights(self) -> Weights:
        return Weights({"w": self.w.copy()})


#: ``SEC_MODEL`` on ``SEC_DATA(size)``, in a registry of its own that every ``SecuredLearner`` serves.
SIZED = ModelRegistry()


@SIZED.register_dataloader(SEC_DATA)
def sec_data(size: int = 16) -> int:
    return size


@SIZED.register_model_architecture(SEC_MODEL, [SEC_DATA])
def sec_model(size: int) -> SizedMli:
    return SizedMli(size)


def sized_setup(size: int = 16) -> pb.MLSetupRequest:
    return pb.MLSetupRequest(
        dataloader_name=SEC_DATA, dataloader_parameters=params(size=size), model_name=SEC_MODEL
    )
