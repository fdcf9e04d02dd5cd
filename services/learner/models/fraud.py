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

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from colearn_contract.mli import ColearnModel
from colearn_learner.errors import InvalidParametersError
from colearn_learner.models.scored_learner import ScoredLearner
from colearn_learner.models.shard_files import (
    SHARD_FILE,
    SplitIndices,
    fixed_subset,
    load_npz_arrays,
    require_folder,
    split_indices,
)
from colearn_learner.parameter_types import PositiveFloat, Ratio, Seed
from colearn_learner.registry import FactoryRegistry

FAMILY = "FRAUD"
CLASSES = np.array([0, 1])
BatchSize = Annotated[int, Field(ge=1, le=1_000_000)]
Steps = Annotated[int, Field(ge=1, le=100_000)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


@dataclass(frozen=True)
class FraudData:
    features: np.ndarray  # float32, N x F
    labels: np.ndarray  # int64, N, 0 or 1
    split: SplitIndices
    batch_size: int
    seed: int


@FactoryRegistry.register_dataloader(FAMILY)
def prepare_fraud_data(
    location: str,
    train_ratio: Ratio = 0.8,
    vote_ratio: Ratio = 0.1,
    batch_size: BatchSize = 10_000,
    seed: Seed = 42,
) -> FraudData:
    folder = require_folder(location, [SHARD_FILE], FAMILY)
    path = folder / SHARD_FILE
    arrays = load_npz_arrays(path, {"features": ("f", (None, None)), "labels": ("iub", (None,))}, FAMILY)
    features, labels = arrays["features"], arrays["labels"]
    if features.shape[1] == 0:
        raise InvalidParametersError(f"{FAMILY}: 'features' in {path} has no columns; expected N x F, F >= 1")
    if not np.isfinite(features).all():
        raise InvalidParametersError(f"{FAMILY}: 'features' in {path} holds NaN or infinities")
    if not np.isin(labels, CLASSES).all():
        raise InvalidParametersError(f"{FAMILY}: 'labels' in {path} must be 0 or 1 (isFraud)")
    split = split_indices(len(labels), train_ratio, vote_ratio, seed, FAMILY)
    return FraudData(
        features=features.astype(np.float32, copy=False),
        labels=labels.astype(np.int64),
        split=split,
        batch_size=batch_size,
        seed=seed,
    )


class FraudLearner(ScoredLearner):
    criterion = "accuracy"
    strict_vote = False

    def __init__(
        self,
        data: FraudData,
        steps_per_epoch: int,
        vote_batches: int,
        learning_rate: float,
        alpha: float,
        seed: int,
    ) -> None:
        from sklearn.linear_model import SGDClassifier

        self._data = data
        self._steps = steps_per_epoch
        self._rng = np.random.default_rng(seed)
        size = vote_batches * data.batch_size
        self._scored = {
            "vote": fixed_subset(data.split.vote, size, data.seed),
            "test": fixed_subset(data.split.test, size, data.seed + 1),
        }
        self._model = SGDClassifier(
            loss="modified_huber",
            learning_rate="constant",
            eta0=learning_rate,
            alpha=alpha,
            random_state=seed,
        )
        # Every learner starts from the same seeded weights, so a fleet agrees before its first round.
        n_features = data.features.shape[1]
        self._coef = np.random.default_rng(seed).normal(0, 0.01, (1, n_features)).astype(np.float64)
        self._intercept = np.zeros(1, dtype=np.float64)
        super().__init__()

    def _get_weights(self) -> dict[str, np.ndarray]:
        return {"coef": self._coef.copy(), "intercept": self._intercept.copy()}

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._coef = np.array(weights["coef"], dtype=np.float64)
        self._intercept = np.array(weights["intercept"], dtype=np.float64)

    def _batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # SGDClassifier keeps coef_ in the dtype of the data it saw first: train in float64 throughout.
        return self._data.features[indices].astype(np.float64), self._data.labels[indices]

    def _train(self) -> dict[str, np.ndarray]:
        model, train = self._model, self._data.split.train
        if not hasattr(model, "classes_"):
            model.partial_fit(*self._batch(train[:1]), classes=CLASSES)
        model.coef_, model.intercept_ = self._coef.copy(), self._intercept.copy()
        for _ in range(self._steps):
            size = min(self._data.batch_size, len(train))
            model.partial_fit(*self._batch(train[self._rng.choice(len(train), size, replace=False)]))
        return {"coef": model.coef_.copy(), "intercept": model.intercept_.copy()}

    def _evaluate(self, weights: dict[str, Any], split: str) -> float:
        indices = self._scored[split]
        x = self._data.features[indices].astype(np.float64)
        margin = x @ np.asarray(weights["coef"], dtype=np.float64)[0] + float(
            np.asarray(weights["intercept"])[0]
        )
        return float(np.mean((margin > 0).astype(np.int64) == self._data.labels[indices]))

    def mli_get_current_model(self) -> ColearnModel:
        """A fitted ``SGDClassifier`` holding the current weights, ready for ``predict``."""
        from sklearn.base import clone

        model = clone(self._model)
        model.coef_, model.intercept_, model.classes_ = self._coef.copy(), self._intercept.copy(), CLASSES
        return ColearnModel(model_format="sklearn", model=model)


@FactoryRegistry.register_model_architecture(FAMILY, [FAMILY])
def prepare_fraud(
    data: FraudData,
    steps_per_epoch: Steps = 10,
    vote_batches: Steps = 10,
    learning_rate: PositiveFloat = 0.001,
    alpha: NonNegativeFloat = 0.0001,
    seed: Seed = 0,
) -> FraudLearner:
    return FraudLearner(data, steps_per_epoch, vote_batches, learning_rate, alpha, seed)
