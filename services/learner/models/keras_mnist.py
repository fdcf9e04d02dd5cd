"""KERAS_MNIST: 28x28 greyscale digits (or Fashion-MNIST, the same format) from ``colearn-data split``.

Two models take this data:

- KERAS_MNIST, a small CNN: 3 x (Conv 5x5 -> MaxPool) with 32, 32 and 64 filters -> Dense 64 -> softmax 10;
- KERAS_MNIST_RESNET: the image padded to 32x32 and repeated to 3 channels, a ResNet50 built with
  ``weights=None`` (nothing downloads), global average pooling, dropout, softmax 10. Its weights are
  ~94 MB, so each round moves ~94 MB per learner.

Both vote on accuracy, strictly (``new > current``), on a fixed seeded subset of the vote split.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from colearn_learner.models.image_shards import ImageData, load_image_shard
from colearn_learner.models.keras_support import KerasLearner, Scoring
from colearn_learner.parameter_types import PositiveFloat, Ratio, Seed
from colearn_learner.registry import FactoryRegistry

MNIST_SHAPE = (28, 28, 1)

BatchSize = Annotated[int, Field(ge=1, le=65536)]
Steps = Annotated[int, Field(ge=1, le=1_000_000)]
VoteBatches = Annotated[int, Field(ge=1, le=1_000_000)]


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


def keras_image_learner(
    build: Any,
    data: ImageData,
    steps_per_epoch: int,
    vote_batches: int,
    learning_rate: float,
    seed: int,
    run_eagerly: bool,
) -> KerasLearner:
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


@FactoryRegistry.register_dataloader("KERAS_MNIST")
def prepare_keras_mnist_data(
    location: str,
    train_ratio: Ratio = 0.8,
    vote_ratio: Ratio = 0.1,
    batch_size: BatchSize = 64,
    seed: Seed = 42,
) -> ImageData:
    """``<location>/data.npz``: ``images`` N x 28 x 28 x 1 (float32 in [0, 1]) and ``labels`` (0-9)."""
    return load_image_shard(
        "KERAS_MNIST",
        location,
        MNIST_SHAPE,
        train_ratio=train_ratio,
        vote_ratio=vote_ratio,
        batch_size=batch_size,
        seed=seed,
    )


@FactoryRegistry.register_model_architecture("KERAS_MNIST", ["KERAS_MNIST"])
def prepare_keras_mnist(
    data: ImageData,
    steps_per_epoch: Steps = 100,
    vote_batches: VoteBatches = 10,
    learning_rate: PositiveFloat = 0.001,
    seed: Seed = 0,
    run_eagerly: bool = False,
) -> KerasLearner:
    """``run_eagerly`` skips tracing the training and scoring graphs: slower steps, no start-up cost."""
    return keras_image_learner(
        lambda keras: conv_net(keras, MNIST_SHAPE, data.n_classes),
        data,
        steps_per_epoch,
        vote_batches,
        learning_rate,
        seed,
        run_eagerly,
    )


@FactoryRegistry.register_model_architecture("KERAS_MNIST_RESNET", ["KERAS_MNIST"])
def prepare_keras_mnist_resnet(
    data: ImageData,
    steps_per_epoch: Steps = 10,
    vote_batches: VoteBatches = 10,
    learning_rate: PositiveFloat = 0.001,
    seed: Seed = 0,
    run_eagerly: bool = False,
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5,
) -> KerasLearner:
    """Tracing ResNet50's training graph takes ~18 s on a 2-core CPU; ``run_eagerly`` skips it (and the
    scoring graph's ~1 s) at ~2x the time per step, which pays off below ~30 steps in a learner's life."""
    return keras_image_learner(
        lambda keras: resnet_net(keras, data.n_classes, dropout),
        data,
        steps_per_epoch,
        vote_batches,
        learning_rate,
        seed,
        run_eagerly,
    )
