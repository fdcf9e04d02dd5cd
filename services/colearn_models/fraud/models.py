"""FRAUD: card-fraud detection on the IEEE-CIS transactions, with a linear SGD classifier.

Data: ``<location>/data.npz`` holding ``features`` (float32 N x F, already encoded, filled and scaled)
and ``labels`` (0 or 1, ``isFraud``), written by ``colearn-data split FRAUD`` from the competition's
``train_transaction.csv`` and ``train_identity.csv``.

Model: scikit-learn's ``SGDClassifier(loss="modified_huber")``, trained by ``partial_fit`` on
``steps_per_epoch`` random batches (seeded) per proposal. Its weights are ``{"coef": 1 x F, "intercept":
1}`` in float64. A learner scores accuracy on fixed, seeded subsets and approves weights that do at least
as well as its current ones (``>=``): a linear model on data this unbalanced often ties, and colearn's
fraud learner accepted ties too.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from colearn_learner.parameter_types import BatchSize, LearningRate, NonNegativeFloat, Ratio, Seed, Steps
from colearn_learner.registry import ModelRegistry
from colearn_models.support import sklearn_support
from colearn_models.support.feature_shards import FeatureShard, load_feature_shard
from colearn_models.support.shard_files import scored_subsets
from colearn_models.support.sklearn_support import LinearSgdLearner

registry = ModelRegistry(extra="sklearn", model_files=[sklearn_support.MODEL_FILE])

FAMILY = "FRAUD"
#: Label order: the label is ``isFraud``.
CLASSES = ("legitimate", "fraud")


@registry.register_dataloader(FAMILY)
def prepare_fraud_data(
    location: str,
    train_ratio: Ratio = 0.8,
    vote_ratio: Ratio = 0.1,
    batch_size: Annotated[BatchSize, Field(le=1_000_000)] = 10_000,
    seed: Seed = 42,
) -> FeatureShard:
    return load_feature_shard(
        FAMILY,
        location,
        None,
        CLASSES,
        train_ratio=train_ratio,
        vote_ratio=vote_ratio,
        batch_size=batch_size,
        seed=seed,
    )


class FraudLearner(LinearSgdLearner):
    criterion = "accuracy"
    strict_vote = False

    def __init__(
        self,
        data: FeatureShard,
        steps_per_epoch: int,
        vote_batches: int,
        learning_rate: float,
        alpha: float,
        seed: int,
    ) -> None:
        self._data = data
        self._steps = steps_per_epoch
        self._rng = np.random.default_rng(seed)
        self._scored = scored_subsets(data.split, vote_batches * data.batch_size, data.seed)
        sgd = {"loss": "modified_huber", "eta0": learning_rate, "alpha": alpha}
        super().__init__(len(CLASSES), data.features.shape[1], seed, **sgd)

    def _batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._data.features[indices].astype(np.float64), self._data.labels[indices]

    def _train(self) -> dict[str, np.ndarray]:
        train = self._data.split.train
        model = self._classifier_at_current_weights(*self._batch(train[:1]))
        for _ in range(self._steps):
            size = min(self._data.batch_size, len(train))
            model.partial_fit(*self._batch(train[self._rng.choice(len(train), size, replace=False)]))
        return self._weights_of(model)

    def _evaluate(self, weights: dict[str, Any], split: str) -> float:
        indices = self._scored[split]
        x = self._data.features[indices].astype(np.float64)
        margin = x @ np.asarray(weights["coef"], dtype=np.float64)[0] + float(
            np.asarray(weights["intercept"])[0]
        )
        return float(np.mean((margin > 0).astype(np.int64) == self._data.labels[indices]))


@registry.register_model_architecture(FAMILY, [FAMILY])
def prepare_fraud(
    data: FeatureShard,
    steps_per_epoch: Steps = 10,
    vote_batches: Steps = 10,
    learning_rate: LearningRate = 0.001,
    alpha: NonNegativeFloat = 0.0001,
    seed: Seed = 0,
) -> FraudLearner:
    return FraudLearner(data, steps_per_epoch, vote_batches, learning_rate, alpha, seed)
