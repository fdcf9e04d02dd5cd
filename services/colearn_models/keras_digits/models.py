"""KERAS_DIGITS: a small Keras dense network on DIGITS, so that Keras too has a default needing no files.

It votes on accuracy over the whole vote part of the learner's DIGITS shard (a few dozen images), strictly.
"""

from __future__ import annotations

from typing import Any

from colearn_learner.parameter_types import BatchSize, HiddenUnits, LearningRate, Seed
from colearn_learner.registry import ModelRegistry
from colearn_models.digits.models import DigitsData
from colearn_models.support import keras_support
from colearn_models.support.keras_support import KerasLearner, KerasSteps, Scoring

registry = ModelRegistry(extra="keras", model_files=[keras_support.MODEL_FILE])


def dense_net(keras: Any, n_features: int, hidden: int, n_classes: int) -> Any:
    layers = keras.layers
    inputs = keras.Input(shape=(n_features,), name="pixels")
    x = layers.Dense(hidden, activation="relu", name="hidden")(inputs)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="digits_dense")


@registry.register_model_architecture("KERAS_DIGITS", ["DIGITS"])
def prepare_keras_digits(
    data: DigitsData,
    hidden: HiddenUnits = 64,
    learning_rate: LearningRate = 0.01,
    steps_per_epoch: KerasSteps = 10,
    batch_size: BatchSize = 32,
    seed: Seed = 0,
    run_eagerly: bool = False,
) -> KerasLearner:
    return KerasLearner(
        lambda keras: dense_net(keras, data.n_features, hidden, data.n_classes),
        {"train": data.train, "vote": data.vote, "test": data.test},
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        scoring=Scoring(samples=None, batch_size=256),
        learning_rate=learning_rate,
        seed=seed,
        run_eagerly=run_eagerly,
    )
