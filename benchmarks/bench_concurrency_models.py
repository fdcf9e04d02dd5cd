"""Analysis: gRPC-Python's thread-pool model against grpc.aio, for the server and for the backend's fan-out.

Self-contained: a tiny service with identity (de)serialisers (the messages are ``bytes``), so that what is
measured is the concurrency model, not protobuf or the product's code. Two server processes of this script
(``--server threads|aio PORT``) serve it: ``grpc.server(ThreadPoolExecutor(16))``, the learner's model,
and ``grpc.aio.server()``. Methods: ``Echo`` (returns its request), ``Hold`` (waits ``HOLD_S`` and returns
it: a handler that waits on something, with ``time.sleep`` in a pool thread or ``asyncio.sleep`` on the
loop) and ``Upload`` (a client stream; returns the byte count).

Server side, from one synchronous client in this process, against each server in turn:
  (i) the latency of one small call (median of ``SEQUENTIAL_CALLS`` calls in a row);
  (ii) the throughput of 64 concurrent small calls (``Echo``), and of 64 concurrent ``Hold`` calls;
  (iii) a 100 MiB client-stream upload as 2 MiB messages; with the server's CPU seconds for (ii) and (iii).
Backend side, against the aio server (it holds 64 calls at once): 64 concurrent ``Echo`` and ``Hold`` calls,
(a) with the pattern of ``backend_client.fan_out`` (a ``ThreadPoolExecutor`` of up to 64 threads per fan-out,
a blocking call per thread; copied here so that the figure does not move when the product changes) and
(b) ``asyncio.gather`` over a ``grpc.aio`` channel: wall time, this process's CPU seconds, and its peak
thread count (psutil, every 2 ms) over the count before.

Every line is informational: the figure is grpc.aio, the baseline the thread-pool variant, the ratio
aio / threads. The two variants alternate in every repetition, and which goes first alternates too.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import grpc.aio
import psutil
from bench_scale import PeakSampler
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import HOST, bench_env, free_port

MIB = 1024 * 1024
SERVICE = "bench.Concurrency"
SMALL = b"x" * 64
HOLD_S = 0.02
FAN = 64
UPLOAD_BYTES = 100 * MIB
UPLOAD_PART = 2 * MIB
SEQUENTIAL_CALLS = 300
BATCHES = 10
SERVER_THREADS = 16
THREAD_SAMPLE_S = 0.002
CALL_TIMEOUT_S = 60.0
OPTIONS = [("grpc.max_send_message_length", 16 * MIB), ("grpc.max_receive_message_length", 16 * MIB)]
MODELS = ("threads", "aio")


# -- the two servers (each in its own process) ---------------------------------------------------------------


def _sync_handler() -> grpc.GenericRpcHandler:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def hold(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(HOLD_S)
        return request

    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return str(sum(len(r) for r in requests)).encode()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Hold": grpc.unary_unary_rpc_method_handler(hold),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
        },
    )


def _aio_handler() -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def hold(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(HOLD_S)
        return request

    async def upload(requests: Any, context: grpc.aio.ServicerContext) -> bytes:
        total = 0
        async for r in requests:
            total += len(r)
        return str(total).encode()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Hold": grpc.unary_unary_rpc_method_handler(hold),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
        },
    )


def serve_threads(port: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=SERVER_THREADS), options=OPTIONS)
    server.add_generic_rpc_handlers((_sync_handler(),))
    server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    server.wait_for_termination(timeout=900)


async def serve_aio(port: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((_aio_handler(),))
    server.add_insecure_port(f"{HOST}:{port}")
    await server.start()
    await server.wait_for_termination(timeout=900)


# -- the client side ---------------------------------------------------------------------------------------


def method(channel: grpc.Channel | grpc.aio.Channel, name: str, stream: bool = False) -> Any:
    path = f"/{SERVICE}/{name}"
    return channel.stream_unary(path) if stream else channel.unary_unary(path)


def wait_answering(address: str, timeout: float = 60.0) -> None:
    """Until ``Echo`` answers, with a fresh channel per try (no reconnect backoff)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            try:
                method(channel, "Echo")(SMALL, timeout=0.5)
                return
            except grpc.RpcError:
                pass
        time.sleep(0.01)
    raise TimeoutError(f"{address} did not answer within {timeout} s")


def sequential_latency_us(channel: grpc.Channel) -> float:
    echo = method(channel, "Echo")
    times = []
    for _ in range(SEQUENTIAL_CALLS):
        start = time.perf_counter()
        echo(SMALL, timeout=CALL_TIMEOUT_S)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def concurrent_calls_per_s(channel: grpc.Channel, name: str, server: psutil.Process) -> tuple[float, float]:
    """64 calls started at once (futures: no client threads), ``BATCHES`` times; calls/s of the median batch,
    and the server's CPU microseconds per call."""
    call = method(channel, name)
    times = []
    cpu_before = sum(server.cpu_times()[:2])
    for _ in range(BATCHES):
        start = time.perf_counter()
        futures = [call.future(SMALL, timeout=CALL_TIMEOUT_S) for _ in range(FAN)]
        for f in futures:
            f.result()
        times.append(time.perf_counter() - start)
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    return FAN / statistics.median(times), cpu / (BATCHES * FAN) * 1e6


def upload(channel: grpc.Channel, server: psutil.Process) -> tuple[float, float]:
    """MiB/s of one 100 MiB client stream of 2 MiB messages, and the server's CPU seconds for it."""
    part = bytes(UPLOAD_PART)
    parts = UPLOAD_BYTES // UPLOAD_PART
    cpu_before = sum(server.cpu_times()[:2])
    start = time.perf_counter()
    reply = method(channel, "Upload", stream=True)(iter([part] * parts), timeout=CALL_TIMEOUT_S)
    seconds = time.perf_counter() - start
    if int(reply) != UPLOAD_BYTES:
        raise RuntimeError(f"the server counted {reply!r} bytes, not {UPLOAD_BYTES}")
    return UPLOAD_BYTES / MIB / seconds, sum(server.cpu_times()[:2]) - cpu_before


def threads_fan_out(channel: grpc.Channel, name: str) -> list[bytes]:
    """``backend_client.fan_out``'s pattern: a pool of up to 64 threads per fan-out, a blocking call each."""
    call = method(channel, name)
    with ThreadPoolExecutor(max_workers=min(64, FAN), thread_name_prefix="fan-out") as pool:
        futures = [pool.submit(call, SMALL, timeout=CALL_TIMEOUT_S) for _ in range(FAN)]
    return [f.result() for f in futures]


async def aio_fan_out(channel: grpc.aio.Channel, name: str) -> list[bytes]:
    call = method(channel, name)
    return list(await asyncio.gather(*(call(SMALL, timeout=CALL_TIMEOUT_S) for _ in range(FAN))))


def measured_fan_out(run: Callable[[], list[bytes]]) -> dict[str, float]:
    me = psutil.Process()
    before = me.num_threads()
    cpu = time.process_time()
    with PeakSampler(me.num_threads, THREAD_SAMPLE_S) as sampler:
        start = time.perf_counter()
        replies = run()
        wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if len(replies) != FAN or any(r != SMALL for r in replies):
        raise RuntimeError("a fan-out call did not echo its request")
    return {"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3, "extra_threads": sampler.peak - before}


class ServerProcess:
    def __init__(self, model: str) -> None:
        self.model = model
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--server", model, str(self.port)],
            env=bench_env(), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.ps = psutil.Process(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def main() -> None:
    args = repetitions_parser(__doc__.splitlines()[0], default_runs=7, quick_runs=3).parse_args()
    runs = runs_from(args)
    started = time.perf_counter()
    keys = ("latency_us", "echo_calls_per_s", "echo_server_cpu_us", "hold_calls_per_s", "hold_server_cpu_us",
            "upload_mib_s", "upload_server_cpu_s")  # fmt: skip
    server_side: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in MODELS}
    client_side: dict[str, dict[str, dict[str, list[float]]]] = {
        m: {name: {"wall_ms": [], "cpu_ms": [], "extra_threads": []} for name in ("Echo", "Hold")}
        for m in MODELS
    }
    server_threads: dict[str, int] = {}
    servers: dict[str, ServerProcess] = {}
    channels: dict[str, grpc.Channel] = {}
    loop = asyncio.new_event_loop()
    aio_channel: grpc.aio.Channel | None = None
    try:
        for model in MODELS:
            servers[model] = ServerProcess(model)
        for model, server in servers.items():
            wait_answering(server.address)
            channels[model] = grpc.insecure_channel(server.address, options=OPTIONS)

        async def open_aio() -> grpc.aio.Channel:
            return grpc.aio.insecure_channel(servers["aio"].address, options=OPTIONS)

        aio_channel = loop.run_until_complete(open_aio())
        fan_outs: dict[str, Callable[[str], Callable[[], list[bytes]]]] = {
            "threads": lambda name: lambda: threads_fan_out(channels["aio"], name),
            "aio": lambda name: lambda: loop.run_until_complete(aio_fan_out(aio_channel, name)),
        }

        def one_repetition(model: str, record: bool) -> None:
            channel, ps = channels[model], servers[model].ps
            s = server_side[model]
            latency = sequential_latency_us(channel)
            echo_rate, echo_cpu = concurrent_calls_per_s(channel, "Echo", ps)
            hold_rate, hold_cpu = concurrent_calls_per_s(channel, "Hold", ps)
            upload_rate, upload_cpu = upload(channel, ps)
            fans = {name: measured_fan_out(fan_outs[model](name)) for name in ("Echo", "Hold")}
            if not record:
                return
            values = (latency, echo_rate, echo_cpu, hold_rate, hold_cpu, upload_rate, upload_cpu)
            for key, value in zip(keys, values, strict=True):
                s[key].append(value)
            for name, figures in fans.items():
                for key, value in figures.items():
                    client_side[model][name][key].append(value)

        for model in MODELS:  # warm-up: connections, the servers' pools, first-touch pages
            one_repetition(model, record=False)
        for r in range(runs):
            for model in MODELS if r % 2 == 0 else MODELS[::-1]:
                one_repetition(model, record=True)
            log(
                f"concurrency run {r + 1}/{runs}: "
                + "; ".join(
                    f"{m}: p50 {server_side[m]['latency_us'][-1]:.0f} us, "
                    f"64x echo {server_side[m]['echo_calls_per_s'][-1]:.0f}/s, "
                    f"64x hold {server_side[m]['hold_calls_per_s'][-1]:.0f}/s, "
                    f"upload {server_side[m]['upload_mib_s'][-1]:.0f} MiB/s, "
                    f"fan-out echo {client_side[m]['Echo']['wall_ms'][-1]:.1f} ms "
                    f"({client_side[m]['Echo']['cpu_ms'][-1]:.1f} ms CPU, "
                    f"+{client_side[m]['Echo']['extra_threads'][-1]:.0f} threads)"
                    for m in MODELS
                )
            )
        server_threads = {m: s.ps.num_threads() for m, s in servers.items()}
    finally:
        for channel in channels.values():
            channel.close()
        if aio_channel is not None:
            loop.run_until_complete(aio_channel.close())
        loop.close()
        for server in servers.values():
            server.stop()

    def pair(key: str) -> dict[str, Any]:
        return {
            "baseline": "grpc.server(ThreadPoolExecutor(16)), same client, same run",
            "baseline_samples": server_side["threads"][key],
        }

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    note = "informational; figure = grpc.aio, baseline = thread pool, ratio = aio / threads"
    emit("concurrency_server_unary_p50", "us", server_side["aio"]["latency_us"], **pair("latency_us"),
         target="", informational=note, server_threads=server_threads, calls=SEQUENTIAL_CALLS)  # fmt: skip
    for name, key in (("echo", "echo_calls_per_s"), ("hold", "hold_calls_per_s")):
        cpu_key = f"{name}_server_cpu_us"
        emit(
            f"concurrency_server_64_concurrent_{name}", "calls/s", server_side["aio"][key], **pair(key),
            target="", informational=note, hold_s=HOLD_S if name == "hold" else 0,
            server_cpu_us_per_call_median={m: median(server_side[m][cpu_key]) for m in MODELS},
        )  # fmt: skip
    emit(
        "concurrency_server_upload_100mib", "MiB/s", server_side["aio"]["upload_mib_s"],
        **pair("upload_mib_s"),
        target="", informational=note, message_bytes=UPLOAD_PART,
        server_cpu_s_median={m: median(server_side[m]["upload_server_cpu_s"]) for m in MODELS},
    )  # fmt: skip
    for name in ("Echo", "Hold"):
        threads, aio = client_side["threads"][name], client_side["aio"][name]
        common = {
            "target": "",
            "informational": note + "; 64 concurrent calls to the aio server from this process",
            "baseline": "backend_client.fan_out's pattern: ThreadPoolExecutor, one blocking call per thread",
            "hold_s": HOLD_S if name == "Hold" else 0,
        }
        emit(
            f"concurrency_client_fanout64_{name.lower()}_wall", "ms", aio["wall_ms"],
            baseline_samples=threads["wall_ms"], **common,
            extra_threads_median={m: median(client_side[m][name]["extra_threads"]) for m in MODELS},
        )  # fmt: skip
        emit(
            f"concurrency_client_fanout64_{name.lower()}_cpu", "ms", aio["cpu_ms"],
            baseline_samples=threads["cpu_ms"], **common,
        )  # fmt: skip
    log(f"bench_concurrency_models: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--server":
        if sys.argv[2] == "threads":
            serve_threads(int(sys.argv[3]))
        else:
            asyncio.run(serve_aio(int(sys.argv[3])))
    else:
        main()
