"""``colearn-backend run`` and ``demo``: an experiment from the command line, with a console, signals and
exit codes.

Exit codes (docs/experiments.md):
- 0: every round of the run is done;
- 1: the run could not start or go on (one line says why; the run directory, if any, can be resumed);
- 2: the command line is wrong (argparse's usage line);
- 75: stopped by the first SIGINT or SIGTERM after the round in progress; resume it;
- 130: aborted by a second SIGINT or SIGTERM at once; resume it (nothing acknowledged is lost).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from backend_client.experiment import Experiment, RunConfig, RunOutcome, connect
from backend_client.journal import read
from backend_client.learner_client import Deadlines, LearnerClient
from backend_client.results import Result
from backend_client.run_directory import RunDirectory, default_path
from backend_client.run_history import RunHistory
from colearn_runtime.transport_security import ClientSecurity

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_ABORTED = 0, 1, 75, 130
#: The configuration a resumed run keeps; only the number of rounds may grow.
_IDENTITY = ("model_tag", "dataloader_tag", "vote_threshold", "quorum", "model_params", "dataloader_params")


@dataclass(frozen=True)
class RunRequest:
    """What the command line asks for; ``config`` is None when a resume takes it from the journal."""

    config: RunConfig | None
    addresses: list[str] | None
    out: Path | None = None
    resume: Path | None = None
    resume_if_exists: bool = False
    rounds: int | None = None
    min_learners: int | None = None
    connect_timeout: float = 30.0
    deadlines: Deadlines = field(default_factory=Deadlines)
    security: ClientSecurity | None = None
    metrics_port: int = 0
    metrics_linger: float = 10.0


def describe(result: Result) -> str:
    """One console line: what the proposal scored, and what the fleet holds (not the same thing)."""
    criterion = f"mean test {result.criterion or 'score'}"
    fleet = "n/a" if result.fleet_test_score is None else f"{result.fleet_test_score:.3f}"
    if result.round_index is None:
        return f"start: fleet {criterion} {fleet}"
    head = f"round {result.round_index}: learner {result.block_proposer} proposed"
    if result.void:
        return f"{head}; void ({result.reason}); fleet {criterion} stays {fleet}"
    voters = sum(1 for o in result.outcomes if o in ("approve", "reject", "none"))
    proposal = "n/a" if result.mean_test_score is None else f"{result.mean_test_score:.3f}"
    if result.vote:
        recovered = " (completed after the backend restarted)" if result.recovered else ""
        votes = f"{result.approvals} of {voters} approved"
        return f"{head}; accepted{recovered} ({votes}); fleet {criterion} {fleet}"
    return (
        f"{head}; rejected ({result.approvals} of {voters} approved); proposal scored {proposal}, "
        f"fleet {criterion} stays {fleet}"
    )


@contextlib.contextmanager
def interrupts(stop: threading.Event, say: Callable[[str], None]) -> Iterator[None]:
    """The first SIGINT or SIGTERM stops the run after the round in progress; a second aborts at once.
    No traceback for either: the journal on disk is consistent at every moment."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            say(f"{name} again: aborting now; the run can be resumed")
            sys.stderr.flush()
            os._exit(EXIT_ABORTED)
        stop.set()
        say(f"{name}: stopping after the round in progress ({name} again aborts at once)")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_experiment(request: RunRequest, console: Console) -> int:
    """Starts or resumes the run the request names and plays it to its end or its interruption. A resume
    without learner addresses takes the journal's."""
    run, resuming = _open_run(request)
    try:
        history = RunHistory.from_records(read(run.journal)) if resuming else None
        config = _config(request, history)
        addresses = request.addresses or (history.learners if history else None)
        if not addresses:
            raise ValueError("no learners: give --learners, --n_learners, --dns or --statefulset")
        outcome = _drive(run, addresses, config, request, console, resuming)
    except BaseException:
        _discard_if_empty(run)
        raise
    finally:
        run.close()
    return _report_outcome(outcome, run, console)


def _open_run(request: RunRequest) -> tuple[RunDirectory, bool]:
    if request.resume is not None:
        return RunDirectory.open(request.resume), True
    out = request.out or default_path()
    if request.resume_if_exists and (out / "journal.jsonl").is_file():
        return RunDirectory.open(out), True
    return RunDirectory.create(out), False


def _config(request: RunRequest, history: RunHistory | None) -> RunConfig:
    if history is None:
        if request.config is None:
            raise ValueError("a new run needs --model_tag and --dataloader_tag (or --resume RUN_DIR)")
        return request.config
    kept = RunConfig.from_dict(history.config)
    if request.config is not None:
        for name in _IDENTITY:
            given, stored = getattr(request.config, name), getattr(kept, name)
            if given != stored:
                raise ValueError(
                    f"this run was started with {name} {stored!r}, not {given!r}: a resumed run keeps its "
                    "configuration (only --rounds may change)"
                )
    rounds = request.rounds if request.rounds is not None else kept.rounds
    if rounds < history.next_round:
        raise ValueError(f"the run has played {history.next_round} rounds already; --rounds must not be less")
    return replace(kept, rounds=rounds)


def _drive(
    run: RunDirectory,
    addresses: Sequence[str],
    config: RunConfig,
    request: RunRequest,
    console: Console,
    resuming: bool,
) -> RunOutcome:
    config.check(len(addresses))
    minimum = request.min_learners or len(addresses)
    if not 1 <= minimum <= len(addresses):
        raise ValueError(f"--min_learners must be within [1, {len(addresses)}], got {minimum}")
    deadlines = replace(request.deadlines, connect=min(2.0, request.connect_timeout))
    learners = [
        LearnerClient(f"learner-{i}", address, deadlines=deadlines, security=request.security)
        for i, address in enumerate(addresses)
    ]
    stop = threading.Event()
    metrics, server = _metrics(request.metrics_port, console)
    try:
        say = console.print
        present = connect(learners, minimum, request.connect_timeout, say)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with interrupts(stop, say), Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("rounds", total=config.rounds)

            def on_round(result: Result) -> None:
                progress.console.print(describe(result))
                progress.update(task, completed=result.round_index + 1)

            experiment = Experiment(
                run, learners, config, stop=stop, metrics=metrics, on_round=on_round,
                report=progress.console.print,
            )  # fmt: skip
            try:
                if resuming:
                    experiment.resume(present)
                else:
                    experiment.start(present)
                    run.link_as_latest()
                assert experiment.history is not None
                progress.update(task, completed=experiment.history.next_round)
                if not resuming and experiment.history.initial is not None:
                    progress.console.print(describe(experiment.history.initial))
                return experiment.play()
            finally:
                experiment.close()
    finally:
        for learner in learners:
            learner.stop()
        if server is not None:
            _linger(request.metrics_linger, stop)
            server.shutdown()
            server.server_close()


def _linger(seconds: float, stop: threading.Event) -> None:
    """Keeps the metrics up a little after a run that ended by itself, so that Prometheus scrapes its last
    round; a signal ends the wait at once (and a run stopped by one does not wait)."""
    if stop.is_set():
        return
    with interrupts(stop, lambda line: None):
        stop.wait(seconds)


def _metrics(port: int, console: Console) -> tuple[Any, Any]:
    if not port:
        return None, None
    from backend_client.backend_metrics import BackendMetrics

    metrics = BackendMetrics()
    try:
        server = metrics.serve("::", port)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on port {port}: {exc}") from None
    console.print(f"metrics on port {server.server_port}")
    return metrics, server


def _report_outcome(outcome: RunOutcome, run: RunDirectory, console: Console) -> int:
    history = outcome.history
    rounds = len(history.rounds)
    summary = (
        f"{history.accepted_rounds} of {rounds} rounds accepted; fleet weights {history.fleet_sha256[:12]}; "
        f"model in {run.model}, results in {run.results} and {run.plot.name}"
    )
    if outcome.status == "interrupted":
        console.print(f"stopped before round {history.next_round}: {summary}")
        console.print(f"resume with: colearn-backend run --resume {run.path}")
        return EXIT_INTERRUPTED
    console.print(summary)
    return EXIT_OK


def _discard_if_empty(run: RunDirectory) -> None:
    """A start that failed before its journal leaves no run behind (only what was there before)."""
    if run.journal.exists():
        return
    with contextlib.suppress(OSError):
        (run.path / "run.lock").unlink()
        run.path.rmdir()
