"""A base for MLIs that vote by comparing a score on their vote data, as colearn's learners do.

Subclasses say how to train, evaluate, read and write weights; the base implements the voting rule
(strict ``new > current`` by default) and remembers the scores of weights it has tested, so that accepting
them needs no second evaluation.
"""

from __future__ import annotations

import abc
from typing import Any

from colearn_contract.mli import MachineLearningInterface, ProposedWeights, Weights


class ScoredLearner(MachineLearningInterface, abc.ABC):
    criterion = "accuracy"
    #: colearn votes for strictly better weights; a family may accept equal ones.
    strict_vote = True

    def __init__(self) -> None:
        self.vote_score = self._evaluate(self._get_weights(), "vote")
        self._tested: tuple[Any, float] | None = None

    @abc.abstractmethod
    def _train(self) -> Any:
        """Returns new weights trained from the current ones; the current model stays as it was."""

    @abc.abstractmethod
    def _evaluate(self, weights: Any, split: str) -> float:
        """Scores weights on the ``"vote"`` or ``"test"`` split, higher is better."""

    @abc.abstractmethod
    def _get_weights(self) -> Any:
        """A copy of the current weights, which later training must not change."""

    @abc.abstractmethod
    def _set_weights(self, weights: Any) -> None: ...

    def mli_propose_weights(self) -> Weights:
        return Weights(weights=self._train())

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        vote_score = self._evaluate(weights.weights, "vote")
        test_score = self._evaluate(weights.weights, "test")
        better = vote_score > self.vote_score if self.strict_vote else vote_score >= self.vote_score
        self._tested = (weights.weights, vote_score)  # a reference, so identity cannot be reused
        return ProposedWeights(
            weights=weights,
            vote_score=vote_score,
            test_score=test_score,
            vote=better,
            criterion=self.criterion,
        )

    def mli_accept_weights(self, weights: Weights) -> None:
        self._set_weights(weights.weights)
        if self._tested is not None and self._tested[0] is weights.weights:
            self.vote_score = self._tested[1]
        else:
            self.vote_score = self._evaluate(weights.weights, "vote")
        self._tested = None

    def mli_get_current_weights(self) -> Weights:
        return Weights(weights=self._get_weights())
