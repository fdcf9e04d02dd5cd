"""TOY: a learner plugin whose cost is chosen by its parameters, so that benchmarks measure the fleet.

Load it with ``PYTHONPATH=benchmarks colearn-learner serve --plugins toy_learner``. The model holds one
float32 array of ``weights_mb`` MiB under the name ``"w"``. Training and evaluation are ``time.sleep``
calls of ``train_seconds`` and ``eval_seconds``, so that what a benchmark measures is transport, codec
and fan-out, not arithmetic. Every vote approves, so that every round is accepted and does its accept.
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from pydantic import Field

from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights
from colearn_learner.registry import FactoryRegistry

MIB = 1024 * 1024
NonNegative = Annotated[float, Field(ge=0)]


@FactoryRegistry.register_dataloader("TOY")
def prepare_toy(seed: int = 0) -> dict[str, int]:
    """TOY has no data; the seed travels on to the model, so that both parameter sets look like real ones."""
    return {"seed": seed}


class ToyLearner(MachineLearningInterface):
    def __init__(self, weights_mb: float, train_seconds: float, eval_seconds: float, seed: int) -> None:
        n = max(1, int(weights_mb * MIB) // 4)
        # A seeded ramp rather than random numbers: as cheap to build as zeros, but every page is touched,
        # so the resident size is honest, and equal seeds give equal weights on every learner.
        self._w = np.arange(n, dtype=np.float32)
        self._w += np.float32(seed)
        self._train_seconds = train_seconds
        self._eval_seconds = eval_seconds
        self._rounds = 0

    def mli_propose_weights(self) -> Weights:
        time.sleep(self._train_seconds)
        # A copy with a few changed elements: a new array per proposal (the cached proposal must not alias
        # the current weights) without touching the whole array more than once.
        new = self._w.copy()
        self._rounds += 1
        new[:: max(1, new.size // 8)] += np.float32(1.0)
        return Weights(weights={"w": new})

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        time.sleep(self._eval_seconds)
        w = weights.weights["w"]
        score = float(w[0]) if w.size else 0.0
        return ProposedWeights(
            weights=weights, vote_score=score, test_score=score, vote=True, criterion="toy"
        )

    def mli_accept_weights(self, weights: Weights) -> None:
        self._w = weights.weights["w"]

    def mli_get_current_weights(self) -> Weights:
        return Weights(weights={"w": self._w})


@FactoryRegistry.register_model_architecture("TOY", ["TOY"])
def prepare_toy_learner(
    data: dict[str, int],
    weights_mb: NonNegative = 1.0,
    train_seconds: NonNegative = 0.0,
    eval_seconds: NonNegative = 0.0,
    seed: int = 0,
) -> ToyLearner:
    return ToyLearner(weights_mb, train_seconds, eval_seconds, seed + data["seed"])
