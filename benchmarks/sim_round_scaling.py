"""Round time against fleet size N, weights size W and link bandwidth B: star relay against peer-assisted.

A model of one round, in closed form and as a step simulation of the parts, for three ways to get the
proposal to the N-1 voters (docs/scaling.md explains the choices; no product code implements (b) or (c)):

(a) **star** (the product today): the proposer streams W to the backend, which relays every part to every
    voter as it arrives. The backend's uplink carries (N-1)*W, so the distribution takes
    ``max((N-1)*W/S, W/H) + fill``.
(b) **chain**: the backend sends to one voter, which verifies each part and forwards it to the next:
    ``max(W/S, W/H) + (N-1)*(p/S + L + p/H)``; every node's uplink carries W once.
(c) **tree** of fan-out k: each node forwards verified parts to k children:
    ``max(k*W/S, W/H) + depth*(k*p/S + L + p/H)``, depth = levels needed for N-1 voters.

with S = min(link bandwidth B, a process's relay rate), part size p (2 MiB), per-hop latency L, sha256 rate
H per node (one core), fill = the proposer's hop plus one hop per level. A round adds the training
(proposer) and evaluation (voters) seconds and the fixed costs of its calls: ``t0 + c_call*(N-1)``. The step
simulation (``simulate``) plays the same pipeline part by part, as a check of the closed form.

**One machine** (``--measure``): every learner shares the loopback and the 2 cores, so a byte costs CPU,
not link time, and nothing overlaps. The measured round time is fitted to
``T(N, W) = t0 + c_call*(N-1) + c_byte*N*W``: ``c_byte`` is the seconds per byte that enters or leaves the
backend (N*W of them: W in, (N-1)*W out), all processes' CPU included, so ``1/c_byte`` is the effective
backend bandwidth of this machine. The script reports each point against the fit, and a hold-out check
(fit on N <= 16 at 1 MiB plus the larger W, predict N = 32 and 64). Each repetition plays every (N, W)
point in turn over the same learners (the first N of them), so that the load falls on all alike; each
point's baseline is the N=4 round at the same W of the same repetitions.

Without ``--measure`` the fit's constants are the ones measured for issue 16 (benchmarks/BENCHMARKS.md),
and only the model and the simulation run (a few seconds). ``--quick``: fewer points and repetitions.
Prints one JSON line per figure or prediction (``figures.emit``); progress on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import psutil
from figures import emit, log, runs_from
from learner_processes import LearnerProcesses, toy_clients

from backend_client.learner_client import LearnerClient
from backend_client.rounds import collective_learning_round
from colearn_runtime.memory_reuse import reuse_freed_memory

MIB = 1024 * 1024
GB = 1e9
PART_BYTES = 2 * MIB
VOTE_THRESHOLD = 0.5
START_TIMEOUT_S = 300.0


# -- constants -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loopback:
    """The fit on one machine: ``T(N, W) = t0 + c_call*(N-1) + c_byte*N*W`` (seconds, bytes)."""

    t0: float
    c_call: float
    c_byte: float

    def round_s(self, n: int, w: float) -> float:
        return self.t0 + self.c_call * (n - 1) + self.c_byte * n * w

    @property
    def effective_mib_s(self) -> float:
        return 1 / self.c_byte / MIB


# Measured for issue 16 (BENCHMARKS.md, "Issue 16"): used when the script runs without --measure.
ISSUE16_LOOPBACK = Loopback(t0=0.00474, c_call=0.00304, c_byte=1.316e-9)
# The backend process's own CPU per byte in or out (time.process_time, same run): 1/this is the rate at
# which a backend process relays when its CPU, not its link, is the limit.
ISSUE16_BACKEND_CPU_PER_BYTE = 0.48e-9


@dataclass(frozen=True)
class Network:
    """A real fleet: one node per machine, every node's link ``bandwidth`` bytes/s each way."""

    bandwidth: float
    latency_s: float = 0.0005  # per hop and part: one-way delay plus the gRPC message's hand-offs
    sha256_bytes_s: float = 1.7e9  # one core, SHA-NI (measured by --quick: see sha256_rate)
    relay_bytes_s: float = math.inf  # what a relaying process can send in all (its CPU, not its link)
    part_bytes: int = PART_BYTES
    t0: float = ISSUE16_LOOPBACK.t0
    c_call: float = ISSUE16_LOOPBACK.c_call
    train_s: float = 0.0
    eval_s: float = 0.0


def tree_depth(voters: int, k: int) -> int:
    """Levels below the backend needed to hold ``voters`` nodes with fan-out ``k`` (k=1: a chain)."""
    if voters <= 0:
        return 0
    if k == 1:
        return voters
    depth, held, level = 0, 0, 1
    while held < voters:
        level *= k
        held += level
        depth += 1
    return depth


# -- closed form ---------------------------------------------------------------------------------------------


def send_rate(net: Network) -> float:
    """Bytes/s one node sends in all: its link, or its process's relay rate if that is lower (gRPC-Python
    relays with CPU: every relaying node, backend or voter, runs the same code)."""
    return min(net.bandwidth, net.relay_bytes_s)


def hop_s(net: Network, fan_out: int, p: float | None = None) -> float:
    """Store-and-forward of one part of ``p`` bytes through one node that sends to ``fan_out`` children:
    the last child has it, verified, this long after the sender had it."""
    p = net.part_bytes if p is None else p
    return fan_out * p / send_rate(net) + net.latency_s + p / net.sha256_bytes_s


def distribution_s(design: str, n: int, w: float, net: Network, k: int = 2) -> float:
    """Seconds from the proposer's first byte until the last voter holds the whole, verified proposal.

    A pipeline: the first part takes ``fill`` to reach the deepest voter (the proposer's hop, then
    ``depth`` hops of fan-out ``fan``), and every further part follows one slowest stage later (a sender's
    uplink sending it ``fan`` times, or a node hashing it): ``fill + (parts-1)*max(fan*p/S, p/H)``, which
    is ``max(fan*W/S, W/H)`` plus the fill, less one part's worth."""
    voters = n - 1
    if voters <= 0:
        return 0.0
    fan = {"star": voters, "chain": 1}.get(design, k)
    fan = max(1, min(fan, voters))
    depth = tree_depth(voters, fan)
    parts = max(1, math.ceil(w / net.part_bytes))
    p = w / parts
    fill = hop_s(net, 1, p) + depth * hop_s(net, fan, p)
    return fill + (parts - 1) * max(fan * p / send_rate(net), p / net.sha256_bytes_s)


def round_s(design: str, n: int, w: float, net: Network, k: int = 2) -> float:
    return net.t0 + net.c_call * (n - 1) + net.train_s + distribution_s(design, n, w, net, k) + net.eval_s


# -- step simulation -----------------------------------------------------------------------------------------


def _verified(arrivals: np.ndarray, h: float) -> np.ndarray:
    """Ready times after a hash of ``h`` s per part, one part at a time: v_j = max(a_j, v_(j-1)) + h."""
    j = np.arange(arrivals.size)
    return (j + 1) * h + np.maximum.accumulate(arrivals - j * h)


def _sends(ready: np.ndarray, children: int, s: float) -> np.ndarray:
    """Start of each part's sends on an uplink that sends part j to every child in turn (``s`` s each),
    as soon as part j is ready: f_j = max(f_(j-1), r_j) + children*s; the start is f_j - children*s."""
    j = np.arange(ready.size)
    step = children * s
    finish = (j + 1) * step + np.maximum.accumulate(ready - j * step)
    return finish - step


def simulate(design: str, n: int, w: float, net: Network, k: int = 2) -> dict[str, float]:
    """Part by part: each node's uplink sends part j to its children in turn once j is verified there.

    Node 0 is the backend, voters 1..n-1 hang below it (star: all of them; chain: one after another;
    tree: heap order, node m's children are k*m+1..k*m+k). Returns the last voter's ready time and the
    backend's uplink busy time."""
    parts = max(1, math.ceil(w / net.part_bytes))
    p = w / parts
    s = p / send_rate(net)
    h = p / net.sha256_bytes_s
    voters = n - 1
    fan = voters if design == "star" else (1 if design == "chain" else k)
    fan = max(1, min(fan, voters))
    j = np.arange(parts)
    # The proposer streams to the backend at its link's rate; the backend verifies each part.
    ready = {0: _verified((j + 1) * s + net.latency_s, h)}
    last = 0.0
    for node in range(0, n):
        if node not in ready:
            continue
        children = [c for c in range(fan * node + 1, fan * node + fan + 1) if c <= voters]
        if not children:
            last = max(last, float(ready[node][-1]))
            continue
        starts = _sends(ready[node], len(children), s)
        for i, child in enumerate(children):
            ready[child] = _verified(starts + (i + 1) * s + net.latency_s, h)
    return {"distribution_s": last, "backend_uplink_bytes": float(fan * w)}


# -- where the star stops ------------------------------------------------------------------------------------


def star_limit(w: float, bandwidth: float, budget_s: float, relay_bytes_s: float = math.inf) -> int:
    """The largest N whose star distribution, (N-1)*W/B_out, fits in ``budget_s``."""
    out = min(bandwidth, relay_bytes_s)
    return 1 + int(budget_s * out / w)


# -- measuring on this machine -------------------------------------------------------------------------------


def sha256_rate() -> float:
    data = np.ones(PART_BYTES * 16, dtype=np.uint8).tobytes()
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - start)
    return len(data) / best


@dataclass
class Point:
    n: int
    weights_mb: float
    seconds: list[float]
    backend_cpu_s: list[float]


def measure(points: Sequence[tuple[int, float]], runs: int) -> list[Point]:
    """Rounds over the first N of one set of learner processes, every point in turn in each repetition."""
    n_max = max(n for n, _ in points)
    sizes = sorted({w for _, w in points})
    results = {pt: Point(pt[0], pt[1], [], []) for pt in points}
    fleet = LearnerProcesses(n_max, start_timeout=START_TIMEOUT_S)
    clients: list[LearnerClient] = []
    pids: list[int] = []
    try:
        started = time.perf_counter()
        fleet.start()
        pids = fleet.pids
        log(f"sim: {n_max} learners SERVING after {time.perf_counter() - started:.1f} s")
        round_index = 0
        for w_mb in sizes:
            group = [pt for pt in points if pt[1] == w_mb]
            n_w = max(n for n, _ in group)
            for client in clients:
                client.stop()
            clients = toy_clients(fleet.addresses[:n_w], w_mb)
            for n, _ in group:  # warm-up: first calls on each channel, first-touch pages
                collective_learning_round(clients[:n], VOTE_THRESHOLD, round_index)
                round_index += 1
            for r in range(runs):
                for n, _ in group:
                    cpu = time.process_time()
                    start = time.perf_counter()
                    result = collective_learning_round(clients[:n], VOTE_THRESHOLD, round_index)
                    seconds = time.perf_counter() - start
                    cpu = time.process_time() - cpu
                    round_index += 1
                    if not result.vote or result.errors:
                        raise RuntimeError(
                            f"round was not accepted cleanly: {result.errors or result.reason}"
                        )
                    results[(n, w_mb)].seconds.append(seconds)
                    results[(n, w_mb)].backend_cpu_s.append(cpu)
                log(
                    f"sim run {r + 1}/{runs}, {w_mb:g} MiB: "
                    + ", ".join(f"N={n} {results[(n, w_mb)].seconds[-1]:.3f} s" for n, _ in group)
                )
    finally:
        for client in clients:
            client.stop()
        fleet.stop()
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        log(f"sim: stopped {len(pids)} learner processes by pid; still alive: {alive or 'none'}")
    return [results[pt] for pt in points]


def fit(points: Sequence[Point]) -> Loopback:
    """Least squares on relative error (times span 10 ms to 1 s), no negative constant."""
    rows = np.array([[1.0, p.n - 1, p.n * p.weights_mb * MIB] for p in points])
    y = np.array([statistics.median(p.seconds) for p in points])
    coef, *_ = np.linalg.lstsq(rows / y[:, None], np.ones_like(y), rcond=None)
    t0, c_call, c_byte = (max(0.0, float(c)) for c in coef)
    return Loopback(t0=t0, c_call=c_call, c_byte=c_byte)


def backend_cpu_per_byte(points: Sequence[Point]) -> float:
    """The backend's CPU per byte in or out: its CPU per round fitted like the round time, to
    ``a + b*(N-1) + c*N*W`` (so that the per-call CPU is not read as per-byte CPU); this is c."""
    rows = np.array([[1.0, p.n - 1, p.n * p.weights_mb * MIB] for p in points])
    y = np.array([statistics.median(p.backend_cpu_s) for p in points])
    (_, _, per_byte), *_ = np.linalg.lstsq(rows, y, rcond=None)
    return float(per_byte)


def report_measured(points: Sequence[Point]) -> tuple[Loopback, float]:
    model = fit(points)
    train = [p for p in points if p.n <= 16]
    held_out = [p for p in points if p.n > 16]
    check = fit(train) if held_out and len(train) >= 3 else None
    cpu_per_byte = backend_cpu_per_byte(points)
    base = {
        p.weights_mb: p for p in points if p.n == min(q.n for q in points if q.weights_mb == p.weights_mb)
    }
    for p in points:
        measured = statistics.median(p.seconds)
        predicted = model.round_s(p.n, p.weights_mb * MIB)
        extra = {}
        if check is not None and p in held_out:
            extra["held_out_prediction_s"] = round(check.round_s(p.n, p.weights_mb * MIB), 4)
            extra["held_out_error"] = round(extra["held_out_prediction_s"] / measured - 1, 3)
        b = base[p.weights_mb]
        emit(
            f"loopback_round_n{p.n}_{p.weights_mb:g}mib", "s", p.seconds,
            baseline=f"N={b.n} round at the same W, alternated in the same repetitions",
            baseline_samples=b.seconds, target="",
            model_s=round(predicted, 4), model_error=round(predicted / measured - 1, 3),
            backend_cpu_s_median=round(statistics.median(p.backend_cpu_s), 4),
            n_learners=p.n, weights_mb=p.weights_mb, **extra,
        )  # fmt: skip
    errors = [abs(model.round_s(p.n, p.weights_mb * MIB) / statistics.median(p.seconds) - 1) for p in points]
    line = {
        "name": "loopback_fit",
        **{k: float(f"{v:.4g}") for k, v in asdict(model).items()},
        "effective_backend_mib_s": round(model.effective_mib_s, 1),
        "backend_cpu_per_byte": float(f"{cpu_per_byte:.4g}"),
        "backend_relay_mib_s_per_core": round(1 / cpu_per_byte / MIB, 1) if cpu_per_byte > 0 else None,
        "max_abs_error": round(max(errors), 3),
        "median_abs_error": round(statistics.median(errors), 3),
        "held_out_fit": None if check is None else {k: float(f"{v:.4g}") for k, v in asdict(check).items()},
        "points": len(points),
        "load_average": [round(x, 1) for x in psutil.getloadavg()],
    }
    print(json.dumps(line), flush=True)
    return model, cpu_per_byte


# -- predictions ---------------------------------------------------------------------------------------------


def predictions(quick: bool, relay_bytes_s: float, sha: float) -> None:
    w = 1 * GB
    links_gbit = (10, 25, 100)
    ns = (4, 16, 64, 256, 1024) if quick else (4, 8, 16, 32, 64, 128, 256, 512, 1024)
    designs = (("star", 0), ("chain", 1), ("tree", 2), ("tree", 4), ("tree", 8))
    for gbit in links_gbit:
        for relay_limited in (False, True):
            net = Network(
                bandwidth=gbit * GB / 8,
                sha256_bytes_s=sha,
                relay_bytes_s=relay_bytes_s if relay_limited else math.inf,
            )
            for n in ns:
                row = {}
                for design, k in designs:
                    key = design if design != "tree" else f"tree{k}"
                    closed = distribution_s(design, n, w, net, k or 2)
                    sim = simulate(design, n, w, net, k or 2)["distribution_s"]
                    row[key] = {"closed_form_s": round(closed, 2), "simulated_s": round(sim, 2)}
                print(
                    json.dumps(
                        {
                            "name": f"distribution_1gb_{gbit}gbit_n{n}"
                            + ("_relay_cpu" if relay_limited else ""),
                            "unit": "s",
                            "n_learners": n,
                            "weights_bytes": w,
                            "link_gbit_s": gbit,
                            "backend_relay_limit_mib_s": round(relay_bytes_s / MIB)
                            if relay_limited
                            else None,
                            "designs": row,
                        }
                    ),
                    flush=True,
                )
    for gbit in links_gbit:
        b = gbit * GB / 8
        limits = {
            f"{budget_s:g}s": {
                "link": star_limit(w, b, budget_s),
                "link_and_relay_cpu": star_limit(w, b, budget_s, relay_bytes_s),
            }
            for budget_s in (60, 300, 900)
        }
        print(
            json.dumps({"name": f"star_limit_1gb_{gbit}gbit", "unit": "largest N", "budgets": limits}),
            flush=True,
        )


def failure_cost(net: Network, w: float, fraction_done: float, detect_s: float, k: int) -> dict[str, float]:
    """Extra seconds when a relaying voter dies after ``fraction_done`` of the stream; its children resume
    from their last verified part under the dead node's parent (chain: the parent's uplink is free again;
    tree: the parent's uplink now carries its own k-1 other children plus the k orphans)."""
    remaining = (1 - fraction_done) * w
    chain = detect_s + hop_s(net, 1)
    tree = detect_s + (k - 1) * remaining / net.bandwidth + hop_s(net, 2 * k - 1)
    to_backend = detect_s + (k * remaining) / net.bandwidth
    return {
        "chain_s": round(chain, 3),
        f"tree{k}_s": round(tree, 3),
        f"tree{k}_orphans_to_backend_s": round(to_backend, 3),
    }


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and repetitions")
    parser.add_argument(
        "--runs", type=int, default=None, help="repetitions of each measured point (5; quick 3)"
    )
    parser.add_argument("--measure", action="store_true", help="measure the loopback points and fit them")
    parser.add_argument("--max-learners", type=int, default=64, help="largest N measured at 1 MiB (64)")
    parser.add_argument(
        "--large-mb", type=float, nargs="+", default=[10.0], help="the larger W measured (N <= 16), MiB (10)"
    )
    parser.set_defaults(default_runs=5, quick_runs=3)
    args = parser.parse_args()
    started = time.perf_counter()
    sha = sha256_rate()
    log(f"sim: sha256 {sha / MIB:.0f} MiB/s on one core")
    model, cpu_per_byte = ISSUE16_LOOPBACK, ISSUE16_BACKEND_CPU_PER_BYTE
    if args.measure:
        ns = [n for n in (4, 8, 16, 32, 64, 128) if n <= args.max_learners]
        if args.quick:
            ns = [n for n in ns if n <= 32]
        large = [n for n in ns if n <= 16]
        points = [(n, 1.0) for n in ns] + [(n, mb) for mb in args.large_mb for n in large]
        model, cpu_per_byte = report_measured(measure(points, runs_from(args)))
    relay = 1 / cpu_per_byte if cpu_per_byte > 0 else math.inf
    print(
        json.dumps(
            {
                "name": "model_constants",
                "loopback": {k: float(f"{v:.4g}") for k, v in asdict(model).items()},
                "measured_now": args.measure,
                "sha256_mib_s": round(sha / MIB),
                "backend_relay_mib_s_per_core": round(relay / MIB, 1),
                "part_bytes": PART_BYTES,
                # What the loopback fit says of points measured elsewhere (bench_scale --learners 128,
                # bench_round_100mb), to compare with those figures.
                "loopback_predictions_s": {
                    f"n{n}_{mb:g}mib": round(model.round_s(n, mb * MIB), 3)
                    for n, mb in ((128, 1.0), (4, 100.0), (8, 100.0))
                },
            }
        ),
        flush=True,
    )
    predictions(args.quick, relay, sha)
    for gbit in (10, 25, 100):
        net = replace(Network(bandwidth=gbit * GB / 8), sha256_bytes_s=sha)
        print(
            json.dumps(
                {
                    "name": f"relay_failure_cost_1gb_{gbit}gbit",
                    "unit": "s",
                    "informational": "extra seconds when a relaying voter dies half-way, detected in 2 s",
                    **failure_cost(net, 1 * GB, 0.5, 2.0, 4),
                }
            ),
            flush=True,
        )
    log(f"sim_round_scaling: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
