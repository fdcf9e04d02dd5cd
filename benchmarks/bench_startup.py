"""Figure (d): learner start to health SERVING, and the idle learner's resident memory without a model.

Ours: ``python -m colearn_learner serve`` on a free 127.0.0.1 port (metrics off), timed from ``Popen`` to
the first health check that answers SERVING for service "" (probed every 10 ms with a fresh channel), then
its RSS read with psutil once it has been idle for a moment. The baseline, measured side by side, is what
colearn did at start: a process that imports torch, timed from ``Popen`` to the line it prints once the
import is done, and its RSS at that point. The two kinds of start alternate.

A third line shows the same start as seen through the product's ``local_fleet.wait_until_serving``, which
reuses one channel: a refused first connection puts that channel into gRPC's reconnect backoff (1 s), so
it reports SERVING up to about a second after the learner is ready.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import HOST, bench_env, free_port, learner_command, probe_serving

from backend_client.local_fleet import wait_until_serving

TARGET_START_S = "<= 1.5"
TARGET_RSS_MB = "<= 120"
IDLE_SETTLE_S = 0.5
MB = 1024 * 1024
_TORCH_CHILD = "import sys, torch; print('ready', flush=True); sys.stdin.read()"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def learner_start(seen_by: str) -> tuple[float, float]:
    """Seconds to SERVING and idle RSS in MB of one learner process without a model."""
    port = free_port()
    address = f"{HOST}:{port}"
    start = time.perf_counter()
    process = subprocess.Popen(
        learner_command(port, plugins=()),
        env=bench_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if seen_by == "probe":
            probe_serving(address, 60)
        else:
            wait_until_serving(address, 60)
        elapsed = time.perf_counter() - start
        time.sleep(IDLE_SETTLE_S)
        if process.poll() is not None:
            raise RuntimeError(f"learner exited with code {process.returncode}")
        rss = psutil.Process(process.pid).memory_info().rss / MB
    finally:
        stop(process)
    return elapsed, rss


def torch_start() -> tuple[float, float]:
    """Seconds until a process has imported torch, and its RSS in MB then."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _TORCH_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=bench_env()
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded: the child prints once, or exits and we read EOF
        elapsed = time.perf_counter() - start
        if line.strip() != b"ready":
            raise RuntimeError(f"the torch import failed (exit code {process.poll()})")
        time.sleep(IDLE_SETTLE_S)
        rss = psutil.Process(process.pid).memory_info().rss / MB
    finally:
        if process.stdin is not None:
            process.stdin.close()
        stop(process)
    return elapsed, rss


def main() -> None:
    args = repetitions_parser(__doc__.splitlines()[0], default_runs=7, quick_runs=3).parse_args()
    runs = runs_from(args)
    starts: list[float] = []
    rss: list[float] = []
    waited: list[float] = []
    torch_s: list[float] = []
    torch_rss: list[float] = []
    learner_start("probe")  # warm-up: the page cache, for both kinds alike
    torch_start()
    for r in range(runs):
        s, m = learner_start("probe")
        starts.append(s)
        rss.append(m)
        t, tm = torch_start()
        torch_s.append(t)
        torch_rss.append(tm)
        waited.append(learner_start("wait_until_serving")[0])
        log(
            f"startup run {r + 1}/{runs}: learner {s:.3f} s {m:.0f} MB, torch import {t:.3f} s {tm:.0f} MB, "
            f"learner via wait_until_serving {waited[-1]:.3f} s"
        )
    emit(
        "learner_start_to_serving", "s", starts,
        baseline="python process importing torch (colearn imports its frameworks at start), same run",
        baseline_samples=torch_s, target=TARGET_START_S,
    )  # fmt: skip
    emit(
        "learner_idle_rss_no_model", "MB", rss,
        baseline="RSS of a python process after import torch, same run", baseline_samples=torch_rss,
        target=TARGET_RSS_MB,
    )  # fmt: skip
    emit(
        "learner_start_seen_by_wait_until_serving", "s", waited,
        baseline="the same start probed with a fresh channel every 10 ms", baseline_samples=starts,
        target="", informational="product helper backend_client.local_fleet.wait_until_serving",
    )  # fmt: skip


if __name__ == "__main__":
    main()
