"""Helpers for tests that drive a learner the way a raw gRPC client or an operator does: call outcomes as
status codes, hand-framed weight streams, console scripts of this venv, plugin modules for learner
processes, and scripted learner servicers served on 127.0.0.1. tests/learner, tests/security,
tests/reliability and tests/backend share them.

Not a test module. It sits beside conftest.py, whose folder pytest puts on ``sys.path``, so every test
folder imports it by name.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc

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


@contextmanager
def serving(servicer: pb_grpc.LearnerServicer) -> Iterator[str]:
    """Serves a scripted learner servicer on 127.0.0.1 (a free port) and yields its address; the server is
    stopped, without grace, when the block ends."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_LearnerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=0).wait()


def rpc_code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """Runs a call and returns its status code and details (OK and "" when it succeeds)."""
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def params(**values: Any) -> struct_pb2.Struct:
    """Parameters as MLSetup carries them: a ``google.protobuf.Struct`` (which may hold NaN and infinities,
    as a hostile client's may)."""
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand (for bytes the generated code will not build)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_parameters(levels: int) -> bytes:
    """A Struct ``{"seed": [[[...]]]}`` nested ``levels`` lists deep, as bytes: protobuf will not build one
    deeper than its own limit, a hostile client may still send it."""
    inner = b""  # an empty ListValue
    for _ in range(levels):
        inner = length_delimited(1, length_delimited(6, inner))  # ListValue{values: [Value{list_value}]}
    return length_delimited(1, length_delimited(1, b"seed") + length_delimited(2, length_delimited(6, inner)))


def joined(parts: Iterable[pb.WeightsPart]) -> bytes:
    return b"".join(p.data for p in parts)


def learner_stub(channel: grpc.Channel) -> pb_grpc.LearnerStub:
    """The generated stub, except that its four weights methods take and give bare ``WeightsPart``
    messages: each is put into (or taken out of) its method's own message on the way, so that a test can
    frame a stream part by part. What crosses the wire is the contract's messages, byte for byte."""
    stub = pb_grpc.LearnerStub(channel)

    def path(method: str) -> str:
        return f"/{SERVICE}/{method}"

    def wrap(message: type) -> Callable[[Any], bytes]:
        def serialize(item: Any) -> bytes:
            return (item if isinstance(item, message) else message(part=item)).SerializeToString()

        return serialize

    def unwrap(message: type) -> Callable[[bytes], pb.WeightsPart]:
        return lambda data: message.FromString(data).part

    stub.ProposeWeights = channel.unary_stream(
        path("ProposeWeights"),
        request_serializer=pb.ProposeWeightsRequest.SerializeToString,
        response_deserializer=unwrap(pb.ProposeWeightsResponse),
    )
    stub.GetCurrentWeights = channel.unary_stream(
        path("GetCurrentWeights"),
        request_serializer=pb.GetCurrentWeightsRequest.SerializeToString,
        response_deserializer=unwrap(pb.GetCurrentWeightsResponse),
    )
    stub.TestWeights = channel.stream_unary(
        path("TestWeights"),
        request_serializer=wrap(pb.TestWeightsRequest),
        response_deserializer=pb.TestWeightsResponse.FromString,
    )
    stub.SetWeights = channel.stream_unary(
        path("SetWeights"),
        request_serializer=wrap(pb.SetWeightsRequest),
        response_deserializer=pb.SetWeightsResponse.FromString,
    )
    return stub


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parts_for(
    data: bytes | memoryview,
    *,
    chunk: int = 1000,
    sha256: str | None = None,
    proposal_id: str = "",
    encoding: int = pb.WEIGHTS_ENCODING_SAFETENSORS,
    total: int | None = None,
) -> list[pb.WeightsPart]:
    """Cuts a buffer into parts of ``chunk`` bytes, with a header in the first; every field overridable."""
    data = bytes(data)  # the codec hands out a read-only memoryview; protobuf takes bytes
    total = len(data) if total is None else total
    offsets = list(range(0, len(data), chunk)) or [0]
    parts = [pb.WeightsPart(offset=o, total_bytes=total, data=data[o : o + chunk]) for o in offsets]
    parts[0].header.CopyFrom(
        pb.WeightsHeader(
            proposal_id=proposal_id, encoding=encoding, sha256=sha256_hex(data) if sha256 is None else sha256
        )
    )
    return parts


def write_plugin(folder: Path, module: str, prefix: str, propose_delay: float = 0.0) -> Path:
    """Writes a plugin module with a trivial numpy model, for learner processes to load. It registers
    ``{prefix}_MODEL`` on ``{prefix}_DATA(size)`` (zero weights of that size), and ``{prefix}_FILES_MODEL``
    on ``{prefix}_FILES(location)`` (the weights are the array ``x`` of ``<location>/data.npz``)."""
    source = textwrap.dedent(
        f'''
        """A test plugin: a trivial numpy model whose proposals take {propose_delay} s."""
        import time
        from pathlib import Path

        import numpy as np

        from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
        from colearn_learner.registry import FactoryRegistry


        class PluginMli(MachineLearningInterface):
            def __init__(self, weights):
                self.w = np.asarray(weights, np.float32)

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
            return PluginMli(np.zeros(size))


        @FactoryRegistry.register_dataloader("{prefix}_FILES")
        def plugin_files(location: str):
            with np.load(Path(location) / "data.npz", allow_pickle=False) as npz:
                return npz["x"]


        @FactoryRegistry.register_model_architecture("{prefix}_FILES_MODEL", ["{prefix}_FILES"])
        def plugin_files_model(x):
            return PluginMli(x)
        '''
    )
    path = folder / f"{module}.py"
    path.write_text(source)
    return path
