"""Load: 1,000 concurrent health checks and QuerySupportedSystem calls while a slow training step runs.

Every call must be answered, the training step must still be running when the last probe is answered (so
the probes did not wait for it), and the learner's memory must not grow with the load. The latencies and
the memory are printed (run with ``-s``) and recorded as test properties; they are reported in
docs/reliability.md, never asserted as times.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reliability_kit import ToyFleet, set_up_toy, toy_parameters, wait_for
from wire_kit import learner_stub

from backend_client import LearnerClient
from colearn_contract.v1 import learner_pb2 as pb

pytestmark = pytest.mark.slow

CALLS = 1000  # at once, in each burst
BURSTS = 4  # after one warm-up burst
# The calls spread over 25 connections, as from many probes and clients: 40 at once on each, within the
# learner's limit of concurrent streams per connection (max_concurrent_streams, 64). A client that opens
# more at once on one connection has the excess refused (RST_STREAM REFUSED_STREAM, seen as UNAVAILABLE).
CHANNELS = 25
MIB = 1024 * 1024


def burst(address: str) -> tuple[list[float], list[grpc.StatusCode]]:
    """Starts CALLS calls at once (half health, half QuerySupportedSystem); their latencies and codes."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
    channels = [grpc.insecure_channel(address, options=options) for _ in range(CHANNELS)]
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=30)
        latencies: list[float] = []
        codes: list[grpc.StatusCode] = []
        done = threading.Semaphore(0)
        lock = threading.Lock()

        def finished(started: float) -> object:
            def callback(future: grpc.Future) -> None:
                with lock:
                    latencies.append(time.perf_counter() - started)
                    codes.append(future.code())
                done.release()

            return callback

        health = [health_pb2_grpc.HealthStub(c) for c in channels]
        learner = [learner_stub(c) for c in channels]
        for k in range(CALLS):
            started = time.perf_counter()
            if k % 2:
                request = health_pb2.HealthCheckRequest(service="")
                call = health[k % CHANNELS].Check.future(request, timeout=120)
            else:
                call = learner[k % CHANNELS].QuerySupportedSystem.future(
                    pb.QuerySupportedSystemRequest(), timeout=120
                )
            call.add_done_callback(finished(started))
        for _ in range(CALLS):
            assert done.acquire(timeout=180), "a probe was never answered"
        return latencies, codes
    finally:
        for channel in channels:
            channel.close()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def test_probes_under_load_during_training_are_all_answered_and_memory_stays_flat(
    tmp_path: Path, record_property
) -> None:
    fleet = ToyFleet(1, tmp_path)
    try:
        fleet.start()
        client = LearnerClient("learner", fleet.addresses[0]).start()
        set_up_toy(client, toy_parameters(train_seconds=30.0, weights_mb=1.0))
        process = psutil.Process(fleet.processes[0].pid)
        propose = client.stub.ProposeWeights(pb.ProposeWeightsRequest(), timeout=120)
        trainer = threading.Thread(target=_drain, args=(propose,), daemon=True)
        trainer.start()
        wait_for(lambda: client.get_status().busy, what="the training step to start")

        _, warm_codes = burst(fleet.addresses[0])  # warms threads, channels and the allocator
        rss = [process.memory_info().rss]
        latencies: list[float] = []
        codes: list[grpc.StatusCode] = []
        for _ in range(BURSTS):
            burst_latencies, burst_codes = burst(fleet.addresses[0])
            latencies += burst_latencies
            codes += burst_codes
            rss.append(process.memory_info().rss)
        still_training = client.get_status().busy

        assert set(warm_codes) == set(codes) == {grpc.StatusCode.OK}
        assert len(codes) == BURSTS * CALLS
        assert still_training, "the training step ended before the probes: they did not overlap"
        # Generous: what it catches is memory that grows with the number of calls (a buffer kept per call,
        # a queue never drained), which over 4,000 calls would show as tens of MiB.
        assert rss[-1] - rss[0] < 32 * MIB, [round(r / MIB, 1) for r in rss]

        numbers = {
            "calls": BURSTS * CALLS,
            "concurrent": CALLS,
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "rss_mib_after_each_burst": [round(r / MIB, 1) for r in rss],
        }
        for key, value in numbers.items():
            record_property(key, value)
        print(f"\nprobes under load during training: {numbers}")
        propose.cancel()
        client.stop()
    finally:
        fleet.stop_all()


def _drain(call: object) -> None:
    try:
        for _ in call:  # type: ignore[attr-defined]
            pass
    except grpc.RpcError:
        pass  # cancelled at the end of the test
