"""Resync: before each round, every learner is brought to the fleet's current weights.

A learner can fall behind: it restarted without a checkpoint, it was partitioned or stopped while the
others accepted a proposal, or its accept failed. If it then proposed, its proposal would be built on old
weights and accepting it would silently undo the rounds it missed; if it voted, it would compare the
proposal with the wrong baseline. So before each round the backend asks every learner for its weights'
digest (``GetStatus``, cheap and never blocked by training) and sends the fleet's weights (``SetWeights``)
to each learner whose digest differs.

The fleet's weights are the last proposal the backend saw accepted: it already holds those bytes (it
relayed them), so it can restore a learner even when no other learner holding them is alive. Before any
accept it takes the weights that most learners hold. The resync's ``SetWeights`` carries no proposal id:
it is no accepted round of that learner, so ``accepted_rounds`` keeps counting only the rounds the learner
accepted itself.

Learners that cannot be reached, set up or resynced are left out of the round as *absent*: the round goes
on without them, and the next resync tries again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backend_client.fan_out import fan_out
from backend_client.learner_client import LearnerClient, RemoteStatus
from backend_client.results import Result
from backend_client.rounds import play_round
from colearn_contract.mli import Weights
from colearn_contract.serialized_weights import SerializedWeights, serialized

_log = logging.getLogger(__name__)


@dataclass
class ResyncReport:
    #: The digest every learner holds after the resync (empty when no learner could be asked).
    target_sha256: str = ""
    #: Learners that got the fleet's weights with SetWeights.
    resynced: list[int] = field(default_factory=list)
    #: Learners that had lost their model (a restart) and were set up again.
    set_up: list[int] = field(default_factory=list)
    #: Learners to leave out of the round, with the reason.
    absent: dict[int, str] = field(default_factory=dict)


class FleetWeights:
    """The fleet's current weights as the backend knows them, and the resync that enforces them.

    ``setup(i)`` sets learner ``i`` up again with the fleet's model and data, for a learner that answers
    but has no model (it restarted); without it such a learner is left out as absent.
    """

    def __init__(self, setup: Callable[[int], object] | None = None) -> None:
        self._setup = setup
        self.current: Weights[SerializedWeights] | None = None

    @property
    def sha256(self) -> str:
        return self.current.weights.sha256 if self.current is not None else ""

    def accepted(self, proposal: Weights[SerializedWeights]) -> Weights[SerializedWeights]:
        """Records an accepted proposal as the fleet's weights (kept without its id, see the module)."""
        self.current = Weights(weights=serialized(proposal).renamed(""))
        return self.current

    def resync(self, learners: Sequence[LearnerClient]) -> ResyncReport:
        report = ResyncReport()
        statuses = self._statuses(learners, report)
        if not statuses:
            return report
        target = self._target(statuses)
        lagging = sorted(i for i, s in statuses.items() if s.weights_sha256 != target)
        if not lagging:
            report.target_sha256 = target
            return report
        weights = self.current
        if weights is None:
            holder = min(i for i, s in statuses.items() if s.weights_sha256 == target)
            try:
                weights = learners[holder].mli_get_current_weights()
            except Exception as exc:
                _log.warning("resync: cannot fetch the fleet's weights from learner %d: %s", holder, exc)
                report.absent[holder] = f"resync: cannot fetch its weights: {exc}"
                for i in lagging:
                    report.absent[i] = f"resync: holds {statuses[i].weights_sha256[:12]}, not {target[:12]}"
                report.target_sha256 = target
                return report
            weights = self.accepted(weights)
            if self.sha256 != target:
                # The holder encodes its weights differently from how they once arrived: equal weights,
                # other bytes. Its own digest becomes the fleet's, and every other learner gets it.
                _log.warning("resync: learner %d re-encodes %s as %s", holder, target[:12], self.sha256[:12])
                target = self.sha256
                lagging = sorted(i for i, s in statuses.items() if s.weights_sha256 != target)
        report.target_sha256 = target
        outcomes = fan_out(lambda i: learners[i].mli_accept_weights(weights), lagging)
        for i, outcome in outcomes.items():
            if isinstance(outcome, BaseException):
                _log.warning("resync: learner %d could not take the fleet's weights: %s", i, outcome)
                report.absent[i] = f"resync failed: {outcome}"
            else:
                report.resynced.append(i)
        if report.resynced:
            _log.info("resync: learners %s now hold %s", report.resynced, target[:12])
        return report

    def _statuses(self, learners: Sequence[LearnerClient], report: ResyncReport) -> dict[int, RemoteStatus]:
        """Every learner's status; learners that lost their model are set up again first."""
        statuses: dict[int, RemoteStatus] = {}
        for i, status in fan_out(lambda i: learners[i].get_status(), range(len(learners))).items():
            if isinstance(status, BaseException):
                report.absent[i] = str(status)
            elif status.ready:
                statuses[i] = status
            elif self._setup is None:
                report.absent[i] = "no model is set up on this learner"
            else:
                report.set_up.append(i)

        def set_up_again(i: int) -> RemoteStatus:
            assert self._setup is not None
            self._setup(i)
            return learners[i].get_status()

        for i, status in fan_out(set_up_again, report.set_up).items():
            if isinstance(status, BaseException):
                report.absent[i] = f"set-up after a restart failed: {status}"
            else:
                statuses[i] = status
        report.set_up = sorted(i for i in report.set_up if i in statuses)
        return statuses

    def _target(self, statuses: dict[int, RemoteStatus]) -> str:
        """The last accepted proposal's digest; before any, the digest most learners hold (ties: the one
        the lowest-numbered learner holds)."""
        if self.current is not None:
            return self.sha256
        counts = Counter(s.weights_sha256 for s in statuses.values())
        best = max(counts.values())
        return next(s.weights_sha256 for _, s in sorted(statuses.items()) if counts[s.weights_sha256] == best)


def resynced_round(
    fleet: FleetWeights,
    learners: Sequence[LearnerClient],
    vote_threshold: float,
    round_index: int,
    *,
    quorum: int = 0,
    on_proposal: Callable[[Weights], None] | None = None,
    before_accept: Callable[[Weights, Result], None] | None = None,
) -> Result:
    """Resyncs the fleet, plays one round without the learners left out, and records what it accepted.
    ``on_proposal`` and ``before_accept`` are ``play_round``'s."""
    started = time.perf_counter()
    report = fleet.resync(learners)
    resynced = time.perf_counter() - started

    def resync_facts(result: Result) -> Result:
        result.base_sha256, result.resynced = report.target_sha256, report.resynced
        result.timings["resync"] = resynced
        return result

    def decided(proposal: Weights, result: Result) -> None:
        if before_accept is not None:
            before_accept(proposal, resync_facts(result))  # what is recorded now tells the whole round

    outcome = play_round(
        learners,
        vote_threshold,
        round_index,
        quorum=quorum,
        absent=report.absent,
        on_proposal=on_proposal,
        before_accept=decided,
    )
    result = resync_facts(outcome.result)
    result.timings["total"] = result.timings.get("total", 0.0) + resynced
    if outcome.accepted is not None:
        fleet.accepted(outcome.accepted)
    return result
