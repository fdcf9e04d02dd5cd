"""The fixed cost of a round over gRPC: a small family's round over learner processes against the same round
over the same models in process.

For each family and N, the script starts N learner processes, sets each up, builds the same N models in
this process with the learner's own factory, and then alternates, in every repetition:

- the **in-process round**: ``collective_learning_round`` over the N MLIs directly (no gRPC, no encoding),
  the baseline;
- the **gRPC round**: ``collective_learning_round`` over N ``LearnerClient``s (ProposeWeights, TestWeights
  to N-1 voters, AcceptProposal to N);
- the **resynced gRPC round**: the round an experiment plays, ``resynced_round`` (a GetStatus to every
  learner first).

Families: ``TOY`` with 1 KiB of weights and 0 s of training and evaluation (what is left is the fixed cost
alone), and ``SKLEARN_DIGITS`` on ``DIGITS`` sharded N ways. The figure is the median of the per-repetition
differences gRPC - in-process, in milliseconds (paired, so that the machine's noise falls on both alike);
the issue's target is ``<= 5`` ms.

``--families`` and ``--sizes`` limit the run; ``--quick`` takes fewer repetitions.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import toy_learner  # noqa: F401  (registers TOY in this process, for the in-process models)
from figures import emit, log, repetitions_parser, runs_from
from learner_processes import LearnerProcesses

from backend_client.learner_client import LearnerClient
from backend_client.results import Result
from backend_client.resync import FleetWeights, resynced_round
from backend_client.rounds import collective_learning_round, play_round
from colearn_contract.mli import MachineLearningInterface, Weights
from colearn_learner.factory import ExampleMliFactory
from colearn_runtime.memory_reuse import reuse_freed_memory

VOTE_THRESHOLD = 0.5
TARGET_MS = "<= 5"


@dataclass(frozen=True)
class Family:
    model: str
    dataloader: str
    model_params: dict[str, Any]

    def data_params(self, i: int, n: int) -> dict[str, Any]:
        return {"shard": i, "n_shards": n} if self.dataloader == "DIGITS" else {"seed": 0}


FAMILIES = (
    Family("TOY", "TOY", {"weights_mb": 1 / 1024, "train_seconds": 0.0, "eval_seconds": 0.0}),
    Family("SKLEARN_DIGITS", "DIGITS", {}),
)
SIZES = (3, 8)


def timed(play: Callable[[int], Result], round_index: int) -> float:
    start = time.perf_counter()
    result = play(round_index)
    elapsed = time.perf_counter() - start
    if result.void:
        raise RuntimeError(f"round {round_index} was void: {result.reason}")
    return elapsed


def measure(family: Family, n: int, clients: Sequence[LearnerClient], runs: int) -> None:
    factory = ExampleMliFactory()
    model_params = json.dumps(family.model_params)
    params = [json.dumps(family.data_params(i, n)) for i in range(n)]
    local: list[MachineLearningInterface] = [
        factory.get_mli(family.model, model_params, family.dataloader, p) for p in params
    ]
    for client, p in zip(clients, params, strict=True):
        client.setup_ml(family.dataloader, p, family.model, model_params)
    fleet = FleetWeights()

    accepted: list[Weights] = []

    def in_process(r: int) -> Result:
        return collective_learning_round(local, VOTE_THRESHOLD, r)

    def over_grpc(r: int) -> Result:
        outcome = play_round(clients, VOTE_THRESHOLD, r)
        if outcome.accepted is not None:
            accepted.append(outcome.accepted)  # recorded after the clock stops
        return outcome.result

    def resynced(r: int) -> Result:
        # The plain round's accepted proposal is the fleet's weights: a resync then finds every learner
        # current, as in a run, and sends no weights.
        if accepted:
            fleet.accepted(accepted[-1])
            accepted.clear()
        return resynced_round(fleet, clients, VOTE_THRESHOLD, r)

    arms = {"in_process": in_process, "grpc": over_grpc, "grpc_resynced": resynced}
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(runs + 2):  # two warm-up repetitions: channels, threads, first-call set-up
        order = list(arms.items())
        if r % 2:
            order.reverse()  # neither arm always runs right after the other
        for name, play in order:
            elapsed = timed(play, r)
            if r >= 2:
                samples[name].append(elapsed * 1e3)
    tag = f"{family.model} N={n}"
    log(f"{tag}: " + ", ".join(f"{k} {statistics.median(v):.1f} ms" for k, v in samples.items()))
    base = samples["in_process"]
    for arm in ("grpc", "grpc_resynced"):
        differences = [g - i for g, i in zip(samples[arm], base, strict=True)]
        emit(
            f"{tag}: {arm} round - in-process round",
            "ms",
            differences,
            baseline="the same round over the same models in process, same run",
            baseline_samples=base,
            ratio=statistics.median(g / i for g, i in zip(samples[arm], base, strict=True)),
            target=TARGET_MS,
            target_on="median",
            round_ms=round(statistics.median(samples[arm]), 3),
            family=family.model,
            n_learners=n,
            informational="median = median of paired differences; ratio = median of paired gRPC/in-process",
        )


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    parser = repetitions_parser(__doc__.splitlines()[0], default_runs=30, quick_runs=10)
    parser.add_argument("--families", default="", help="comma-separated model tags (default: all)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes (default 3,8)")
    args = parser.parse_args()
    wanted = {t.strip() for t in args.families.split(",") if t.strip()}
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    runs = runs_from(args)
    with LearnerProcesses(max(sizes)) as processes:
        clients = [LearnerClient(f"learner-{i}", a).start() for i, a in enumerate(processes.addresses)]
        try:
            for family in FAMILIES:
                if wanted and family.model not in wanted:
                    continue
                for n in sizes:
                    measure(family, n, clients[:n], runs)
        finally:
            for client in clients:
                client.stop()


if __name__ == "__main__":
    main()
