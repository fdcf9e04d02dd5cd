"""What the Keras families share: a lazy, quiet TensorFlow import, and a learner base with colearn's rules.

- TensorFlow is imported when the first Keras model is set up, never when this module is: a learner that
  serves other families never pays its start-up time and memory.
- On a GPU, memory growth is switched on before anything touches the device, so several learner processes
  can share one GPU instead of the first one reserving all of its memory.
- Every learner builds its network right after seeding Keras with the model's ``seed``, under one lock
  (the seed is process-wide state), so a fleet agrees on the weights before round 0.
- The weights are ``model.get_weights()``: every variable, BatchNorm's moving statistics included, in the
  model's own order, as a list of arrays. After a round trip a model predicts exactly as its sender did.
- Proposing trains ``steps_per_epoch`` batches from a fresh optimizer state and then restores the weights
  it started from, even when training fails: the current model changes only by an accept.
- Scores are computed on a subset of ``vote_batches * batch_size`` samples of the vote (or test) split,
  chosen once with the seed, and predicted in fixed batches, so the same weights always get the same score.
  A second model of the same shape does the scoring, so scoring never touches the current model.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import Field

from colearn_contract.mli import ColearnModel
from colearn_contract.v1 import learner_pb2 as pb
from colearn_learner.model_files import ModelFileWriter, NoModelFileError
from colearn_learner.parameter_types import Steps
from colearn_models.support.image_shards import ImageData
from colearn_models.support.scored_learner import ScoredLearner
from colearn_models.support.shard_files import fixed_subset

_IMPORT_LOCK = threading.Lock()
# Seeding Keras sets process-wide state (Python's, numpy's and TensorFlow's generators), which every
# initializer draws from: two learners of one process must not build at the same time.
_BUILD_LOCK = threading.Lock()
_keras: Any = None

#: ``parameter_types.Steps`` with the Keras families' bound.
KerasSteps = Annotated[Steps, Field(le=1_000_000)]


def import_keras() -> Any:
    """Imports Keras on TensorFlow, once, quietly, with GPU memory growth on; returns the module."""
    global _keras
    with _IMPORT_LOCK:
        if _keras is None:
            # Operators may override these; the defaults keep a learner's log free of TensorFlow's banner
            # and keep numerics identical from run to run (oneDNN's fused kernels round differently).
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
            os.environ.setdefault("KERAS_BACKEND", "tensorflow")
            import tensorflow as tf

            enable_memory_growth(tf)
            import keras

            _keras = keras
    return _keras


def enable_memory_growth(tf: Any) -> list[str]:
    """Lets each process take GPU memory as it needs it; returns the GPUs it was switched on for."""
    enabled = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            enabled.append(gpu.name)
        except RuntimeError:  # the device was initialised already (another family used it first)
            pass
    return enabled


class LabelledSplit(Protocol):
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Scoring:
    """How many samples a score looks at: ``None`` means the whole split."""

    samples: int | None
    batch_size: int


class KerasLearner(ScoredLearner):
    """A Keras classifier (softmax outputs) trained with Adam on sparse labels, voting on accuracy."""

    def __init__(
        self,
        build: Callable[[Any], Any],
        splits: dict[str, LabelledSplit],
        *,
        batch_size: int,
        steps_per_epoch: int,
        scoring: Scoring,
        learning_rate: float,
        seed: int,
        run_eagerly: bool = False,
    ) -> None:
        keras = import_keras()
        self._keras = keras
        self._build_model = build
        with _BUILD_LOCK:  # building draws from the seeded state too: no other learner may build meanwhile
            keras.utils.set_random_seed(seed)
            self._model = build(keras)
            # Scoring loads weights into a second model, so it never touches the current one.
            self._scratch = build(keras)
        self._scratch_holds: Any = None  # the weights object last loaded into it
        self._model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
            loss="sparse_categorical_crossentropy",
            run_eagerly=run_eagerly,
        )
        self._scratch.compile(run_eagerly=run_eagerly)  # eager scoring too: no prediction graph to trace
        optimizer = self._model.optimizer
        optimizer.build(self._model.trainable_variables)
        self._fresh_optimizer = [np.array(v.numpy(), copy=True) for v in optimizer.variables]
        self._train_x, self._train_y = splits["train"].x, splits["train"].y
        self._steps = steps_per_epoch
        self._batches = BatchStream(len(self._train_y), batch_size, seed)
        self._eval_batch = scoring.batch_size
        self._scored = {}
        for offset, name in enumerate(("vote", "test")):
            split = splits[name]
            everything = np.arange(len(split.y))
            chosen = (
                everything
                if scoring.samples is None
                else fixed_subset(everything, scoring.samples, seed + offset)
            )
            self._scored[name] = (np.ascontiguousarray(split.x[chosen]), np.asarray(split.y[chosen]))
        super().__init__()

    # -- weights ------------------------------------------------------------------------------------

    def _get_weights(self) -> list[np.ndarray]:
        return [np.array(w, copy=True) for w in self._model.get_weights()]

    def _set_weights(self, weights: list[np.ndarray]) -> None:
        self._model.set_weights(weights)

    # -- training and scoring -----------------------------------------------------------------------

    def _train(self) -> list[np.ndarray]:
        start = self._get_weights()
        # Each proposal starts from the accepted weights, which may be another learner's: moments gathered
        # on older (possibly rejected) weights would push it in their direction.
        for variable, value in zip(self._model.optimizer.variables, self._fresh_optimizer, strict=True):
            variable.assign(value)
        try:
            for _ in range(self._steps):
                batch = self._batches.next()
                self._model.train_on_batch(self._train_x[batch], self._train_y[batch])
            return self._get_weights()
        finally:
            self._set_weights(start)  # proposing never changes the current model, even when it fails

    def _evaluate(self, weights: list[np.ndarray], split: str) -> float:
        x, y = self._scored[split]
        if weights is not self._scratch_holds:  # a vote scores the same weights twice: load them once
            self._scratch_holds = None
            self._scratch.set_weights(weights)
            self._scratch_holds = weights
        predicted = predict_in_batches(self._scratch, x, self._eval_batch).argmax(axis=1)
        return float(np.mean(predicted == y))

    def mli_get_current_model(self) -> ColearnModel:
        """A separate Keras model holding the current weights; training goes on without touching it.

        Built under the build lock: building draws from the process-wide seeded generators, and another
        learner of this process may be between seeding and building its own network."""
        with _BUILD_LOCK:
            model = self._build_model(self._keras)
        model.set_weights(self._get_weights())
        return ColearnModel(model_format="keras", model=model)


def keras_file(model: Any) -> bytes:
    """The model as a ``.keras`` zip (config JSON, metadata JSON, HDF5 weights), as ``model.save`` writes
    it and ``keras.saving.load_model`` reads it.

    Keras only writes to a path named ``*.keras``, so the zip goes through a temporary folder (under
    ``TMPDIR``: the learner's root filesystem may be read-only). A model with a ``Lambda`` layer is
    refused: Keras would store its function as Python bytecode, which is code, not data."""
    with tempfile.TemporaryDirectory(prefix="colearn-model-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        config = json.loads(archive.read("config.json"))
    if _holds_lambda(config):
        raise NoModelFileError(
            f"model {model.name} holds a Lambda layer, whose function Keras stores as Python bytecode: "
            "it has no .keras file that loads without running code; GetCurrentWeights gives its weights"
        )
    return data


def _holds_lambda(config: Any) -> bool:
    """Whether a saved model's config names a ``Lambda`` layer anywhere, nested models included."""
    pending = [config]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "Lambda":
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def image_learner(
    build: Callable[[Any], Any],
    data: ImageData,
    steps_per_epoch: int,
    vote_batches: int,
    learning_rate: float,
    seed: int,
    run_eagerly: bool,
) -> KerasLearner:
    """A learner on an image shard: it trains on batches of the shard's batch size, and scores a fixed
    subset of ``vote_batches`` such batches."""
    return KerasLearner(
        build,
        {"train": data.train, "vote": data.vote, "test": data.test},
        batch_size=data.batch_size,
        steps_per_epoch=steps_per_epoch,
        scoring=Scoring(samples=vote_batches * data.batch_size, batch_size=data.batch_size),
        learning_rate=learning_rate,
        seed=seed,
        run_eagerly=run_eagerly,
    )


def predict_in_batches(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities, predicted in fixed batches: the same inputs always meet the same arithmetic.

    A short last batch is padded to full size, so the prediction graph sees one input shape and is traced
    once, not once per split size."""
    batch_size = min(batch_size, len(x))  # a split smaller than a batch is one batch, unpadded
    outputs = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if len(chunk) < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *x.shape[1:]), x.dtype)])
        outputs.append(np.asarray(model.predict_on_batch(chunk)))
    return np.concatenate(outputs)[: len(x)]


class BatchStream:
    """Seeded shuffled epochs of indices, cut into batches; proposals walk on through the data."""

    def __init__(self, n_samples: int, batch_size: int, seed: int) -> None:
        self._n, self._batch_size = n_samples, min(batch_size, n_samples)
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(n_samples)
        self._cursor = 0

    def next(self) -> np.ndarray:
        if self._cursor + self._batch_size > self._n:  # a short tail would retrace the graph; reshuffle
            self._order, self._cursor = self._rng.permutation(self._n), 0
        batch = self._order[self._cursor : self._cursor + self._batch_size]
        self._cursor += self._batch_size
        return np.sort(batch)  # sorted indices read memory in order


#: How a Keras family's model is written as a file (``GetCurrentModel``); its families register it.
MODEL_FILE = ModelFileWriter("keras", pb.MODEL_FORMAT_KERAS, lambda model, metadata: keras_file(model))
