"""Where the time of a 100 MB round goes: each stage of the weights path, and the CPU a round burns.

Not a target figure but the analysis behind figures (a) and (c). Part one times, in this process, every
step a 100 MiB proposal takes through the product's own functions, in the order a round runs them, and
compares each with one memcpy of the same bytes into a warm buffer (the ratio says "how many memcpys").
Part two runs real rounds over N=4 TOY learner processes and reads, per round, the user and system CPU
seconds and the minor page faults of the proposer, the voters and this backend process from /proc.
(Part three of earlier versions, a what-if in which the backend relays the serialized parts untouched, is
what the product does now: ``colearn_contract.weight_relay``.)
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import LearnerProcesses, toy_clients
from toy_learner import ToyLearner

from backend_client.learner_client import LearnerClient
from backend_client.rounds import collective_learning_round
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_relay import receive_relayed
from colearn_contract.weight_stream import EncodedWeights, assemble, wire_parts
from colearn_learner.weight_adapters import decode_weights, encode_weights
from colearn_runtime.memory_reuse import reuse_freed_memory

WEIGHTS_MB = 100.0
N_LEARNERS = 4
_CLK_TCK = 100.0
MB = 1024 * 1024


def timed(call: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    samples, result = [], None
    for _ in range(runs):
        result = None  # let the previous result go first, as the product does between rounds
        start = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - start)
    return samples, result


def stages(runs: int) -> None:
    model = ToyLearner(WEIGHTS_MB, 0.0, 0.0, 0)
    weights = model.mli_get_current_weights()
    array = weights.weights["w"]
    warm = np.empty_like(array)
    np.copyto(warm, array)
    memcpy, _ = timed(lambda: np.copyto(warm, array), runs)

    state: dict[str, Any] = {}

    def encode() -> Any:
        state["data"], _ = encode_weights(weights)
        return state["data"]

    def wrap() -> Any:
        state["encoded"] = EncodedWeights.wrap(state["data"], proposal_id="p")
        return state["encoded"]

    def frame() -> Any:
        state["wire"] = list(wire_parts(state["encoded"]))
        return state["wire"]

    def parse() -> Any:
        state["received"] = [pb.TestWeightsRequest.FromString(w) for w in state["wire"]]
        return state["received"]

    def join() -> Any:
        state["joined"] = assemble((message.part for message in state["received"]), 1 << 40)
        return state["joined"]

    def relay() -> Any:
        return receive_relayed(iter(state["wire"]), 1 << 40)

    def decode() -> Any:
        return decode_weights(state["joined"].data)

    steps: list[tuple[str, str, Callable[[], Any]]] = [
        ("learner: encode_weights (safetensors layout, in place)", "proposer", encode),
        ("learner: sha256 (EncodedWeights.wrap)", "proposer", wrap),
        ("sender: wire_parts (the parts' messages, data copied once)", "proposer, GetCurrentWeights", frame),
        ("backend: receive_relayed (parse, sha256, keep the wire bytes)", "backend", relay),
        ("voter: protobuf parse of parts", "every voter", parse),
        ("voter: assemble (sha256 per part, one preallocated buffer)", "every voter", join),
        ("voter: decode_weights (views of the buffer)", "every voter, SetWeights", decode),
    ]
    total: list[float] = []
    for name, where, call in steps:
        samples, _ = timed(call, runs)
        total.append(statistics.median(samples))
        emit(
            f"stage_100mb: {name}", "s", samples,
            baseline="memcpy of the same 100 MiB into a warm buffer", baseline_samples=memcpy,
            target="", informational="ratio = cost in memcpys", runs_in=where,
        )  # fmt: skip
    log(f"stages: sum of medians {sum(total):.3f} s for one hop, memcpy {statistics.median(memcpy):.4f} s")


def proc_times(pid: int) -> tuple[float, float, int]:
    """user s, system s, minor faults of one process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK, int(fields[7])


def self_times() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def rounds(runs: int) -> None:
    fleet = LearnerProcesses(N_LEARNERS)
    clients: list[LearnerClient] = []
    roles: dict[str, dict[str, list[float]]] = {
        role: {"user_s": [], "sys_s": [], "minor_faults": []} for role in ("proposer", "voters", "backend")
    }
    walls: list[float] = []
    cpu: list[float] = []
    rss_setup: list[float] = []
    rss_after: list[float] = []
    try:
        fleet.start()
        clients = toy_clients(fleet.addresses, WEIGHTS_MB)
        rss_setup = [psutil.Process(pid).memory_info().rss / MB for pid in fleet.pids]
        collective_learning_round(clients, 0.5, 0)  # warm-up
        for r in range(1, runs + 1):
            proposer = r % N_LEARNERS
            before = [proc_times(pid) for pid in fleet.pids]
            mine = self_times()
            start = time.perf_counter()
            collective_learning_round(clients, 0.5, r)
            walls.append(time.perf_counter() - start)
            after = [proc_times(pid) for pid in fleet.pids]
            mine_after = self_times()
            deltas = [
                tuple(a - b for a, b in zip(x, y, strict=True)) for x, y in zip(after, before, strict=True)
            ]
            voters = [d for i, d in enumerate(deltas) if i != proposer]
            per_role = {
                "proposer": deltas[proposer],
                "voters": tuple(sum(v[k] for v in voters) for k in range(3)),
                "backend": tuple(a - b for a, b in zip(mine_after, mine, strict=True)),
            }
            for role, (user, system, faults) in per_role.items():
                roles[role]["user_s"].append(user)
                roles[role]["sys_s"].append(system)
                roles[role]["minor_faults"].append(faults)
            cpu.append(sum(u + s for u, s, _ in per_role.values()))
            log(f"profile round {r}/{runs}: wall {walls[-1]:.3f} s, cpu {cpu[-1]:.2f} s")
        # Enough further rounds that every learner has filled its proposal cache (proposal_cache_size=4).
        for r in range(runs + 1, max(runs + 1, 7)):
            collective_learning_round(clients, 0.5, r)
        rss_after = [psutil.Process(pid).memory_info().rss / MB for pid in fleet.pids]
    finally:
        for client in clients:
            client.stop()
        fleet.stop()
    breakdown = {
        role: {k: round(statistics.median(v), 3) for k, v in values.items()} for role, values in roles.items()
    }
    emit(
        "round_cpu_n4_100mb", "cpu-s", cpu,
        baseline="wall time of the same rounds", baseline_samples=walls,
        target="", informational="ratio = CPU seconds per wall second (2 cores: at most 2)",
        per_role_median=breakdown,
    )  # fmt: skip
    emit(
        "learner_rss_after_rounds_100mb", "MB", rss_after,
        baseline="RSS of the same learners right after MLSetup (one 100 MiB model)",
        baseline_samples=rss_setup, target="",
        informational="samples: the N learners after at least 6 rounds; default proposal_cache_size=4",
    )  # fmt: skip


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    args = repetitions_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3).parse_args()
    runs = runs_from(args)
    stages(runs)
    rounds(runs)


if __name__ == "__main__":
    main()
