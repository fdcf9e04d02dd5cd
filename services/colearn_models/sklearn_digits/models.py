"""SKLEARN_DIGITS: a linear SGD classifier on DIGITS, light enough for any laptop and the demo."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from colearn_learner.parameter_types import Count, Epochs, LearningRate, Seed
from colearn_learner.registry import ModelRegistry
from colearn_models.digits.models import DigitsData
from colearn_models.support import sklearn_support
from colearn_models.support.sklearn_support import LinearSgdLearner

registry = ModelRegistry(extra="sklearn", model_files=[sklearn_support.MODEL_FILE])


class SklearnDigitsLearner(LinearSgdLearner):
    def __init__(
        self, data: DigitsData, learning_rate: float, epochs: int, batch_size: int, loss: str, seed: int
    ) -> None:
        self._data = data
        self._train_x = data.train.x.astype(np.float64)
        self._batch_size = batch_size
        self._epochs = epochs
        self._rng = np.random.default_rng(seed)
        super().__init__(data.n_classes, data.n_features, seed, loss=loss, eta0=learning_rate)

    def _train(self) -> dict[str, np.ndarray]:
        train_y = self._data.train.y
        model = self._classifier_at_current_weights(self._train_x[:1], train_y[:1])
        for _ in range(self._epochs):
            order = self._rng.permutation(len(train_y))
            for start in range(0, len(order), self._batch_size):
                batch = order[start : start + self._batch_size]
                model.partial_fit(self._train_x[batch], train_y[batch])
        return self._weights_of(model)

    def _evaluate(self, weights: dict[str, Any], split: str) -> float:
        part = self._data.vote if split == "vote" else self._data.test
        scores = part.x @ np.asarray(weights["coef"]).T + np.asarray(weights["intercept"])
        return float(np.mean(np.argmax(scores, axis=1) == part.y))


@registry.register_model_architecture("SKLEARN_DIGITS", ["DIGITS"])
def prepare_sklearn_digits(
    data: DigitsData,
    learning_rate: LearningRate = 0.01,
    epochs: Epochs = 1,
    batch_size: Count = 32,
    loss: Literal["log_loss", "hinge", "modified_huber"] = "log_loss",
    seed: Seed = 0,
) -> SklearnDigitsLearner:
    return SklearnDigitsLearner(data, learning_rate, epochs, batch_size, loss, seed)
