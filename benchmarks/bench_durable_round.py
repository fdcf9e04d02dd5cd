"""What a durable run costs per round: the journal's records and the model file, against the same round
without them.

An experiment journals each accepted round twice (``decided``, fsync'd, before any learner is asked to
accept; ``round`` after), writes the accepted weights to the run directory's model file (temp file, fsync,
rename, fsync of the folder) before the accept fan-out, and rewrites ``results.json``. The baseline is the
round without any of it: ``resynced_round`` over the same learners and the same fleet weights. Rounds of
both kinds alternate over N=4 TOY learner processes (training and evaluation take 0 s), for weights of
1 MiB and 100 MiB, so that the machine's noise falls on both alike. Also reported: the write of the model
file on its own, and one journal append.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from figures import emit, log, repetitions_parser, runs_from
from learner_processes import LearnerProcesses, toy_clients

from backend_client import fleet_model
from backend_client.experiment import Experiment, RunConfig
from backend_client.journal import Journal
from backend_client.resync import resynced_round
from backend_client.run_directory import RunDirectory
from colearn_runtime.memory_reuse import reuse_freed_memory

N_LEARNERS = 4
VOTE_THRESHOLD = 0.5


def measure(weights_mb: float, runs: int, root: Path) -> None:
    fleet = LearnerProcesses(N_LEARNERS)
    clients = []
    try:
        fleet.start()
        clients = toy_clients(fleet.addresses, weights_mb)
        config = RunConfig("TOY", "TOY", rounds=10**6, model_params={"weights_mb": weights_mb})
        run = RunDirectory.create(root / f"run-{weights_mb:g}mb")
        experiment = Experiment(run, clients, config)
        experiment.start(present=range(N_LEARNERS))
        durable: list[float] = []
        plain: list[float] = []
        model_writes: list[float] = []
        round_index = 0
        for r in range(runs + 1):  # the first pair warms up: first-touch faults, channel set-up
            start = time.perf_counter()
            experiment._play_round(round_index)
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            result = resynced_round(experiment.fleet, clients, VOTE_THRESHOLD, round_index + 1)
            baseline = time.perf_counter() - start
            if not result.vote:
                raise RuntimeError(f"the baseline round was not accepted: {result.reason or result.errors}")
            assert experiment.fleet.current is not None
            start = time.perf_counter()
            fleet_model.write(root / "alone.safetensors", experiment.fleet.current.weights, {})
            written = time.perf_counter() - start
            round_index += 2
            if r == 0:
                continue
            durable.append(elapsed)
            plain.append(baseline)
            model_writes.append(written)
            log(f"durable_round {weights_mb:g} MiB {r}/{runs}: {elapsed:.3f} s, plain {baseline:.3f} s")
        experiment.close()
        run.close()
    finally:
        for client in clients:
            client.stop()
        fleet.stop()
    label = f"{weights_mb:g}mb".replace(".", "_")
    emit(
        f"durable_round_n4_{label}", "s", durable,
        baseline="the same round without journal and model file (resynced_round), same run",
        baseline_samples=plain, informational="ratio = durable / plain",
        added_median_s=round(statistics.median(d - p for d, p in zip(durable, plain, strict=True)), 4),
        n_learners=N_LEARNERS, weights_mb=weights_mb,
    )  # fmt: skip
    emit(
        f"model_file_write_{label}", "s", model_writes,
        baseline="the plain round's median", baseline_value=statistics.median(plain),
        informational="ratio = model file write / plain round", weights_mb=weights_mb,
    )  # fmt: skip


def journal_appends(runs: int, root: Path) -> None:
    record = {"kind": "round", "round": 0, "result": {"outcomes": ["approve"] * 8, "scores": [0.9] * 8}}
    samples = []
    with Journal(root / "journal.jsonl") as journal:
        for _ in range(max(runs, 5) * 20):
            start = time.perf_counter()
            journal.append(record)
            samples.append(time.perf_counter() - start)
    emit(
        "journal_append", "s", samples, baseline="none (an fsync'd append of one round record)",
        informational="two per accepted round, one per other round",
    )  # fmt: skip


def main() -> None:
    reuse_freed_memory(one_heap=True)  # this process plays the backend: the settings colearn-backend applies
    args = repetitions_parser(__doc__.splitlines()[0], default_runs=7, quick_runs=3).parse_args()
    runs = runs_from(args)
    with tempfile.TemporaryDirectory(prefix="colearn-bench-") as folder:
        root = Path(folder)
        journal_appends(runs, root)
        for weights_mb in (1.0, 100.0):
            measure(weights_mb, runs, root)


if __name__ == "__main__":
    main()
