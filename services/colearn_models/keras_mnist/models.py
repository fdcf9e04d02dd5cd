"""KERAS_MNIST: 28x28 greyscale digits (or Fashion-MNIST, the same format) from ``colearn-data split``.

Two models take this data:

- KERAS_MNIST, a small CNN: 3 x (Conv 5x5 -> MaxPool) with 32, 32 and 64 filters -> Dense 64 -> softmax 10;
- KERAS_MNIST_RESNET: the image padded to 32x32 and repeated to 3 channels, a ResNet50 built with
  ``weights=None`` (nothing downloads), global average pooling, dropout, softmax 10. Its weights are
  ~94 MB, so each round moves ~94 MB per learner.

Both vote on accuracy, strictly (``new > current``), on a fixed seeded subset of the vote split.
"""

from __future__ import annotations

from typing import Any

from colearn_learner.parameter_types import DropoutRate, LearningRate, Seed
from colearn_learner.registry import ModelRegistry
from colearn_models.support import keras_support
from colearn_models.support.image_shards import ImageData, register_image_dataloader
from colearn_models.support.keras_support import KerasLearner, KerasSteps, image_learner

registry = ModelRegistry(extra="keras", model_files=[keras_support.MODEL_FILE])

MNIST_SHAPE = (28, 28, 1)

prepare_keras_mnist_data = register_image_dataloader(registry, "KERAS_MNIST", MNIST_SHAPE)


def conv_net(keras: Any, shape: tuple[int, int, int], n_classes: int = 10) -> Any:
    """colearn's KERAS_MNIST network, for any image shape (KERAS_CIFAR10 uses it on 32x32x3)."""
    layers = keras.layers
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for i, filters in enumerate((32, 32, 64), start=1):
        x = layers.Conv2D(filters, 5, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="fc2")(x)
    return keras.Model(inputs, outputs, name="conv_net")


def resnet_net(keras: Any, n_classes: int = 10, dropout: float = 0.5) -> Any:
    """ResNet50 on MNIST: it needs at least 32x32 with 3 channels, so the image is padded and repeated."""
    layers = keras.layers
    inputs = keras.Input(shape=MNIST_SHAPE, name="image")
    x = layers.ZeroPadding2D(2, name="pad_to_32")(inputs)
    x = layers.Concatenate(name="to_rgb")([x, x, x])
    base = keras.applications.ResNet50(weights=None, include_top=False, input_tensor=x)
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mnist_resnet50")


@registry.register_model_architecture("KERAS_MNIST", ["KERAS_MNIST"])
def prepare_conv_net(
    data: ImageData,
    steps_per_epoch: KerasSteps = 100,
    vote_batches: KerasSteps = 10,
    learning_rate: LearningRate = 0.001,
    seed: Seed = 0,
    run_eagerly: bool = False,
) -> KerasLearner:
    """``conv_net`` on the shard's image shape. ``run_eagerly`` skips tracing the training and scoring
    graphs: slower steps, no start-up cost."""

    def build(keras: Any) -> Any:
        return conv_net(keras, data.image_shape, data.n_classes)

    return image_learner(build, data, steps_per_epoch, vote_batches, learning_rate, seed, run_eagerly)


@registry.register_model_architecture("KERAS_MNIST_RESNET", ["KERAS_MNIST"])
def prepare_keras_mnist_resnet(
    data: ImageData,
    steps_per_epoch: KerasSteps = 10,
    vote_batches: KerasSteps = 10,
    learning_rate: LearningRate = 0.001,
    seed: Seed = 0,
    run_eagerly: bool = False,
    dropout: DropoutRate = 0.5,
) -> KerasLearner:
    """Tracing ResNet50's training graph is slow on a CPU; ``run_eagerly`` skips it (and the scoring
    graph's) at a higher cost per step, which pays off for a learner that trains few steps in its life
    (BENCHMARKS.md, "Code figures")."""

    def build(keras: Any) -> Any:
        return resnet_net(keras, data.n_classes, dropout)

    return image_learner(build, data, steps_per_epoch, vote_batches, learning_rate, seed, run_eagerly)
