"""The PodDisruptionBudget is sized by the vote, and never blocks a drain for good.

A drain may take down at once the learners the vote can spare (and at least one): the formula
(values.yaml, pdb.maxUnavailable) is checked against the backend's own vote arithmetic,
``backend_client.rounds.required_approvals``, so that the chart and the rounds cannot disagree.
"""

from __future__ import annotations

import math

import pytest
from helm_kit import render, template

from backend_client.rounds import required_approvals


def expected_max_unavailable(replicas: int, threshold: float, quorum: int) -> int:
    """replicas - (quorum voters + the proposer), or - (the approvals an accept needs + the proposer);
    never below 1, so that a drain always moves on."""
    needed = quorum + 1 if quorum else math.ceil(required_approvals(replicas, threshold)) + 1
    return max(1, replicas - needed)


@pytest.mark.parametrize(
    ("replicas", "threshold", "quorum"),
    [
        (3, 0.5, 0),  # 1 approval of 2 voters, and the proposer: 2 needed, 1 may go
        (5, 0.5, 3),  # a quorum of 3 voters, and the proposer: 4 needed, 1 may go
        (5, 0.75, 0),  # ceil(4 * 0.75) = 3 approvals: 4 needed, 1 may go
        (9, 0.5, 0),  # 4 approvals of 8: 5 needed, 4 may go
        (4, 1.0, 0),  # unanimity needs every learner, but a drain still takes one
        (4, 0.0, 0),  # no approval needed: the proposer alone, 3 may go
        (1, 0.5, 0),  # a fleet of one: its learner can be drained
        (2, 0.5, 0),  # a fleet of two: likewise (minAvailable blocked this for good)
        (25, 0.28, 0),  # 24 * 0.28 = 6.72 in floats too: 7 approvals, 8 needed, 17 may go
        (26, 0.28, 0),  # 25 * 0.28 is 7.000000000000001 in floats, exactly 7: 8 needed, 18 may go
        (10, 0.5, 9),  # a quorum of every voter: still 1
    ],
)
def test_max_unavailable_follows_the_quorum_and_threshold(
    replicas: int, threshold: float, quorum: int
) -> None:
    out = render({"replicas": replicas, "vote": {"threshold": threshold, "quorum": quorum}})
    pdb = out.one("PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == expected_max_unavailable(replicas, threshold, quorum)
    assert "minAvailable" not in pdb
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # a NotReady learner can always go
    assert pdb["selector"]["matchLabels"].items() <= out.learner_pod["metadata"]["labels"].items()
    # The Job runs the rounds with the same vote the budget was sized for.
    flags = out.backend_flags()
    assert (float(flags["vote_threshold"]), int(flags["quorum"])) == (threshold, quorum)


def test_the_float_trap_is_real() -> None:
    """The (26, 0.28) case above guards against this: a plain float product would ask for 9 learners."""
    assert math.ceil(25 * 0.28) == 8
    assert required_approvals(26, 0.28) == 7


def test_an_explicit_budget_wins_and_a_zero_one_is_refused() -> None:
    assert render({"pdb": {"maxUnavailable": 2}}).one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 2
    assert (
        render({"pdb": {"maxUnavailable": "30%"}}).one("PodDisruptionBudget")["spec"]["maxUnavailable"]
        == "30%"
    )
    policy = render({"pdb": {"unhealthyPodEvictionPolicy": "IfHealthyBudget"}}).one("PodDisruptionBudget")
    assert policy["spec"]["unhealthyPodEvictionPolicy"] == "IfHealthyBudget"
    assert render({"pdb": {"enabled": False}}).maybe("PodDisruptionBudget") is None
    for never in (0, "0%"):  # a budget that blocks every drain forever
        done = template({"pdb": {"maxUnavailable": never}})
        assert done.returncode != 0 and "maxUnavailable" in done.stderr, never


def test_a_quorum_larger_than_the_voters_is_refused() -> None:
    done = template({"replicas": 3, "vote": {"quorum": 3}})
    assert done.returncode != 0
    assert "vote.quorum (3) exceeds the voters a round has (replicas - 1 = 2)" in done.stderr
