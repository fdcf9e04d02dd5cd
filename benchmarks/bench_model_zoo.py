"""Model-zoo figures: each family's weights size, propose and test seconds, and the transport overhead.

For every built-in family the script writes small synthetic data in the family's original format
(``colearn-data fixtures``), splits it across 3 learners, and then runs, side by side and alternating:

- the **in-process round**: ``collective_learning_round`` over 3 MLIs built by the learner's own factory in
  this process (no gRPC, no encoding), the baseline;
- the **gRPC round**: the same round over 3 learner processes set up with the same parameters.

The ratio gRPC/in-process is the transport's cost (streaming, safetensors encoding, hashing). The issue's
target is ``<= 1.10`` for KERAS_MNIST. Each figure is the median over the repetitions; the ratio is the
median of per-repetition ratios (paired runs, so machine noise hits both sides alike).

``--families A,B`` limits the run; ``--quick`` takes fewer repetitions.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from figures import emit, log, repetitions_parser, runs_from
from learner_processes import LearnerProcesses

from backend_client.learner_client import LearnerClient
from backend_client.rounds import collective_learning_round
from colearn_contract.mli import MachineLearningInterface
from colearn_learner.data_cli import data_tools
from colearn_learner.factory import ExampleMliFactory
from colearn_learner.weight_adapters import encode_weights

N_LEARNERS = 3
VOTE_THRESHOLD = 0.5


@dataclass(frozen=True)
class Family:
    model: str
    dataloader: str
    model_params: dict[str, Any] = field(default_factory=dict)
    data_params: dict[str, Any] = field(default_factory=dict)
    target: str = ""  # on the gRPC/in-process ratio


# Small steps keep a run within minutes on 2 cores; the ratio, not the absolute time, is the figure.
FAMILIES = (
    Family("KERAS_MNIST", "KERAS_MNIST", {"steps_per_epoch": 20, "vote_batches": 4}, target="<= 1.10"),
    Family("KERAS_MNIST_RESNET", "KERAS_MNIST", {"steps_per_epoch": 1, "vote_batches": 1}),
    Family("KERAS_CIFAR10", "KERAS_CIFAR10", {"steps_per_epoch": 20, "vote_batches": 4}),
    Family("PYTORCH_XRAY", "PYTORCH_XRAY", {"steps_per_epoch": 10, "vote_batches": 2}),
    Family("PYTORCH_COVID_XRAY", "PYTORCH_COVID_XRAY", {"steps_per_epoch": 20}),
    Family("FRAUD", "FRAUD"),
    Family("KERAS_DIGITS", "DIGITS"),
    Family("PYTORCH_DIGITS", "DIGITS"),
    Family("SKLEARN_DIGITS", "DIGITS"),
)


def data_params(family: Family, work: Path) -> list[dict[str, Any]]:
    """Each learner's dataloader parameters: its folder of split fixtures, or its DIGITS shard."""
    if family.dataloader == "DIGITS":
        return [{**family.data_params, "shard": i, "n_shards": N_LEARNERS} for i in range(N_LEARNERS)]
    tool = data_tools()[family.dataloader]
    source = tool.fixtures(work / "source", 0)
    folders = tool.split(source, N_LEARNERS, work / "learners", 0)
    return [{**family.data_params, "location": str(folder)} for folder in folders]


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def timed_round(learners: Sequence[MachineLearningInterface], round_index: int) -> float:
    start = time.perf_counter()
    result = collective_learning_round(learners, VOTE_THRESHOLD, round_index)
    elapsed = time.perf_counter() - start
    if result.void:
        raise RuntimeError(f"round {round_index} was void: {result.reason}")
    return elapsed


def bench_family(family: Family, runs: int) -> None:
    factory = ExampleMliFactory()
    model_params = json.dumps(family.model_params)
    with tempfile.TemporaryDirectory(prefix=f"zoo-{family.model.lower()}-") as tmp:
        params = data_params(family, Path(tmp))
        log(f"{family.model}: building {N_LEARNERS} in-process learners")
        local = [
            factory.get_mli(family.model, model_params, family.dataloader, json.dumps(p)) for p in params
        ]
        weights_bytes = len(encode_weights(local[0].mli_get_current_weights())[0])
        propose_s = [timed(local[0].mli_propose_weights) for _ in range(runs)]
        proposal = local[0].mli_propose_weights()
        test_s = [timed(lambda: local[1].mli_test_weights(proposal)) for _ in range(runs)]
        with LearnerProcesses(N_LEARNERS, plugins=(), start_timeout=120) as fleet:
            clients = [LearnerClient(f"learner-{i}", a).start() for i, a in enumerate(fleet.addresses)]
            try:
                for client, p in zip(clients, params, strict=True):
                    client.setup_ml(family.dataloader, json.dumps(p), family.model, model_params)
                timed_round(clients, 0)  # warm-up: channels, threads, first-call framework set-up
                timed_round(local, 0)
                grpc_s, local_s = [], []
                for r in range(1, runs + 1):
                    local_s.append(timed_round(local, r))
                    grpc_s.append(timed_round(clients, r))
            finally:
                for client in clients:
                    client.stop()
    ratios = [g / i for g, i in zip(grpc_s, local_s, strict=True)]
    tag = family.model
    emit(f"{tag} weights size", "MB", [weights_bytes / 1e6], baseline="-", family=tag)
    emit(f"{tag} propose", "s", propose_s, baseline="-", family=tag)
    emit(f"{tag} test", "s", test_s, baseline="-", family=tag)
    emit(
        f"{tag} gRPC round, {N_LEARNERS} learners",
        "s",
        grpc_s,
        baseline="same learners in-process",
        baseline_samples=local_s,
        ratio=statistics.median(ratios),
        target=family.target,
        target_on="ratio",
        family=tag,
    )


def main() -> None:
    parser = repetitions_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3)
    parser.add_argument("--families", default="", help="comma-separated model tags (default: all)")
    args = parser.parse_args()
    wanted = {t.strip() for t in args.families.split(",") if t.strip()}
    unknown = wanted - {f.model for f in FAMILIES}
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; known: {[f.model for f in FAMILIES]}")
    for family in FAMILIES:
        if not wanted or family.model in wanted:
            bench_family(family, runs_from(args))


if __name__ == "__main__":
    main()
