"""Figure (b): how the round time grows with the fleet, with 0.5 s training and 0.5 s evaluation per call.

Eight TOY learner processes with tiny weights (1 KiB), so that only the fan-out shows. Ours is
``collective_learning_round`` over the first N of them; the baseline, measured side by side, is the
colearn-0.2.8-style sequential round of ``bench_round_100mb`` (the proposer also tests its own proposal,
every call in turn, the accept resends the weights). colearn's sequential rounds give 4.5x from N=1 to
N=8: (0.5 + 8 x 0.5) / (0.5 + 0.5).

The target reads "round time at N=8 over N=1 <= 1.15x". Note that with our rounds N=1 has no voter at all
(the proposer never votes), so its round is training alone (0.5 s) while any N >= 2 is training plus one
evaluation (1.0 s): N=8 over N=1 is therefore about 2x by construction. The script also reports N=8 over
N=2, which isolates what fan-out is meant to keep flat (1 voter vs 7 voters), and N=8 over the ideal
train+eval time. Ratios are taken per repetition (paired runs) and their median is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from bench_round_100mb import colearn_028_round
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import LearnerProcesses, toy_clients

from backend_client.learner_client import LearnerClient
from backend_client.rounds import collective_learning_round
from colearn_runtime.memory_reuse import reuse_freed_memory

N_MAX = 8
TRAIN_S = 0.5
EVAL_S = 0.5
WEIGHTS_MB = 1.0 / 1024
VOTE_THRESHOLD = 0.5
TARGET = "<= 1.15"
COLEARN_SEQUENTIAL_RATIO = 4.5


def timed_round(kind: Callable[..., object], learners: Sequence[LearnerClient], round_index: int) -> float:
    start = time.perf_counter()
    outcome = kind(learners, VOTE_THRESHOLD, round_index)
    elapsed = time.perf_counter() - start
    accepted = outcome if isinstance(outcome, bool) else getattr(outcome, "vote", False)
    if not accepted:
        raise RuntimeError(f"round {round_index} over {len(learners)} learners was not accepted: {outcome}")
    return elapsed


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    args = repetitions_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3).parse_args()
    runs = runs_from(args)
    ours: dict[int, list[float]] = {1: [], 2: [], 8: []}
    seq: dict[int, list[float]] = {1: [], 8: []}
    fleet = LearnerProcesses(N_MAX)
    clients: list[LearnerClient] = []
    try:
        fleet.start()
        clients = toy_clients(fleet.addresses, WEIGHTS_MB, TRAIN_S, EVAL_S)
        collective_learning_round(clients, VOTE_THRESHOLD, 0)  # warm-up: channels and threads
        round_index = 1
        for r in range(runs):
            for n in ours:
                # a fresh round index each time, so that the proposer (round_index % n) rotates
                ours[n].append(timed_round(collective_learning_round, clients[:n], round_index))
                round_index += 1
            for n in seq:
                seq[n].append(timed_round(colearn_028_round, clients[:n], round_index))
                round_index += 1
            log(
                f"fanout run {r + 1}/{runs}: ours N=1 {ours[1][-1]:.3f} s, N=2 {ours[2][-1]:.3f} s, "
                f"N=8 {ours[8][-1]:.3f} s; sequential N=1 {seq[1][-1]:.3f} s, N=8 {seq[8][-1]:.3f} s"
            )
    finally:
        for client in clients:
            client.stop()
        fleet.stop()

    def paired(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    ours_8_1 = paired(ours[8], ours[1])
    seq_8_1 = paired(seq[8], seq[1])
    emit(
        "fanout_round_ratio_n8_over_n1", "x", ours_8_1,
        baseline="colearn-0.2.8-style sequential round N=8 over N=1, same run", baseline_samples=seq_8_1,
        target=TARGET, target_on="median",
        reference_colearn_sequential_ratio=COLEARN_SEQUENTIAL_RATIO,
        ours_round_s_median={str(n): round(statistics.median(v), 4) for n, v in ours.items()},
        sequential_round_s_median={str(n): round(statistics.median(v), 4) for n, v in seq.items()},
        note="ours at N=1 has no voter (train only), so N=8/N=1 is ~(train+eval)/train = 2x by design",
    )  # fmt: skip
    emit(
        "fanout_round_ratio_n8_over_n2", "x", paired(ours[8], ours[2]),
        baseline="colearn-0.2.8-style sequential round N=8 over N=1, same run", baseline_samples=seq_8_1,
        target=TARGET, target_on="median",
        note="1 voter vs 7 voters: what concurrent fan-out keeps flat",
    )  # fmt: skip
    emit(
        "fanout_round_time_n8", "s", ours[8],
        baseline="colearn-0.2.8-style sequential round, N=8, same run", baseline_samples=seq[8],
        target="", ideal_s=TRAIN_S + EVAL_S,
        ratio_to_ideal=round(statistics.median(ours[8]) / (TRAIN_S + EVAL_S), 4),
    )  # fmt: skip


if __name__ == "__main__":
    main()
