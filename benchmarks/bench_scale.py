"""Figures (e) and (g): a round with 64 (or --learners N) learners, and the backend RSS in a 100 MB round.

(e) 64 TOY learner processes (``--learners N``: N of them; issue 16 asks for 128) with 1 MiB weights and 0 s
training and evaluation. Ours is
``collective_learning_round``; the baseline, alternated with it over the same learners, is the
colearn-0.2.8-style sequential round of ``bench_round_100mb`` (every call in turn, the proposer also
votes, the accept resends the weights). Also reported: each round's phases, and the backend's thread
count (psutil, sampled every 2 ms) at its peak during each kind of round against the count just before
it, because the issue asks for "a bounded pool that scales to 64 learners; no per-learner thread that
idles through a round". The same sampler reads this process's RSS (it is the backend: every
``LearnerClient`` lives here), so that the round's peak RSS is reported against the RSS just before it
and against the sequential round's peak.

(g) 8 TOY learner processes with 100 MiB weights. The backend is a separate process (this script with
``--backend-driver``), so that the resident memory measured is the backend's alone. A driver connects a
``LearnerClient`` to every learner, reads its RSS (``connected``), plays one warm-up round, reads its RSS
again (``idle``: what a backend between rounds holds), then plays one measured round while a thread samples
its RSS every 5 ms; ``ru_maxrss`` read before and after the round catches a peak that fell between two
samples (it is the lifetime peak, so it counts only when the round raised it).
The figure is the round's peak RSS over the weights' size (target <= 3x: no copy per learner).

The baseline is the same driver playing the colearn-0.2.8-style sequential round. It does the same work
as ours (receives the proposal once, sends it to every learner, resends it in the accept), but one
stream at a time, so its peak is the floor of a round: the proposal held once plus one stream in flight.
Ours over the baseline is then what sending to 7 voters at once costs in memory. (A driver that only
calls ``GetCurrentWeights`` would show the same floor without the sending.) Every repetition starts one
driver of each kind, in turn, so that the two peaks never mix in one process.
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from bench_round_100mb import colearn_028_round
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import LearnerProcesses, bench_env, toy_clients

from backend_client.learner_client import LearnerClient
from backend_client.rounds import collective_learning_round
from colearn_runtime.memory_reuse import reuse_freed_memory

MIB = 1024 * 1024
MB = 1e6
VOTE_THRESHOLD = 0.5

N_SCALE = 64
SCALE_WEIGHTS_MB = 1.0
# Each idle TOY learner process holds about 67 MB (figure (d)): 128 of them need about 9 GB.
LEARNER_RSS_MB = 70
# 64 interpreters importing grpc and numpy at once on 2 cores take 20-40 s to all answer health; the probes
# run one after the other, so the first one waits for most of that.
SCALE_START_TIMEOUT_S = 300.0
THREAD_SAMPLE_S = 0.002
TARGET_SCALE_S = {64: "<= 3", 128: "<= 0.5"}

N_RSS = 8
RSS_WEIGHTS_MB = 100.0
RSS_SAMPLE_S = 0.005
DRIVER_TIMEOUT_S = 300.0
TARGET_RSS_RATIO = "<= 3"


class PeakSampler:
    """Reads ``read()`` every ``interval`` s on a daemon thread while in a ``with``; keeps the largest value.

    ``also`` are further readings taken at the same instants (one thread, whatever their number); their
    peaks are in ``also_peaks``, in order.

    A thread of Python needs the GIL to sample, so a peak inside a long GIL-holding call can fall between two
    samples; callers that need the true peak also read a kernel counter (``ru_maxrss``).
    """

    def __init__(
        self, read: Callable[[], float], interval: float, also: Sequence[Callable[[], float]] = ()
    ) -> None:
        self._read = read
        self._also = tuple(also)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-sampler")
        self.peak = 0.0
        self.also_peaks = [0.0] * len(self._also)
        self.samples = 0

    def __enter__(self) -> PeakSampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._take()

    def _take(self) -> None:
        self.peak = max(self.peak, self._read())
        for k, read in enumerate(self._also):
            self.also_peaks[k] = max(self.also_peaks[k], read())
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._take()


# -- (e) one round with 64 (or N) learners -------------------------------------------------------------------


def memory_check(n: int) -> None:
    """Refuses to start ``n`` learners that would not fit in the memory available now (no swap here)."""
    need_mb = n * LEARNER_RSS_MB
    available_mb = psutil.virtual_memory().available / MB
    log(f"scale: {n} learners need about {need_mb} MB; {available_mb:.0f} MB available")
    if need_mb > 0.8 * available_mb:
        raise SystemExit(
            f"{n} learner processes need about {need_mb} MB, more than 80% of the {available_mb:.0f} MB "
            f"available: measure fewer (--learners)"
        )


def round_with_n(runs: int, n: int) -> None:
    memory_check(n)
    started = time.perf_counter()
    me = psutil.Process()

    def rss() -> float:
        return float(me.memory_info().rss)

    ours: list[float] = []
    baseline: list[float] = []
    phases: dict[str, list[float]] = {"propose": [], "vote": [], "accept": []}
    threads: dict[str, list[float]] = {"before": [], "ours": [], "sequential": []}
    memory: dict[str, list[float]] = {"before": [], "ours": [], "sequential": []}
    fleet = LearnerProcesses(n, start_timeout=SCALE_START_TIMEOUT_S)
    clients: list[LearnerClient] = []
    start_s = connected_rss = 0.0
    pids: list[int] = []
    try:
        log(f"scale: starting {n} learner processes")
        fleet.start()
        pids = fleet.pids
        start_s = time.perf_counter() - started
        log(f"scale: {n} learners SERVING after {start_s:.1f} s; setting up TOY")
        clients = toy_clients(fleet.addresses, SCALE_WEIGHTS_MB)
        connected_rss = rss()
        # A warm-up round of each kind: N channels' first calls and first-touch pages are not a round's cost.
        collective_learning_round(clients, VOTE_THRESHOLD, 0)
        colearn_028_round(clients, VOTE_THRESHOLD, 1)
        for r in range(runs):
            threads["before"].append(me.num_threads())
            memory["before"].append(rss())
            with PeakSampler(me.num_threads, THREAD_SAMPLE_S, also=[rss]) as sampler:
                start = time.perf_counter()
                result = collective_learning_round(clients, VOTE_THRESHOLD, 2 + 2 * r)
                ours.append(time.perf_counter() - start)
            threads["ours"].append(sampler.peak)
            memory["ours"].append(sampler.also_peaks[0])
            if not result.vote or result.errors:
                raise RuntimeError(f"round was not accepted cleanly: {result.errors or result.reason}")
            for phase in phases:
                phases[phase].append(result.timings[phase])
            with PeakSampler(me.num_threads, THREAD_SAMPLE_S, also=[rss]) as sampler:
                start = time.perf_counter()
                if not colearn_028_round(clients, VOTE_THRESHOLD, 3 + 2 * r):
                    raise RuntimeError("the baseline round was not accepted")
                baseline.append(time.perf_counter() - start)
            threads["sequential"].append(sampler.peak)
            memory["sequential"].append(sampler.also_peaks[0])
            log(
                f"scale run {r + 1}/{runs}: ours {ours[-1]:.3f} s (threads {threads['before'][-1]} -> "
                f"{threads['ours'][-1]:.0f}, RSS {memory['before'][-1] / MB:.0f} -> "
                f"{memory['ours'][-1] / MB:.0f} MB), colearn-0.2.8-style {baseline[-1]:.3f} s "
                f"(threads -> {threads['sequential'][-1]:.0f}, RSS -> {memory['sequential'][-1] / MB:.0f} MB)"
            )
    finally:
        for client in clients:
            client.stop()
        fleet.stop()  # a failed start has stopped its processes already
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        log(f"scale: stopped {len(pids)} learner processes by pid; still alive: {alive or 'none'}")
    wall_s = time.perf_counter() - started

    thread_medians = {k: statistics.median(v) for k, v in threads.items()}
    emit(
        f"round_time_n{n}_1mb", "s", ours,
        baseline="colearn-0.2.8-style sequential round, same learners", baseline_samples=baseline,
        target=TARGET_SCALE_S.get(n, ""), target_on="median",
        phases_median_s={k: round(statistics.median(v), 4) for k, v in phases.items()},
        backend_threads_median=thread_medians,
        n_learners=n, weights_mb=SCALE_WEIGHTS_MB, fleet_start_s=round(start_s, 1),
        load_average=[round(x, 1) for x in psutil.getloadavg()], section_wall_s=round(wall_s, 1),
    )  # fmt: skip
    emit(
        f"backend_threads_peak_n{n}", "threads", threads["ours"],
        baseline="the same process in the colearn-0.2.8-style sequential round",
        baseline_samples=threads["sequential"],
        target="", threads_before_median=thread_medians["before"],
        extra_threads_in_round_median=thread_medians["ours"] - thread_medians["before"],
        informational=f"peak of psutil num_threads (Python and gRPC core threads) during one round of {n}",
    )  # fmt: skip
    emit(
        f"backend_peak_rss_n{n}_1mb", "MB", [v / MB for v in memory["ours"]],
        baseline="the same process in the colearn-0.2.8-style sequential round",
        baseline_samples=[v / MB for v in memory["sequential"]],
        target="", rss_before_round_median_mb=round(statistics.median(memory["before"]) / MB, 1),
        rss_after_setup_mb=round(connected_rss / MB, 1),
        growth_in_round_median_mb=round(
            statistics.median(o - b for o, b in zip(memory["ours"], memory["before"], strict=True)) / MB, 1
        ),
        informational=f"peak RSS of the backend process (sampled every {THREAD_SAMPLE_S * 1000:.0f} ms) in a "
        f"round of {n} learners with {SCALE_WEIGHTS_MB:g} MiB weights; it holds {n} channels",
    )  # fmt: skip


# -- (g) backend RSS during a 100 MB round with N=8 ----------------------------------------------------------


def _play_ours(clients: Sequence[LearnerClient], round_index: int) -> None:
    result = collective_learning_round(clients, VOTE_THRESHOLD, round_index)
    if not result.vote or result.errors:
        raise RuntimeError(f"round was not accepted cleanly: {result.errors or result.reason}")


def _play_sequential(clients: Sequence[LearnerClient], round_index: int) -> None:
    if not colearn_028_round(clients, VOTE_THRESHOLD, round_index):
        raise RuntimeError("the baseline round was not accepted")


ROUND_KINDS: dict[str, Callable[[Sequence[LearnerClient], int], None]] = {
    "ours": _play_ours,
    "sequential": _play_sequential,
}


def _ru_maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def backend_driver(kind: str, first_round: int, addresses: list[str]) -> None:
    """The backend as its own process: one warm-up round, then one measured round; one JSON line on stdout."""
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    play = ROUND_KINDS[kind]
    me = psutil.Process()

    def rss() -> float:
        return float(me.memory_info().rss)

    clients = [LearnerClient(f"learner-{i}", a).start() for i, a in enumerate(addresses)]
    try:
        connected = rss()
        play(clients, first_round)  # warm-up: channels, first-touch pages, the allocator's pools
        gc.collect()
        idle = rss()
        maxrss_before = _ru_maxrss_bytes()
        with PeakSampler(rss, RSS_SAMPLE_S) as sampler:
            start = time.perf_counter()
            play(clients, first_round + 1)
            seconds = time.perf_counter() - start
        maxrss_after = _ru_maxrss_bytes()
    finally:
        for client in clients:
            client.stop()
    # ru_maxrss is the lifetime peak: it tells about the measured round only if the round raised it.
    kernel_peak = maxrss_after if maxrss_after > maxrss_before else 0
    print(
        json.dumps(
            {
                "kind": kind,
                "connected_rss": connected,
                "idle_rss": idle,
                "sampled_peak_rss": sampler.peak,
                "samples": sampler.samples,
                "ru_maxrss_before": maxrss_before,
                "ru_maxrss_after": maxrss_after,
                "peak_rss": max(sampler.peak, kernel_peak),
                "peak_from": "ru_maxrss" if kernel_peak > sampler.peak else "sampler",
                "round_s": seconds,
            }
        ),
        flush=True,
    )


def run_driver(kind: str, first_round: int, addresses: list[str]) -> dict[str, Any]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--backend-driver", kind, str(first_round), *addresses],
        env=bench_env(), stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, _ = process.communicate(timeout=DRIVER_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    if process.returncode != 0:
        raise RuntimeError(f"the {kind} backend driver exited with code {process.returncode}")
    lines = [raw for raw in out.decode().splitlines() if raw.startswith("{")]
    if not lines:
        raise RuntimeError(f"the {kind} backend driver printed no report")
    return json.loads(lines[-1])


def backend_rss(runs: int) -> None:
    started = time.perf_counter()
    weights_bytes = RSS_WEIGHTS_MB * MIB
    reports: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ROUND_KINDS}
    fleet = LearnerProcesses(N_RSS)
    try:
        fleet.start()
        for client in toy_clients(fleet.addresses, RSS_WEIGHTS_MB):
            client.stop()  # the learners keep their model; each driver connects on its own
        for r in range(runs):
            for kind in ROUND_KINDS:
                reports[kind].append(run_driver(kind, 2 * r, fleet.addresses))
            log(
                f"backend_rss run {r + 1}/{runs}: "
                + ", ".join(
                    f"{kind} idle {reports[kind][-1]['idle_rss'] / MB:.0f} MB, peak "
                    f"{reports[kind][-1]['peak_rss'] / MB:.0f} MB ({reports[kind][-1]['peak_from']}), "
                    f"round {reports[kind][-1]['round_s']:.2f} s"
                    for kind in ROUND_KINDS
                )
            )
    finally:
        fleet.stop()
    wall_s = time.perf_counter() - started

    def over_weights(kind: str, key: Callable[[dict[str, Any]], float]) -> list[float]:
        return [key(rep) / weights_bytes for rep in reports[kind]]

    def median_mb(kind: str, key: Callable[[dict[str, Any]], float]) -> float:
        return round(statistics.median(key(rep) for rep in reports[kind]) / MB, 1)

    def peak(rep: dict[str, Any]) -> float:
        return rep["peak_rss"]

    def idle(rep: dict[str, Any]) -> float:
        return rep["idle_rss"]

    def growth(rep: dict[str, Any]) -> float:
        return rep["peak_rss"] - rep["idle_rss"]

    details = {
        kind: {
            "connected_rss_mb": median_mb(kind, lambda rep: rep["connected_rss"]),
            "idle_rss_mb": median_mb(kind, idle),
            "peak_rss_mb": median_mb(kind, peak),
            "peak_minus_idle_mb": median_mb(kind, growth),
            "round_s": round(statistics.median(rep["round_s"] for rep in reports[kind]), 3),
            "peak_from_ru_maxrss": sum(rep["peak_from"] == "ru_maxrss" for rep in reports[kind]),
        }
        for kind in ROUND_KINDS
    }
    emit(
        "backend_peak_rss_n8_100mb", "x weights", over_weights("ours", peak),
        baseline="the same backend process in the colearn-0.2.8-style sequential round",
        baseline_samples=over_weights("sequential", peak),
        target=TARGET_RSS_RATIO, target_on="median",
        weights_bytes=int(weights_bytes), n_learners=N_RSS, details=details, section_wall_s=round(wall_s, 1),
    )  # fmt: skip
    emit(
        "backend_rss_growth_n8_100mb", "x weights", over_weights("ours", growth),
        baseline="the same in the colearn-0.2.8-style sequential round",
        baseline_samples=over_weights("sequential", growth),
        target="", informational="(peak RSS in the round - RSS after the warm-up round) / weights bytes",
    )  # fmt: skip


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    parser = repetitions_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3)
    parser.add_argument(
        "--only",
        choices=("round64", "round", "backend_rss"),
        help="measure one figure: (e) round (round64 is its old name) or (g) backend_rss",
    )
    parser.add_argument(
        "--learners", type=int, default=N_SCALE, help=f"learner processes in (e) (default {N_SCALE})"
    )
    args = parser.parse_args()
    runs = runs_from(args)
    started = time.perf_counter()
    if args.only in (None, "round64", "round"):
        round_with_n(runs, args.learners)
    if args.only in (None, "backend_rss"):
        backend_rss(runs)
    log(f"bench_scale: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--backend-driver":
        backend_driver(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        main()
