"""Helpers for the learner tests: real servers on 127.0.0.1, hand-built weight streams, tiny numpy models.

Not a test module. The learner test modules import it by name (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import grpc
import numpy as np
from conftest import digits_setup, free_port  # noqa: F401  (re-exported for the learner tests)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field

from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_learner import ExampleMliFactory, FactoryRegistry, GRPCServer, Settings

MIB = 1024 * 1024
SERVICE = "colearn.v1.Learner"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
VENV_BIN = Path(sys.executable).parent


def venv_tool(name: str) -> str:
    """A console script of this venv (grpcurl, colearn-learner), found next to the running interpreter."""
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    assert found, f"{name} is not installed in {VENV_BIN}"
    return found


class Learner:
    """One in-process learner with a channel and stubs; a context manager that always stops it."""

    def __init__(self, metrics: bool = False, **settings: Any) -> None:
        base: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": free_port() if metrics else 0,
            "grace_seconds": 1.0,
        }
        self.server = GRPCServer(mli_factory=ExampleMliFactory(), settings=Settings(**{**base, **settings}))
        self.server.start()
        self.address = f"127.0.0.1:{self.server.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.LearnerStub(self.channel)
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


def rpc_code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """Runs a call and returns its status code and details (OK and "" when it succeeds)."""
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def joined(parts: Iterable[pb.WeightsPart]) -> bytes:
    return b"".join(p.data for p in parts)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parts_for(
    data: bytes,
    *,
    chunk: int = 1000,
    sha256: str | None = None,
    proposal_id: str = "",
    encoding: str = "safetensors",
    total: int | None = None,
) -> list[pb.WeightsPart]:
    """Cuts a buffer into parts of ``chunk`` bytes, with a header in the first; every field overridable."""
    total = len(data) if total is None else total
    offsets = list(range(0, len(data), chunk)) or [0]
    parts = [pb.WeightsPart(offset=o, total_bytes=total, data=data[o : o + chunk]) for o in offsets]
    parts[0].header.CopyFrom(
        pb.WeightsHeader(
            proposal_id=proposal_id, encoding=encoding, sha256=sha256_hex(data) if sha256 is None else sha256
        )
    )
    return parts


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
    """Registers tiny dataloaders and models for the duration of a test module, then removes them again,
    so that no other test module sees them in ``QuerySupportedSystem``."""

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

    def register(self) -> None:
        reg = FactoryRegistry
        instances, gate, loaded = self.instances, self.gate, self.loaded_locations

        @reg.register_dataloader(self.TINY_DATA)
        def tiny_data(size: Annotated[int, Field(ge=1, le=64)] = 3) -> int:
            return size

        @reg.register_dataloader(self.TINY_FILES)
        def tiny_files(location: str, scale: float = 1.0) -> np.ndarray:
            loaded.append(location)
            with np.load(Path(location) / "data.npz") as npz:
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
            mli = TinyMli({"w": np.zeros(size, np.float32)}, gate=gate)
            instances.append(mli)
            return mli

    def unregister(self) -> None:
        for name in (self.TINY_DATA, self.TINY_FILES):
            FactoryRegistry.dataloaders.pop(name, None)
        for name in (self.TINY_MODEL, self.TINY_SCALAR_MODEL, self.TINY_FILE_MODEL, self.TINY_GATED_MODEL):
            FactoryRegistry.model_architectures.pop(name, None)


@contextlib.contextmanager
def tiny_models() -> Iterator[TinyRegistry]:
    registry = TinyRegistry()
    registry.register()
    try:
        yield registry
    finally:
        registry.gate.set()
        registry.unregister()


def write_plugin(folder: Path, module: str, prefix: str, propose_delay: float = 0.0) -> Path:
    """Writes a plugin module that registers ``{prefix}_DATA`` and ``{prefix}_MODEL`` (trivial numpy MLI)."""
    source = textwrap.dedent(
        f'''
        """A test plugin: a trivial numpy model whose proposals take {propose_delay} s."""
        import time

        import numpy as np

        from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
        from colearn_learner.registry import FactoryRegistry


        class PluginMli(MachineLearningInterface):
            def __init__(self, size):
                self.w = np.zeros(size, np.float32)

            def mli_propose_weights(self):
                time.sleep({propose_delay!r})
                return Weights(self.w + 1)

            def mli_test_weights(self, weights):
                return ProposedWeights(weights=weights, vote_score=1.0, test_score=1.0, vote=True)

            def mli_accept_weights(self, weights):
                self.w = np.array(weights.weights)

            def mli_get_current_weights(self):
                return Weights(self.w.copy())


        @FactoryRegistry.register_dataloader("{prefix}_DATA")
        def plugin_data(size: int = 4):
            return size


        @FactoryRegistry.register_model_architecture("{prefix}_MODEL", ["{prefix}_DATA"])
        def plugin_model(size, scale: float = 1.0):
            return PluginMli(size)
        '''
    )
    path = folder / f"{module}.py"
    path.write_text(source)
    return path
