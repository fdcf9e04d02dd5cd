"""An experiment: many rounds against a fleet, kept in a run directory so that it survives its backend.

A fresh run connects to the learners that answer (at least ``min_learners``), sets them up, takes the
first one's weights as the fleet's starting weights (written to the run's model file), gives them to every
learner and plays its rounds. Every round is resynced first (``backend_client.resync``): learners that
restarted are set up again, learners that lag get the fleet's weights, learners that cannot be reached
sit the round out as absent and join a later one.

Nothing a learner has accepted is ever lost or undone, wherever the backend dies:
1. once a round decides to accept, a ``decided`` record goes to the journal (fsync'd),
2. then the proposal is written to the model file (atomically),
3. only then is any learner asked to accept it,
4. and the ``round`` record follows.
A backend that resumes finds the journal and the model file: a ``decided`` round whose proposal is in the
model file is completed (learners that took it keep it, the others get it); one whose proposal never
reached the model file was accepted nowhere and is played again. The fleet is then brought to the journal's
weights (from the model file, or from a learner that holds them), never to whichever learner answers
first: only a fresh run equalises weights from a learner.

``stop`` (set by the CLI on SIGINT/SIGTERM) ends the run after the round in progress; the run can be
resumed from its directory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from backend_client import failpoints, fleet_model
from backend_client.errors import LearnerUnavailableError
from backend_client.fan_out import fan_out
from backend_client.journal import Journal, read
from backend_client.learner_client import LearnerClient
from backend_client.plot import plot_results
from backend_client.results import Result
from backend_client.resync import FleetWeights, resynced_round
from backend_client.rounds import initial_result
from backend_client.run_directory import RunDirectory
from backend_client.run_history import FORMAT, PendingAccept, RunHistory
from colearn_contract.mli import Weights
from colearn_contract.model_file import model_metadata

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """What defines an experiment; stored in its journal, so that a resume runs the same one."""

    model_tag: str
    dataloader_tag: str
    rounds: int
    vote_threshold: float = 0.5
    quorum: int = 0
    model_params: dict[str, Any] = field(default_factory=dict)
    dataloader_params: dict[str, Any] = field(default_factory=dict)
    data_locations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(**data)

    def check(self, n_learners: int) -> None:
        """Refuses, with one line, a fleet or a quorum that can never make a round."""
        if n_learners < 2:
            raise ValueError(
                f"a run needs at least 2 learners: with {n_learners}, no learner is left to vote"
            )
        voters = n_learners - 1
        if self.quorum > voters:
            raise ValueError(
                f"quorum {self.quorum} can never be met: a round of {n_learners} learners has {voters} voters"
            )
        if self.data_locations and len(self.data_locations) not in (1, n_learners):
            raise ValueError(
                f"give one data location or one per learner ({n_learners}), not {len(self.data_locations)}"
            )


class Metrics(Protocol):
    """What a run reports to (``backend_client.backend_metrics.BackendMetrics``)."""

    def run_started(
        self, *, run: str, model: str, dataloader: str, learners: int, first_round: int, total_rounds: int
    ) -> None: ...

    def round_recorded(self, result: Result) -> None: ...

    def fleet_weights(self, sha256: str, accepted_rounds: int) -> None: ...


@dataclass(frozen=True)
class RunOutcome:
    history: RunHistory
    status: Literal["finished", "interrupted"]


def dataloader_params_for(
    config: RunConfig, index: int, n_learners: int, defaults: dict[str, Any]
) -> dict[str, Any]:
    """Each learner's own data: its folder from ``data_locations``, or its shard of an embedded dataset."""
    params = dict(config.dataloader_params)
    if config.data_locations:
        locations = config.data_locations
        params.setdefault("location", locations[0] if len(locations) == 1 else locations[index])
    if "shard" in defaults and "n_shards" in defaults and "shard" not in params:
        params.update(shard=index, n_shards=n_learners)
    return params


def set_up_learner(learners: Sequence[LearnerClient], config: RunConfig, i: int) -> str:
    """Sets learner ``i`` up with the run's model and its own data (for a start, and for a learner that
    restarted and lost its model)."""
    system = learners[i].get_supported_system()
    compatibilities = system["compatibilities"]
    if config.model_tag not in compatibilities:
        served = ", ".join(sorted(compatibilities))
        raise ValueError(f"unknown model {config.model_tag!r}; the fleet serves: {served}")
    if config.dataloader_tag not in compatibilities[config.model_tag]:
        raise ValueError(
            f"model {config.model_tag} takes dataloaders {', '.join(compatibilities[config.model_tag])}, "
            f"not {config.dataloader_tag!r}"
        )
    defaults = system["data_loaders"].get(config.dataloader_tag, {})
    params = dataloader_params_for(config, i, len(learners), defaults)
    return learners[i].setup_ml(
        dataset_loader_name=config.dataloader_tag,
        dataset_loader_parameters=json.dumps(params),
        model_arch_name=config.model_tag,
        model_parameters=json.dumps(config.model_params),
    )


def connect(
    learners: Sequence[LearnerClient], minimum: int, timeout: float, report: Callable[[str], None]
) -> list[int]:
    """Waits until at least ``minimum`` learners answer; returns the ones that do. Every ``10 s`` it
    reports each learner it still waits for, with its address and last error; at ``timeout`` it gives up
    naming them. The others join later rounds, through the resync, once they answer."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 2.0
    errors: dict[int, str] = {}

    def attempt(i: int) -> bool:
        try:
            learners[i].start()
        except Exception as exc:  # the channel stays open: the status call below says why
            errors[i] = str(exc)
        try:
            learners[i].get_status()
        except Exception as exc:
            errors[i] = getattr(exc, "details", None) or str(exc)
            return False
        return True

    present: set[int] = set()
    while True:
        waiting = [i for i in range(len(learners)) if i not in present]
        present |= {i for i, ok in fan_out(attempt, waiting).items() if ok is True}
        missing = [i for i in range(len(learners)) if i not in present]
        if len(present) >= minimum or not missing:
            for i in missing:
                report(f"going on without {_named(learners[i])} for now: {errors.get(i, 'no answer')}")
            return sorted(present)
        now = time.monotonic()
        if now >= deadline:
            lines = "; ".join(f"{_named(learners[i])}: {errors.get(i, 'no answer')}" for i in missing)
            raise TimeoutError(
                f"only {len(present)} of {len(learners)} learners answered within {timeout:g} s "
                f"(need {minimum}); still unreachable: {lines}"
            )
        if now >= next_report:
            for i in missing:
                report(f"waiting for {_named(learners[i])}: {errors.get(i, 'no answer')}")
            next_report = now + 10.0
        time.sleep(min(1.0, max(0.0, deadline - now)))


def _named(learner: LearnerClient) -> str:
    return f"{learner.name} ({learner.address})"


class Experiment:
    """A run in a run directory, started fresh (``start``) or taken up again (``resume``)."""

    def __init__(
        self,
        run: RunDirectory,
        learners: Sequence[LearnerClient],
        config: RunConfig,
        *,
        stop: threading.Event | None = None,
        metrics: Metrics | None = None,
        on_round: Callable[[Result], None] = lambda result: None,
        report: Callable[[str], None] = lambda line: None,
    ) -> None:
        config.check(len(learners))
        self.run = run
        self.learners = learners
        self.config = config
        self.stop = stop or threading.Event()
        self._metrics = metrics
        self._on_round = on_round
        self._report = report
        self.fleet = FleetWeights(setup=lambda i: set_up_learner(learners, config, i))
        self.history: RunHistory | None = None
        self._journal: Journal | None = None
        # Each proposal is written to a staged model file while the voters test it; an accept then only
        # renames it into place (measured in benchmarks/BENCHMARKS.md, "Durable runs").
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-file")
        self._staged: Future[Path] | None = None

    # -- taking up the run --------------------------------------------------------------------------

    def start(self, present: Sequence[int]) -> None:
        """A new run: the journal's first record, then the fleet's starting weights."""
        self._set_up(present)
        self._journal = Journal(self.run.journal)
        self._journal.append(
            {
                "kind": "run",
                "format": FORMAT,
                "run": self.run.path.name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config": self.config.to_dict(),
                "learners": [learner.address for learner in self.learners],
            }
        )
        self.history = RunHistory.from_records(read(self.run.journal))
        self._begin(present)

    def resume(self, present: Sequence[int]) -> None:
        """A run from its journal: settles a round the backend stopped in, then brings every learner to
        the journal's weights (never to whichever learner answers first)."""
        history = RunHistory.from_records(read(self.run.journal))
        if len(history.learners) != len(self.learners):
            raise ValueError(
                f"{self.run.path} is a run of {len(history.learners)} learners; "
                f"{len(self.learners)} were given: a resumed run keeps its fleet"
            )
        self.history = history
        self._set_up(present)
        self._journal = Journal(self.run.journal)
        if not history.started:
            self._begin(present)
        else:
            weights = self._fleet_weights_from_disk(present)
            if history.pending is not None:
                weights = self._settle(history.pending, weights, present)
            self.fleet.current = Weights(weights=weights.renamed(""))
        self._append({"kind": "resumed", "next_round": self.history.next_round, "rounds": self.config.rounds})
        self._report(
            f"resuming {self.run.path} at round {self.history.next_round} of {self.config.rounds}: "
            f"{self.history.accepted_rounds} accepted so far, fleet weights {self.history.fleet_sha256[:12]}"
        )

    def _set_up(self, present: Sequence[int]) -> None:
        """Sets up every learner that answers. One whose set-up fails is a configuration error when it
        is a client mistake (bad name, bad parameters); an unreachable one joins later."""
        outcomes = fan_out(lambda i: set_up_learner(self.learners, self.config, i), present)
        for i, outcome in sorted(outcomes.items()):
            if isinstance(outcome, LearnerUnavailableError):
                self._report(f"{_named(self.learners[i])} could not be set up now; it joins later: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome

    def _begin(self, present: Sequence[int]) -> None:
        """The fleet's starting weights: the first learner's, written to the model file, then given to
        every learner that answers (the first round's resync does the same for the others)."""
        holder = min(present)
        weights = self.learners[holder].mli_get_current_weights()
        self.fleet.accepted(weights)
        assert self.fleet.current is not None
        self._write_model(self.fleet.current, rounds=0)
        self.fleet.resync(self.learners)
        initial = initial_result(self.learners)
        initial.fleet_test_score = initial.mean_test_score
        self._append({"kind": "start", "fleet_sha256": self.fleet.sha256, "initial": initial.to_dict()})

    def _fleet_weights_from_disk(self, present: Sequence[int]) -> Any:
        """The exact weights of the model file; when it is missing or damaged, those of a learner that
        holds the journal's weights (or the pending proposal), which then go back to the model file."""
        assert self.history is not None
        try:
            weights, _ = fleet_model.read(self.run.model)
            return weights
        except (fleet_model.FleetModelError, FileNotFoundError) as exc:
            wanted = {self.history.fleet_sha256}
            if self.history.pending is not None:
                wanted.add(self.history.pending.proposal_sha256)
            self._report(
                f"the model file cannot be used ({exc}); looking for a learner that holds the weights"
            )
            for i in present:
                try:
                    if self.learners[i].get_status().weights_sha256 in wanted:
                        weights = self.learners[i].mli_get_current_weights().weights
                        fleet_model.write(
                            self.run.model, weights, self._metadata(self.history.accepted_rounds)
                        )
                        return weights
                except Exception as error:
                    _log.warning("resume: %s: %s", _named(self.learners[i]), error)
            raise RuntimeError(
                f"cannot resume {self.run.path}: its model file is unusable and no learner that answers "
                f"holds the fleet's weights {self.history.fleet_sha256[:12]}"
            ) from None

    def _settle(self, pending: PendingAccept, weights: Any, present: Sequence[int]) -> Any:
        """A round that decided to accept when the backend stopped. Its proposal in the model file means
        learners may have taken it: it is completed. Otherwise nobody was asked: it is played again."""
        assert self.history is not None
        if weights.sha256 == pending.proposal_sha256:
            # The accept again, under the proposal's id: a learner that took it already ignores it, any
            # other takes it now and counts the round, as it would have.
            proposal = Weights(weights=weights.renamed(pending.proposal_id))
            outcomes = fan_out(lambda i: self.learners[i].mli_accept_weights(proposal), present)
            for i, outcome in sorted(outcomes.items()):
                if isinstance(outcome, BaseException):
                    self._report(
                        f"{_named(self.learners[i])} did not take round {pending.round_index}: {outcome}"
                    )
            result = pending.result
            result.recovered = True
            result.fleet_test_score = result.mean_test_score
            self._record(result, accepted=True)
            self._report(f"round {pending.round_index}: its accept was under way; completed it")
            return weights
        if weights.sha256 != self.history.fleet_sha256:
            raise RuntimeError(
                f"cannot resume {self.run.path}: its model file holds {weights.sha256[:12]}, neither the "
                f"fleet's weights {self.history.fleet_sha256[:12]} nor the pending proposal"
            )
        self._append({"kind": "abandoned", "round": pending.round_index, "reason": "no learner was asked"})
        self._report(f"round {pending.round_index}: stopped before any learner accepted; playing it again")
        return weights

    # -- the rounds ---------------------------------------------------------------------------------

    def play(self) -> RunOutcome:
        assert self.history is not None
        history = self.history
        if self._metrics is not None:
            self._metrics.run_started(
                run=self.run.path.name,
                model=self.config.model_tag,
                dataloader=self.config.dataloader_tag,
                learners=len(self.learners),
                first_round=history.next_round,
                total_rounds=self.config.rounds,
            )
            self._metrics.fleet_weights(history.fleet_sha256, history.accepted_rounds)
        status: Literal["finished", "interrupted"] = "finished"
        for round_index in range(history.next_round, self.config.rounds):
            if self.stop.is_set():
                status = "interrupted"
                break
            self._play_round(round_index)
        if status == "interrupted":
            self._append({"kind": "interrupted", "next_round": history.next_round})
        elif not history.finished:
            self._append({"kind": "finished", "rounds": self.config.rounds})
        self.save_results(with_plot=True)
        return RunOutcome(history, status)

    def _play_round(self, round_index: int) -> None:
        result = resynced_round(
            self.fleet,
            self.learners,
            self.config.vote_threshold,
            round_index,
            quorum=self.config.quorum,
            on_proposal=self._stage,
            before_accept=lambda proposal, decided: self._decide(round_index, proposal, decided),
        )
        self._discard_staged()
        failpoints.die_at("accepted", round_index)
        assert self.history is not None
        previous = self.history.fleet_test_score
        result.fleet_test_score = result.mean_test_score if result.vote else previous
        self._record(result, accepted=result.vote)
        failpoints.die_at("recorded", round_index)

    def _decide(self, round_index: int, proposal: Weights, result: Result) -> None:
        """Before any learner is asked to accept: the decision in the journal, the proposal in the model
        file. If either fails (a full disk), the round accepts nowhere and the run stops."""
        assert self.history is not None
        decided = {
            "kind": "decided",
            "round": round_index,
            "proposal_sha256": proposal.weights.sha256,
            "proposal_id": proposal.weights.proposal_id,
            "result": result.to_dict(),
        }
        self._append(decided)
        failpoints.die_at("decided", round_index)
        staged, self._staged = self._staged, None
        if staged is None:  # a caller that did not stage it
            self._write_model(proposal, rounds=self.history.accepted_rounds + 1)
        else:
            fleet_model.commit(staged.result(), self.run.model)
        failpoints.die_at("model_written", round_index)

    def _stage(self, proposal: Weights) -> None:
        """Starts writing the proposal to a staged model file, while the voters test it."""
        assert self.history is not None
        self._discard_staged()
        metadata = self._metadata(self.history.accepted_rounds + 1)
        self._staged = self._writer.submit(fleet_model.stage, self.run.model, proposal.weights, metadata)

    def _discard_staged(self) -> None:
        """A proposal that was not accepted: its staged file goes, once written."""
        staged, self._staged = self._staged, None
        if staged is not None:
            staged.add_done_callback(lambda done: done.exception() or done.result().unlink(missing_ok=True))

    def _record(self, result: Result, *, accepted: bool) -> None:
        assert self.history is not None
        accepted_rounds = self.history.accepted_rounds + (1 if accepted else 0)
        fleet_sha256 = result.proposal_sha256 if accepted else self.history.fleet_sha256
        self._append(
            {
                "kind": "round",
                "round": result.round_index,
                "result": result.to_dict(),
                "fleet_sha256": fleet_sha256,
                "accepted_rounds": accepted_rounds,
            }
        )
        self.save_results(with_plot=False)
        if self._metrics is not None:
            self._metrics.round_recorded(result)
            self._metrics.fleet_weights(fleet_sha256, accepted_rounds)
        self._on_round(result)

    def _append(self, record: dict[str, Any]) -> None:
        """Journal first, then the history derived from it: what the history says is always on disk."""
        assert self._journal is not None and self.history is not None
        self._journal.append(record)
        self.history.apply(record)

    # -- files --------------------------------------------------------------------------------------

    def _metadata(self, rounds: int) -> dict[str, str]:
        parameters = json.dumps(self.config.model_params, sort_keys=True)
        return model_metadata(
            self.config.model_tag, self.config.dataloader_tag, parameters, rounds, f"run {self.run.path.name}"
        )

    def _write_model(self, weights: Weights, *, rounds: int) -> None:
        fleet_model.write(self.run.model, weights.weights, self._metadata(rounds))

    def save_results(self, *, with_plot: bool) -> None:
        """``results.json`` (and the plot), derived from the journal: each round once, in order."""
        assert self.history is not None
        info = {
            "run": self.run.path.name,
            "model_tag": self.config.model_tag,
            "dataloader_tag": self.config.dataloader_tag,
            "vote_threshold": self.config.vote_threshold,
            "quorum": self.config.quorum,
            "rounds": self.config.rounds,
            "learners": [learner.address for learner in self.learners],
            "accepted_rounds": self.history.accepted_rounds,
            "fleet_sha256": self.history.fleet_sha256,
        }
        results = self.history.results
        results.save(self.run.results, **info)
        if with_plot:
            title = f"{self.config.model_tag} on {self.config.dataloader_tag}: {self.run.path.name}"
            plot_results(results, self.run.plot, title=title)

    def close(self) -> None:
        self._discard_staged()
        self._writer.shutdown(wait=True)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
