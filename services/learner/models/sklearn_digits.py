"""SKLEARN_DIGITS: a linear SGD classifier on DIGITS, light enough for any laptop and the demo."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from colearn_contract.mli import ColearnModel
from colearn_learner.models.digits import DigitsData
from colearn_learner.models.scored_learner import ScoredLearner
from colearn_learner.parameter_types import PositiveFloat, Seed
from colearn_learner.registry import FactoryRegistry


class SklearnDigitsLearner(ScoredLearner):
    def __init__(
        self, data: DigitsData, learning_rate: float, epochs: int, batch_size: int, loss: str, seed: int
    ) -> None:
        from sklearn.linear_model import SGDClassifier

        self._data = data
        # SGDClassifier keeps coef_ in the dtype of the data it saw first: train in float64 throughout.
        self._train_x = data.train.x.astype(np.float64)
        self._batch_size = batch_size
        self._epochs = epochs
        self._rng = np.random.default_rng(seed)
        self._classes = np.arange(data.n_classes)
        self._model = SGDClassifier(
            loss=loss, learning_rate="constant", eta0=learning_rate, random_state=seed
        )
        # Every learner starts from the same seeded weights, so a fleet agrees before its first round.
        init = np.random.default_rng(seed)
        self._coef = init.normal(0, 0.01, (data.n_classes, data.n_features)).astype(np.float64)
        self._intercept = np.zeros(data.n_classes, dtype=np.float64)
        super().__init__()

    def _get_weights(self) -> dict[str, np.ndarray]:
        return {"coef": self._coef.copy(), "intercept": self._intercept.copy()}

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._coef = np.array(weights["coef"], dtype=np.float64)
        self._intercept = np.array(weights["intercept"], dtype=np.float64)

    def _train(self) -> dict[str, np.ndarray]:
        train = self._data.train
        model = self._model
        if not hasattr(model, "classes_"):
            model.partial_fit(self._train_x[:1], train.y[:1], classes=self._classes)
        model.coef_ = self._coef.copy()
        model.intercept_ = self._intercept.copy()
        for _ in range(self._epochs):
            order = self._rng.permutation(len(train.y))
            for start in range(0, len(order), self._batch_size):
                batch = order[start : start + self._batch_size]
                model.partial_fit(self._train_x[batch], train.y[batch])
        return {"coef": model.coef_.copy(), "intercept": model.intercept_.copy()}

    def mli_get_current_model(self) -> ColearnModel:
        """A fitted ``SGDClassifier`` holding the current weights, ready for ``predict``."""
        from sklearn.base import clone

        model = clone(self._model)
        model.coef_, model.intercept_, model.classes_ = (
            self._coef.copy(),
            self._intercept.copy(),
            self._classes,
        )
        return ColearnModel(model_format="sklearn", model=model)

    def _evaluate(self, weights: dict[str, Any], split: str) -> float:
        part = self._data.vote if split == "vote" else self._data.test
        scores = part.x @ np.asarray(weights["coef"]).T + np.asarray(weights["intercept"])
        return float(np.mean(np.argmax(scores, axis=1) == part.y))


@FactoryRegistry.register_model_architecture("SKLEARN_DIGITS", ["DIGITS"])
def prepare_sklearn_digits(
    data: DigitsData,
    learning_rate: PositiveFloat = 0.01,
    epochs: Annotated[int, Field(ge=1, le=100)] = 1,
    batch_size: Annotated[int, Field(ge=1)] = 32,
    loss: Literal["log_loss", "hinge", "modified_huber"] = "log_loss",
    seed: Seed = 0,
) -> SklearnDigitsLearner:
    return SklearnDigitsLearner(data, learning_rate, epochs, batch_size, loss, seed)
