"""What the scikit-learn families share: a linear ``SGDClassifier``, its weights ``coef`` and ``intercept``.

- Every learner starts from the same seeded weights (small normal ``coef``, zero ``intercept``), so a fleet
  agrees on them before its first round.
- The weights live in the learner as float64 arrays, not in the classifier: training copies them into it,
  runs ``partial_fit`` and copies the result out, so the current weights change only by an accept.
- SGDClassifier keeps ``coef_`` in the dtype of the data it saw first: it is fed float64 throughout.

scikit-learn is imported when a learner is built, never when this module is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors.numpy

from colearn_contract.mli import ColearnModel
from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner.model_files import ModelFileWriter
from colearn_models.support.scored_learner import ScoredLearner


class LinearSgdLearner(ScoredLearner):
    """A subclass stores its data, then calls ``super().__init__``: the base scores the initial weights on
    the vote data as its last step. Binary classes get one row of ``coef``, as scikit-learn fits them."""

    def __init__(self, n_classes: int, n_features: int, seed: int, **sgd: Any) -> None:
        from sklearn.linear_model import SGDClassifier

        self._classes = np.arange(n_classes)
        self._model = SGDClassifier(learning_rate="constant", random_state=seed, **sgd)
        rows = 1 if n_classes == 2 else n_classes
        self._coef = np.random.default_rng(seed).normal(0, 0.01, (rows, n_features)).astype(np.float64)
        self._intercept = np.zeros(rows, dtype=np.float64)
        super().__init__()

    def _get_weights(self) -> dict[str, np.ndarray]:
        return {"coef": self._coef.copy(), "intercept": self._intercept.copy()}

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._coef = np.array(weights["coef"], dtype=np.float64)
        self._intercept = np.array(weights["intercept"], dtype=np.float64)

    def _classifier_at_current_weights(self, first_x: np.ndarray, first_y: np.ndarray) -> Any:
        """The classifier holding the current weights, ready for ``partial_fit``; on its first use it learns
        the classes from one sample (``first_x``, ``first_y``), whose step the current weights then undo."""
        model = self._model
        if not hasattr(model, "classes_"):
            model.partial_fit(first_x, first_y, classes=self._classes)
        model.coef_, model.intercept_ = self._coef.copy(), self._intercept.copy()
        return model

    @staticmethod
    def _weights_of(model: Any) -> dict[str, np.ndarray]:
        return {"coef": model.coef_.copy(), "intercept": model.intercept_.copy()}

    def mli_get_current_model(self) -> ColearnModel:
        """A fitted ``SGDClassifier`` holding the current weights, ready for ``predict``."""
        from sklearn.base import clone

        model = clone(self._model)
        model.coef_, model.intercept_ = self._coef.copy(), self._intercept.copy()
        model.classes_ = self._classes
        return ColearnModel(model_format="sklearn", model=model)


def estimator_file(model: Any, metadata: Mapping[str, str]) -> bytes:
    """A fitted estimator's numeric arrays under their own attribute names (``coef_``, ``intercept_``,
    ``classes_``...) as a safetensors file, with the estimator's class, its parameters (JSON) and the
    scikit-learn version in the metadata. Setting the arrays on a fresh estimator of that class built with
    those parameters gives one that predicts alike. joblib would write a pickle, which runs code when
    loaded."""
    import sklearn

    arrays = {
        name: np.ascontiguousarray(value)
        for name, value in sorted(vars(model).items())
        if name.endswith("_")
        and not name.startswith("_")
        and isinstance(value, np.ndarray)
        and value.dtype.kind in "biuf"
    }
    described = {
        "sklearn.estimator": type(model).__name__,
        "sklearn.parameters": json.dumps(model.get_params(), sort_keys=True, default=str),
        "sklearn.version": sklearn.__version__,
    }
    return safetensors.numpy.save(arrays, metadata={**metadata, **described})


#: How a scikit-learn family's model is written as a file (``GetCurrentModel``); its families register it.
MODEL_FILE = ModelFileWriter("sklearn", pb.MODEL_FORMAT_SAFETENSORS, estimator_file)
