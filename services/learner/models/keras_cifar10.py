"""KERAS_CIFAR10: 32x32 colour images in 10 classes, from the CIFAR-10 binary batches via ``colearn-data``.

The model is KERAS_MNIST's CNN on 32x32x3 (3 x (Conv 5x5 -> MaxPool) with 32, 32 and 64 filters -> Dense
64 -> softmax 10); it votes on accuracy, strictly, on a fixed seeded subset of the vote split.
"""

from __future__ import annotations

from colearn_learner.models.image_shards import ImageData, load_image_shard
from colearn_learner.models.keras_mnist import BatchSize, Steps, VoteBatches, conv_net, keras_image_learner
from colearn_learner.models.keras_support import KerasLearner
from colearn_learner.parameter_types import PositiveFloat, Ratio, Seed
from colearn_learner.registry import FactoryRegistry

CIFAR10_SHAPE = (32, 32, 3)


@FactoryRegistry.register_dataloader("KERAS_CIFAR10")
def prepare_keras_cifar10_data(
    location: str,
    train_ratio: Ratio = 0.8,
    vote_ratio: Ratio = 0.1,
    batch_size: BatchSize = 64,
    seed: Seed = 42,
) -> ImageData:
    """``<location>/data.npz``: ``images`` N x 32 x 32 x 3 (uint8, or float in [0, 1]), ``labels`` (0-9)."""
    return load_image_shard(
        "KERAS_CIFAR10",
        location,
        CIFAR10_SHAPE,
        train_ratio=train_ratio,
        vote_ratio=vote_ratio,
        batch_size=batch_size,
        seed=seed,
    )


@FactoryRegistry.register_model_architecture("KERAS_CIFAR10", ["KERAS_CIFAR10"])
def prepare_keras_cifar10(
    data: ImageData,
    steps_per_epoch: Steps = 100,
    vote_batches: VoteBatches = 10,
    learning_rate: PositiveFloat = 0.001,
    seed: Seed = 0,
    run_eagerly: bool = False,
) -> KerasLearner:
    return keras_image_learner(
        lambda keras: conv_net(keras, CIFAR10_SHAPE, data.n_classes),
        data,
        steps_per_epoch,
        vote_batches,
        learning_rate,
        seed,
        run_eagerly,
    )
