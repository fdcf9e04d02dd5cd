"""The PodDisruptionBudget follows the vote: drains never take away the learners a round needs.

The formula (values.yaml, pdb.minAvailable) is checked against the backend's own vote arithmetic,
``backend_client.rounds.required_approvals``, so that the chart and the rounds cannot disagree.
"""

from __future__ import annotations

import math

import pytest
from helm_kit import render, template

from backend_client.rounds import required_approvals


def expected_min_available(replicas: int, threshold: float, quorum: int) -> int:
    """quorum voters + the proposer; without a quorum, the approvals an accept needs + the proposer."""
    needed = quorum + 1 if quorum else math.ceil(required_approvals(replicas, threshold)) + 1
    return min(needed, replicas)


@pytest.mark.parametrize(
    ("replicas", "threshold", "quorum"),
    [
        (3, 0.5, 0),  # 1 approval of 2 voters, and the proposer: 2
        (5, 0.5, 3),  # a quorum of 3 voters, and the proposer: 4
        (5, 0.75, 0),  # ceil(4 * 0.75) = 3 approvals: 4
        (4, 1.0, 0),  # unanimity: every learner
        (4, 0.0, 0),  # no approval needed: the proposer alone
        (1, 0.5, 0),  # a fleet of one keeps its one learner
        (25, 0.28, 0),  # 24 * 0.28 = 6.72 in floats too: 7 approvals, 8 learners
        (26, 0.28, 0),  # 25 * 0.28 is 7.000000000000001 in floats, exactly 7: 8 learners, not 9
        (10, 0.5, 9),  # a quorum of every voter: all 10
    ],
)
def test_min_available_follows_the_quorum_and_threshold(replicas: int, threshold: float, quorum: int) -> None:
    out = render({"replicas": replicas, "vote": {"threshold": threshold, "quorum": quorum}})
    pdb = out.one("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == expected_min_available(replicas, threshold, quorum)
    assert pdb["selector"]["matchLabels"].items() <= out.learner_pod["metadata"]["labels"].items()
    # The Job runs the rounds with the same vote the budget was sized for.
    flags = out.backend_flags()
    assert (float(flags["vote_threshold"]), int(flags["quorum"])) == (threshold, quorum)


def test_the_float_trap_is_real() -> None:
    """The (26, 0.28) case above guards against this: a plain float product would ask for 9 learners."""
    assert math.ceil(25 * 0.28) == 8
    assert required_approvals(26, 0.28) == 7


def test_an_explicit_min_available_wins_but_never_exceeds_replicas() -> None:
    assert render({"pdb": {"minAvailable": 1}}).one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    capped = render({"replicas": 2, "pdb": {"minAvailable": 5}})
    assert capped.one("PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert render({"pdb": {"enabled": False}}).maybe("PodDisruptionBudget") is None


def test_a_quorum_larger_than_the_voters_is_refused() -> None:
    done = template({"replicas": 3, "vote": {"quorum": 3}})
    assert done.returncode != 0
    assert "vote.quorum (3) exceeds the voters a round has (replicas - 1 = 2)" in done.stderr
