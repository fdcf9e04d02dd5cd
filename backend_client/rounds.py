"""Collective learning rounds with colearn's semantics, driven concurrently.

The proposer is learner ``round_index % N`` and does not vote on its own proposal. A proposal is accepted
when ``approvals >= (N - 1) * vote_threshold``; then every learner that answered adopts it, otherwise
nothing changes. A learner that fails or misses its deadline is *absent*: it neither approves nor stops
the round. When fewer voters answer than ``quorum``, the round is void and no weights change.

These functions take any ``MachineLearningInterface``: in-process models and ``LearnerClient``s alike.
With ``LearnerClient``s, each learner receives the proposal once: ``TestWeights`` caches it, and the
accept is ``AcceptProposal`` by id. The proposal is relayed while it arrives (``start_proposal``): the
voters receive each part as soon as the backend has checked it, and a proposal whose stream breaks
voids the round (every voter's stream is cancelled, and each discards what it had).
``backend_client.resync`` runs a round after bringing every learner to
the fleet's current weights, and leaves out (``absent``) the learners it could not reach or resync.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from backend_client import failpoints
from backend_client.fan_out import fan_out
from backend_client.results import ABSENT, APPROVE, NONE, PROPOSER, REJECT, Result
from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_contract.weight_relay import ArrivingWeights

_log = logging.getLogger(__name__)


def _finite(score: float | None) -> float | None:
    return None if score is None or math.isnan(score) else float(score)


def _outcome(vote: bool | None) -> str:
    return NONE if vote is None else (APPROVE if vote else REJECT)


def collective_learning_round(
    learners: Sequence[MachineLearningInterface],
    vote_threshold: float,
    round_index: int,
    *,
    quorum: int = 0,
    absent: Mapping[int, str] | None = None,
) -> Result:
    """One round. ``absent`` names learners to leave out, with the reason: they are recorded as absent
    and get no call (a learner that is not known to hold the fleet's weights must neither propose nor
    vote)."""
    return play_round(learners, vote_threshold, round_index, quorum=quorum, absent=absent).result


@dataclass(frozen=True)
class RoundOutcome:
    result: Result
    #: The proposal, when the round accepted it: the fleet's weights from now on.
    accepted: Weights | None


def play_round(
    learners: Sequence[MachineLearningInterface],
    vote_threshold: float,
    round_index: int,
    *,
    quorum: int = 0,
    absent: Mapping[int, str] | None = None,
    on_proposal: Callable[[Weights], None] | None = None,
    before_accept: Callable[[Weights, Result], None] | None = None,
) -> RoundOutcome:
    """``collective_learning_round``, also handing back the accepted proposal.

    ``on_proposal(proposal)`` runs as soon as the proposal is in, before the voters get it: a run starts
    writing it to disk there, while the voters test it. ``before_accept(proposal, result)`` runs once the
    round has decided to accept, before any learner is asked to: a run records the decision durably there.
    If it raises, no learner is asked to accept."""
    absent = dict(absent or {})
    n = len(learners)
    if n == 0:
        raise ValueError("a round needs at least one learner")
    if not 0 <= vote_threshold <= 1:
        raise ValueError(f"vote_threshold must be within [0, 1], got {vote_threshold}")
    if unknown := sorted(i for i in absent if not 0 <= i < n):
        raise ValueError(f"absent names learners {unknown}, but there are only {n}")
    proposer = round_index % n
    result = Result(
        round_index=round_index,
        block_proposer=proposer,
        votes=[None] * n,
        outcomes=[NONE] * n,
        vote_scores=[None] * n,
        test_scores=[None] * n,
    )
    started = time.perf_counter()
    for i, reason in absent.items():
        result.outcomes[i], result.errors[i] = ABSENT, reason
    if proposer in absent:
        return RoundOutcome(_void(result, f"proposer {proposer} is absent", started), None)
    try:
        proposal = _start_proposal(learners[proposer])
        # Remote proposals carry their digest in their first part (this waits for it).
        result.proposal_sha256 = getattr(proposal.weights, "sha256", "")
    except Exception as exc:
        return RoundOutcome(_proposer_failed(result, proposer, exc, started), None)
    result.outcomes[proposer] = PROPOSER
    proposed = time.perf_counter()
    failpoints.die_at("proposed", round_index)
    if on_proposal is not None:
        on_proposal(proposal)

    voters = [i for i in range(n) if i != proposer]
    called = [i for i in voters if i not in absent]
    verdicts = fan_out(lambda i: learners[i].mli_test_weights(proposal), called)
    if isinstance(proposal.weights, ArrivingWeights):
        arriving = proposal.weights
        try:
            proposal = Weights(weights=arriving.result())
        except Exception as exc:  # its stream broke: no voter got all of it, so no vote counts
            return RoundOutcome(_proposer_failed(result, proposer, exc, started), None)
        proposed = arriving.arrived_at or proposed
    present = []
    for i, verdict in verdicts.items():
        if isinstance(verdict, BaseException):
            _log.warning("round %d: learner %d is absent: %s", round_index, i, verdict)
            result.outcomes[i], result.errors[i] = ABSENT, str(verdict)
            continue
        assert isinstance(verdict, ProposedWeights)
        present.append(i)
        result.votes[i] = None if verdict.vote is None else bool(verdict.vote)  # numpy bools too
        result.outcomes[i] = _outcome(result.votes[i])
        result.vote_scores[i] = _finite(verdict.vote_score)
        result.test_scores[i] = _finite(verdict.test_score)
        result.criterion = result.criterion or verdict.criterion
    voted = time.perf_counter()
    result.timings.update(propose=proposed - started, vote=voted - proposed)
    failpoints.die_at("voted", round_index)

    if len(present) < quorum:
        reason = f"only {len(present)} of {len(voters)} voters answered; quorum is {quorum}"
        return RoundOutcome(_void(result, reason, started), None)
    result.vote = result.approvals >= required_approvals(n, vote_threshold)
    if result.vote:
        if before_accept is not None:
            before_accept(proposal, result)
        accepted = fan_out(lambda i: learners[i].mli_accept_weights(proposal), [proposer, *present])
        for i, outcome in accepted.items():
            if isinstance(outcome, BaseException):
                _log.warning("round %d: learner %d failed to accept: %s", round_index, i, outcome)
                result.errors[i] = f"accept failed: {outcome}"
    result.timings.update(accept=time.perf_counter() - voted, total=time.perf_counter() - started)
    return RoundOutcome(result, proposal if result.vote else None)


def _start_proposal(proposer: MachineLearningInterface) -> Weights:
    """The proposal, relayed while it arrives where the learner can (``LearnerClient.start_proposal``)."""
    start = getattr(proposer, "start_proposal", None)
    return start() if start is not None else proposer.mli_propose_weights()


def _proposer_failed(result: Result, proposer: int, exc: Exception, started: float) -> Result:
    _log.warning("round %d: proposer %d failed: %s", result.round_index, proposer, exc)
    result.outcomes[proposer] = ABSENT
    result.errors[proposer] = str(exc)
    return _void(result, f"proposer {proposer} failed", started)


def required_approvals(n_learners: int, vote_threshold: float) -> Fraction:
    """``(N - 1) * threshold``, exactly: in floats ``25 * 0.28`` is ``7.000000000000001``, which would
    turn 7 approvals out of 25 voters into a reject."""
    return (n_learners - 1) * Fraction(str(vote_threshold))


def _void(result: Result, reason: str, started: float) -> Result:
    result.void, result.vote, result.reason = True, False, reason
    result.timings["total"] = time.perf_counter() - started
    return result


def initial_result(learners: Sequence[MachineLearningInterface]) -> Result:
    """Scores every learner's current weights on its own data, before the first round."""

    def own_score(i: int) -> ProposedWeights:
        return learners[i].mli_test_weights(learners[i].mli_get_current_weights())

    n = len(learners)
    result = Result(votes=[None] * n, outcomes=[NONE] * n, vote_scores=[None] * n, test_scores=[None] * n)
    for i, verdict in fan_out(own_score, range(n)).items():
        if isinstance(verdict, BaseException):
            result.outcomes[i], result.errors[i] = ABSENT, str(verdict)
            continue
        assert isinstance(verdict, ProposedWeights)
        result.vote_scores[i] = _finite(verdict.vote_score)
        result.test_scores[i] = _finite(verdict.test_score)
        result.criterion = result.criterion or verdict.criterion
    return result


def set_equal_weights(learners: Sequence[MachineLearningInterface]) -> None:
    """Gives every learner the first learner's weights, so that all start from the same point."""
    weights = learners[0].mli_get_current_weights()
    failures = {
        i: outcome
        for i, outcome in fan_out(
            lambda i: learners[i].mli_accept_weights(weights), range(1, len(learners))
        ).items()
        if isinstance(outcome, BaseException)
    }
    if failures:
        first = next(iter(failures.values()))
        raise RuntimeError(
            f"{len(failures)} learner(s) could not take the initial weights, e.g.: {first}"
        ) from first
