"""Figure (c): one 100 MB weights transfer through gRPC, as a share of raw TCP on 127.0.0.1.

The gRPC figures are timed on the client against a TOY learner process holding 100 MiB of float32:
``GetCurrentWeights`` (learner encodes and hashes, streams parts; the client checks and joins them) and
``SetWeights`` (the client streams parts; the learner checks, decodes and adopts). The baseline, measured in
the same run, moves the same number of bytes over a plain TCP socket to a server thread of this script.
A third line shows what gRPC-Python itself can stream: the same bytes as 2 MiB messages with no protobuf,
no hashing and no codec, between two processes, so that transport and codec costs can be told apart.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import HOST, LearnerProcesses, bench_env, free_port, probe_serving

from backend_client.learner_client import LearnerClient
from colearn_runtime.memory_reuse import reuse_freed_memory

MIB = 1024 * 1024
WEIGHTS_MB = 100.0
PART = 2 * MIB
TARGET_SHARE = ">= 0.3"
_CEILING_METHOD = "/bench.Ceiling/Pull"


class RawTcpSink:
    """A server thread that reads whole payloads into one preallocated buffer and acknowledges each."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._buffer = bytearray(size)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="raw-tcp-sink")
        self._stop = threading.Event()

    def __enter__(self) -> RawTcpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        view = memoryview(self._buffer)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                received = 0
                while received < self.size:
                    n = conn.recv_into(view[received:], self.size - received)
                    if n == 0:
                        break
                    received += n
                conn.sendall(b"k")

    def send(self, payload: bytes) -> float:
        start = time.perf_counter()
        with socket.create_connection((HOST, self.port)) as s:
            s.sendall(payload)
            if s.recv(1) != b"k":
                raise RuntimeError("raw TCP sink did not acknowledge")
        return time.perf_counter() - start


def ceiling_server(port: int, total: int) -> None:
    """A gRPC server streaming ``total`` bytes as 2 MiB messages with identity (de)serialisers."""
    from concurrent import futures

    chunk = bytes(PART)

    def pull(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            n = min(PART, total - sent)
            yield chunk if n == PART else chunk[:n]
            sent += n

    handler = grpc.method_handlers_generic_handler(
        "bench.Ceiling", {"Pull": grpc.unary_stream_rpc_method_handler(pull)}
    )
    opts = [("grpc.max_send_message_length", 16 * MIB), ("grpc.max_receive_message_length", 16 * MIB)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=opts)
    server.add_generic_rpc_handlers((handler,))
    from grpc_health.v1 import health, health_pb2_grpc

    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    server.wait_for_termination(timeout=600)


def pull_ceiling(channel: grpc.Channel) -> tuple[float, int]:
    pull = channel.unary_stream(_CEILING_METHOD)
    start = time.perf_counter()
    received = sum(len(m) for m in pull(b"", timeout=120))
    return time.perf_counter() - start, received


def throughput(size: int, seconds: list[float]) -> list[float]:
    return [size / MIB / s for s in seconds]


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    args = repetitions_parser(__doc__.splitlines()[0], default_runs=7, quick_runs=3).parse_args()
    runs = runs_from(args)
    get_s: list[float] = []
    set_s: list[float] = []
    tcp_s: list[float] = []
    ceiling_s: list[float] = []
    fleet = LearnerProcesses(1)
    client: LearnerClient | None = None
    ceiling: subprocess.Popen[bytes] | None = None
    try:
        fleet.start()
        client = LearnerClient("learner-0", fleet.addresses[0]).start()
        client.setup_ml("TOY", "{}", "TOY", json.dumps({"weights_mb": WEIGHTS_MB}))
        weights = client.mli_get_current_weights()  # warm-up, and the bytes every baseline moves
        size = weights.weights.size
        payload = weights.weights.data
        client.mli_accept_weights(weights)  # warm-up of SetWeights (no proposal id: a SetWeights)

        port = free_port()
        ceiling = subprocess.Popen(
            [sys.executable, __file__, "--ceiling-server", str(port), str(size)],
            env=bench_env(), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        probe_serving(f"{HOST}:{port}", 30)
        opts = [("grpc.max_receive_message_length", 16 * MIB)]
        with RawTcpSink(size) as sink, grpc.insecure_channel(f"{HOST}:{port}", options=opts) as channel:
            sink.send(payload)
            pull_ceiling(channel)
            for r in range(runs):
                start = time.perf_counter()
                got = client.mli_get_current_weights()
                get_s.append(time.perf_counter() - start)
                if got.weights.size != size:
                    raise RuntimeError("GetCurrentWeights returned a different size")
                del got
                start = time.perf_counter()
                client.mli_accept_weights(weights)
                set_s.append(time.perf_counter() - start)
                tcp_s.append(sink.send(payload))
                seconds, received = pull_ceiling(channel)
                if received != size:
                    raise RuntimeError("the gRPC ceiling stream was short")
                ceiling_s.append(seconds)
                log(
                    f"transfer run {r + 1}/{runs}: get {get_s[-1]:.3f} s, set {set_s[-1]:.3f} s, "
                    f"raw tcp {tcp_s[-1]:.3f} s, bare grpc stream {ceiling_s[-1]:.3f} s"
                )
    finally:
        if client is not None:
            client.stop()
        if ceiling is not None:
            ceiling.terminate()
            try:
                ceiling.wait(10)
            except subprocess.TimeoutExpired:
                ceiling.kill()
                ceiling.wait(5)
        fleet.stop()

    tcp = throughput(size, tcp_s)
    common = {"bytes": size, "baseline_unit": "MiB/s", "target_on_note": "ratio = gRPC MiB/s / raw TCP MiB/s"}
    for name, seconds in (
        ("transfer_100mb_get_current_weights", get_s),
        ("transfer_100mb_set_weights", set_s),
    ):
        emit(
            name, "MiB/s", throughput(size, seconds),
            baseline="raw TCP 127.0.0.1, same bytes, same run", baseline_samples=tcp,
            target=TARGET_SHARE, target_on="ratio",
            seconds_median=round(statistics.median(seconds), 4), **common,
        )  # fmt: skip
    emit(
        "transfer_100mb_bare_grpc_stream", "MiB/s", throughput(size, ceiling_s),
        baseline="raw TCP 127.0.0.1, same bytes, same run", baseline_samples=tcp,
        target="", target_on="ratio",
        informational="gRPC-Python ceiling: 2 MiB bytes messages, no protobuf/codec",
        seconds_median=round(statistics.median(ceiling_s), 4), **common,
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--ceiling-server":
        ceiling_server(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
