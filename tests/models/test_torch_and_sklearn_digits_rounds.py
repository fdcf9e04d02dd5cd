"""Real data: PYTORCH_DIGITS and SKLEARN_DIGITS learn scikit-learn's embedded digits over gRPC.

Three learners hold disjoint shards (every third image of one seeded permutation; about 600 images each,
360 of them to train on). ``collective_learning_round`` drives three rounds over real gRPC, as the backend
does. The learners start from the same seeded random weights, near chance (10%), and the mean test
accuracy must end at 70% or more.

Why 70% holds with margin: a linear model or a one-hidden-layer MLP separates these 8x8 digits to about
95% when trained fully, and voting only accepts weights that score better on a learner's held-out vote
data, so an accepted round rarely loses ground. Measured in-process on this machine with the same
rounds, for model seeds 0-4 (each with its own data seed): the mean test accuracy after three rounds was
0.80-0.94 for PYTORCH_DIGITS and 0.84-0.90 for SKLEARN_DIGITS (0.88 and 0.90 with the defaults used
here), starting from 0.03-0.19. 70% is seven times chance and 10 points below the lowest of those runs.
The first proposal is always accepted: one epoch lifts a random model from ~10% to above 50%.
"""

from __future__ import annotations

import pytest
from zoo_kit import grpc_fleet

from backend_client import Results, collective_learning_round, initial_result

N_ROUNDS = 3
FINAL_BOUND = 0.70


@pytest.mark.slow  # 1-3 s on a quiet machine, but up to 9 s on a busy one (it may import torch first)
@pytest.mark.parametrize("model", ["PYTORCH_DIGITS", "SKLEARN_DIGITS"])
def test_three_rounds_lift_the_mean_test_accuracy_well_above_chance(model: str) -> None:
    with grpc_fleet() as fleet:
        shards = fleet.setup(model, "DIGITS", {})
        assert len(set(shards)) == 1, "the learners start from the same weights"
        results = Results()
        results.data.append(initial_result(fleet.clients))
        for round_index in range(N_ROUNDS):
            results.data.append(collective_learning_round(fleet.clients, 0.5, round_index))

    start, end = results.data[0].mean_test_score, results.data[-1].mean_test_score
    assert start is not None and end is not None
    assert start < 0.3, f"untrained weights should be near chance, got {start:.2f}"
    assert results.data[1].vote, "the first proposal beats random weights on every voter"
    assert end >= FINAL_BOUND, f"mean test accuracy after {N_ROUNDS} rounds is {end:.2f}"
    assert all(not r.void and not r.errors for r in results.rounds)
