"""Helpers for the learner tests: real servers on 127.0.0.1 and tiny numpy models, plus (re-exported) the
wire helpers of tests/wire_kit.py that the security and reliability tests share.

Not a test module. The learner test modules import it by name (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import grpc
import numpy as np
from conftest import digits_setup, free_port  # noqa: F401  (re-exported for the learner tests)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field
from wire_kit import (  # noqa: F401  (re-exported for the learner tests)
    MIB,
    NOT_SERVING,
    SERVICE,
    SERVING,
    deep_parameters,
    joined,
    learner_stub,
    length_delimited,
    params,
    parts_for,
    rpc_code,
    sha256_hex,
    venv_tool,
    write_plugin,
)

from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner import ExampleMliFactory, GRPCServer, Settings
from colearn_learner.registry import ModelRegistry


class Learner:
    """One in-process learner with a channel and stubs; a context manager that always stops it."""

    def __init__(self, metrics: bool = False, **settings: Any) -> None:
        base: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": free_port() if metrics else 0,
            "grace_seconds": 1.0,
        }
        factory = ExampleMliFactory(registries=[TINY.registry])
        self.server = GRPCServer(mli_factory=factory, settings=Settings(**{**base, **settings}))
        self.server.start()
        self.address = f"127.0.0.1:{self.server.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = learner_stub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=0)

    def __enter__(self) -> Learner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def status(self) -> pb.GetStatusResponse:
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=30)

    def sha(self) -> str:
        return self.status().weights_sha256

    def health_of(self, service: str = "") -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30).status

    def propose(self) -> list[pb.WeightsPart]:
        return list(self.stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=120))

    def current(self) -> list[pb.WeightsPart]:
        return list(self.stub.GetCurrentWeights(pb.GetCurrentWeightsRequest(), timeout=60))


# --- tiny numpy models, registered by the tests that need them -------------------------------------------


class TinyMli(MachineLearningInterface):
    """A trivial numpy MLI: weights are a dict of arrays; proposing adds one; voting always approves.

    ``gate``, when given, blocks ``mli_propose_weights`` until it is set, so a test can hold a training step
    open for as long as it needs without sleeping.
    """

    def __init__(self, weights: dict[str, np.ndarray], gate: threading.Event | None = None) -> None:
        self.weights = weights
        self.gate = gate
        self.proposing = threading.Event()

    def mli_propose_weights(self) -> Weights:
        self.proposing.set()
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        return Weights({k: v + 1 for k, v in self.weights.items()})

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        return ProposedWeights(weights=weights, vote_score=1.0, test_score=0.5, vote=True, criterion="tiny")

    def mli_accept_weights(self, weights: Weights) -> None:
        self.weights = {k: np.array(v) for k, v in weights.weights.items()}

    def mli_get_current_weights(self) -> Weights:
        return Weights({k: v.copy() for k, v in self.weights.items()})


class TinyRegistry:
    """Tiny dataloaders and models in a registry of their own, which the testkit's learners serve (the
    process-wide ``FactoryRegistry`` is left alone). Their calls are recorded, and the gated model waits
    for ``gate``."""

    TINY_DATA = "TINY_DATA"
    TINY_FILES = "TINY_FILES"
    TINY_MODEL = "TINY_MODEL"
    TINY_SCALAR_MODEL = "TINY_SCALAR_MODEL"
    TINY_FILE_MODEL = "TINY_FILE_MODEL"
    TINY_GATED_MODEL = "TINY_GATED_MODEL"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.instances: list[TinyMli] = []
        self.loaded_locations: list[str] = []
        self.registry = reg = ModelRegistry()
        instances, loaded = self.instances, self.loaded_locations

        @reg.register_dataloader(self.TINY_DATA)
        def tiny_data(size: Annotated[int, Field(ge=1, le=64)] = 3) -> int:
            return size

        @reg.register_dataloader(self.TINY_FILES)
        def tiny_files(location: str, scale: float = 1.0) -> np.ndarray:
            loaded.append(location)
            with np.load(Path(location) / "data.npz", allow_pickle=False) as npz:
                return npz["x"] * scale

        @reg.register_model_architecture(self.TINY_MODEL, [self.TINY_DATA])
        def tiny_model(size: int, offset: float = 0.0) -> TinyMli:
            mli = TinyMli({"w": np.full(size, offset, np.float32)})
            instances.append(mli)
            return mli

        @reg.register_model_architecture(self.TINY_SCALAR_MODEL, [self.TINY_DATA])
        def tiny_scalar_model(size: int) -> TinyMli:
            # A bias kept as a 0-d array, as many real models keep scalars.
            return TinyMli({"w": np.zeros(size, np.float32), "bias": np.array(0.5, np.float32)})

        @reg.register_model_architecture(self.TINY_FILE_MODEL, [self.TINY_FILES])
        def tiny_file_model(data: np.ndarray) -> TinyMli:
            return TinyMli({"w": np.asarray(data, np.float32)})

        @reg.register_model_architecture(self.TINY_GATED_MODEL, [self.TINY_DATA])
        def tiny_gated_model(size: int) -> TinyMli:
            mli = TinyMli({"w": np.zeros(size, np.float32)}, gate=self.gate)
            instances.append(mli)
            return mli

    def reset(self) -> None:
        self.gate = threading.Event()
        self.instances.clear()
        self.loaded_locations.clear()


TINY = TinyRegistry()


@contextlib.contextmanager
def tiny_models() -> Iterator[TinyRegistry]:
    TINY.reset()
    try:
        yield TINY
    finally:
        TINY.gate.set()
