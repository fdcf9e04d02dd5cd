"""Round semantics with plain in-process MLIs: scripted voters, and real models built in this process.

``collective_learning_round`` takes any ``MachineLearningInterface``; scripted parties make the vote count
exact, so the threshold can be tested on its boundary.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from backend_client import (
    MachineLearningInterface,
    ProposedWeights,
    Results,
    Weights,
    collective_learning_round,
    initial_result,
    set_equal_weights,
)
from backend_client.results import ABSENT, APPROVE, NONE, PROPOSER, REJECT


class Scripted(MachineLearningInterface):
    """A party whose vote is fixed; it records every call made to it."""

    def __init__(self, name: str, vote: bool | None = True, *, fail: str = "", score: float = 0.5) -> None:
        self.name = name
        self.vote = vote
        self.fail = fail  # the method that raises, if any
        self.score = score
        self.current = Weights(weights=f"{name}-initial")
        self.calls: list[str] = []
        self.accepted: list[Weights] = []
        self._lock = threading.Lock()

    def _enter(self, method: str) -> None:
        with self._lock:
            self.calls.append(method)
        if self.fail == method:
            raise ConnectionError(f"{self.name} failed in {method}")

    def mli_propose_weights(self) -> Weights:
        self._enter("propose")
        return Weights(weights=f"proposal-of-{self.name}")

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        self._enter("test")
        return ProposedWeights(
            weights=weights,
            vote_score=self.score,
            test_score=self.score / 2,
            vote=self.vote,
            criterion="accuracy",
        )

    def mli_accept_weights(self, weights: Weights) -> None:
        self._enter("accept")
        self.accepted.append(weights)
        self.current = weights

    def mli_get_current_weights(self) -> Weights:
        self._enter("current")
        return self.current


def fleet(n: int, approvals: int, proposer: int = 0) -> list[Scripted]:
    """n parties; the first ``approvals`` voters (in index order, skipping the proposer) approve."""
    parties = [Scripted(f"p{i}", vote=False) for i in range(n)]
    voters = [i for i in range(n) if i != proposer]
    for i in voters[:approvals]:
        parties[i].vote = True
    return parties


# (n learners, vote_threshold, approvals needed): approvals == needed is on the boundary and accepts,
# one approval fewer rejects. The last rows are thresholds whose product with N-1 is an integer in
# decimal but not in binary floating point (25 * 0.28 == 7.000000000000001).
BOUNDARIES = [
    (5, 0.5, 2),
    (5, 0.75, 3),
    (5, 1.0, 4),
    (5, 0.25, 1),
    (4, 2 / 3, 2),
    (3, 0.5, 1),
    (11, 0.7, 7),
    (26, 0.28, 7),
    (101, 0.07, 7),
]


@pytest.mark.parametrize(("n", "threshold", "needed"), BOUNDARIES)
def test_threshold_boundary_accepts_exactly_at_n_minus_1_times_threshold(
    n: int, threshold: float, needed: int
) -> None:
    at = fleet(n, needed)
    result = collective_learning_round(at, vote_threshold=threshold, round_index=0)
    assert result.approvals == needed
    assert result.vote is True, f"{needed} of {n - 1} approvals with threshold {threshold} must accept"

    short = fleet(n, needed - 1)
    result = collective_learning_round(short, vote_threshold=threshold, round_index=0)
    assert result.approvals == needed - 1
    assert result.vote is False, f"{needed - 1} of {n - 1} approvals with threshold {threshold} must reject"
    assert all(p.accepted == [] for p in short)


def test_threshold_zero_accepts_with_no_approvals_and_one_learner_accepts_alone() -> None:
    parties = fleet(4, 0)
    result = collective_learning_round(parties, vote_threshold=0.0, round_index=2)
    assert result.approvals == 0 and result.vote is True
    alone = [Scripted("solo")]
    result = collective_learning_round(alone, vote_threshold=1.0, round_index=5)
    assert result.block_proposer == 0 and result.vote is True
    assert alone[0].calls == ["propose", "accept"]


@pytest.mark.parametrize("threshold", [-0.01, 1.01, math.nan])
def test_a_threshold_outside_0_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="vote_threshold"):
        collective_learning_round(fleet(3, 2), vote_threshold=threshold, round_index=0)


def test_a_round_needs_learners() -> None:
    with pytest.raises(ValueError):
        collective_learning_round([], vote_threshold=0.5, round_index=0)


@pytest.mark.parametrize("round_index", [0, 1, 2, 3, 4, 5, 9, 12])
def test_the_proposer_is_round_index_mod_n_and_never_tests_its_own_proposal(round_index: int) -> None:
    n = 4
    parties = [Scripted(f"p{i}") for i in range(n)]
    result = collective_learning_round(parties, vote_threshold=0.5, round_index=round_index)
    proposer = round_index % n
    assert result.round_index == round_index
    assert result.block_proposer == proposer
    assert result.votes[proposer] is None
    assert result.outcomes[proposer] == PROPOSER
    assert "test" not in parties[proposer].calls
    assert parties[proposer].calls.count("propose") == 1
    for i, party in enumerate(parties):
        if i != proposer:
            assert party.calls.count("test") == 1 and "propose" not in party.calls
            assert result.votes[i] is True and result.outcomes[i] == APPROVE
    # Accepted: everyone, the proposer included, adopts the very proposal the proposer made.
    assert result.vote is True
    assert all(p.accepted == [Weights(weights=f"proposal-of-p{proposer}")] for p in parties)


def test_a_reject_adopts_nothing_and_records_every_vote() -> None:
    parties = fleet(5, 1, proposer=1)
    parties[4].vote = None  # a voter that abstains
    result = collective_learning_round(parties, vote_threshold=0.5, round_index=1)
    assert result.vote is False and not result.void
    assert result.votes == [True, None, False, False, None]
    assert result.outcomes == [APPROVE, PROPOSER, REJECT, REJECT, NONE]
    assert result.vote_scores == [0.5, None, 0.5, 0.5, 0.5]
    assert result.test_scores == [0.25, None, 0.25, 0.25, 0.25]
    assert result.criterion == "accuracy"
    assert all("accept" not in p.calls for p in parties)
    assert all(p.current.weights == f"{p.name}-initial" for p in parties)


def test_a_failing_voter_is_absent_and_neither_approves_nor_adopts() -> None:
    parties = [Scripted(f"p{i}") for i in range(5)]
    parties[3].fail = "test"
    result = collective_learning_round(parties, vote_threshold=0.75, round_index=0)
    assert result.outcomes == [PROPOSER, APPROVE, APPROVE, ABSENT, APPROVE]
    assert result.votes[3] is None
    assert "p3 failed in test" in result.errors[3]
    assert set(result.errors) == {3}
    # 3 approvals >= 4 * 0.75
    assert result.vote is True and not result.void
    assert "accept" not in parties[3].calls
    assert all(len(p.accepted) == 1 for i, p in enumerate(parties) if i != 3)


def test_an_absent_voter_counts_against_the_threshold() -> None:
    parties = [Scripted(f"p{i}") for i in range(5)]
    parties[2].fail = "test"
    result = collective_learning_round(parties, vote_threshold=1.0, round_index=0)
    assert result.approvals == 3
    assert result.vote is False
    assert all(p.accepted == [] for p in parties)


def test_a_failing_proposer_voids_the_round() -> None:
    parties = [Scripted(f"p{i}") for i in range(3)]
    parties[1].fail = "propose"
    result = collective_learning_round(parties, vote_threshold=0.5, round_index=4)
    assert result.block_proposer == 1
    assert result.void is True and result.vote is False
    assert result.outcomes[1] == ABSENT and "p1 failed in propose" in result.errors[1]
    assert all(p.calls == [] for i, p in enumerate(parties) if i != 1)


def test_a_learner_that_fails_to_accept_is_recorded_and_the_others_adopt() -> None:
    parties = [Scripted(f"p{i}") for i in range(3)]
    parties[2].fail = "accept"
    result = collective_learning_round(parties, vote_threshold=0.5, round_index=0)
    assert result.vote is True
    assert "accept failed" in result.errors[2]
    assert parties[0].current.weights == parties[1].current.weights == "proposal-of-p0"


@pytest.mark.parametrize(("quorum", "void"), [(4, False), (5, True), (3, False)])
def test_quorum_counts_the_voters_that_answered(quorum: int, void: bool) -> None:
    parties = [Scripted(f"p{i}") for i in range(6)]
    parties[5].fail = "test"  # 4 of 5 voters answer
    result = collective_learning_round(parties, vote_threshold=0.5, round_index=0, quorum=quorum)
    assert result.void is void
    assert result.vote is (not void)
    if void:
        assert "quorum" in result.reason
        assert all(p.accepted == [] for p in parties)
    else:
        assert len(parties[0].accepted) == 1


def test_nan_scores_are_recorded_as_none() -> None:
    parties = [Scripted(f"p{i}", score=math.nan) for i in range(3)]
    result = collective_learning_round(parties, vote_threshold=0.5, round_index=0)
    assert result.vote_scores == [None, None, None]
    assert result.test_scores == [None, None, None]
    assert result.mean_test_score is None


def test_initial_result_scores_each_learner_on_its_own_weights() -> None:
    parties = [Scripted(f"p{i}", score=0.1 * (i + 1)) for i in range(3)]
    parties[1].fail = "current"
    result = initial_result(parties)
    assert result.round_index is None
    assert result.outcomes == [NONE, ABSENT, NONE]
    assert result.vote_scores == [pytest.approx(0.1), None, pytest.approx(0.3)]
    assert 1 in result.errors
    assert all("accept" not in p.calls and "propose" not in p.calls for p in parties)


def test_set_equal_weights_copies_the_first_learners_weights() -> None:
    parties = [Scripted(f"p{i}") for i in range(4)]
    set_equal_weights(parties)
    assert all(p.current.weights == "p0-initial" for p in parties)
    assert parties[0].accepted == []

    parties[2].fail = "accept"
    with pytest.raises(RuntimeError, match="1 learner"):
        set_equal_weights(parties)


def test_rounds_with_real_models_built_in_process() -> None:
    from colearn_learner import ExampleMliFactory

    factory = ExampleMliFactory()
    learners = [
        factory.get_mli("SKLEARN_DIGITS", "{}", "DIGITS", json.dumps({"shard": i, "n_shards": 3}))
        for i in range(3)
    ]
    set_equal_weights(learners)
    first = initial_result(learners)
    assert all(s is not None for s in first.test_scores)
    result = collective_learning_round(learners, vote_threshold=0.5, round_index=1)
    assert result.block_proposer == 1 and result.votes[1] is None
    assert result.vote is True  # one epoch from random weights is better for everyone
    weights = [learner.mli_get_current_weights().weights for learner in learners]
    for other in weights[1:]:
        assert np.array_equal(weights[0]["coef"], other["coef"])
        assert np.array_equal(weights[0]["intercept"], other["intercept"])


class NumpyVoter(Scripted):
    """An in-process model that compares numpy scores, as most do: its vote is a ``numpy.bool_``."""

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        verdict = super().mli_test_weights(weights)
        verdict.vote_score = np.float64(0.75)
        verdict.vote = verdict.vote_score > np.float64(0.5)  # numpy.True_, not True
        return verdict


def test_a_numpy_bool_approval_counts_and_is_stored_as_a_plain_bool(tmp_path: Path) -> None:
    """colearn counts a truthy vote as an approval; the outcome already says approve, so must the count."""
    parties = [Scripted("p0"), NumpyVoter("p1"), NumpyVoter("p2")]
    result = collective_learning_round(parties, vote_threshold=1.0, round_index=0)
    assert result.outcomes == [PROPOSER, APPROVE, APPROVE]
    assert result.approvals == 2
    assert result.vote is True
    assert all(p.accepted for p in parties)
    assert result.votes == [None, True, True] and all(type(v) is bool for v in result.votes[1:])
    Results(data=[result]).save(tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text())["results"][0]["votes"] == [None, True, True]
