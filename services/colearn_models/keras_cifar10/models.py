"""KERAS_CIFAR10: 32x32 colour images in 10 classes, from the CIFAR-10 binary batches via ``colearn-data``.

The model is KERAS_MNIST's CNN on 32x32x3 (3 x (Conv 5x5 -> MaxPool) with 32, 32 and 64 filters -> Dense
64 -> softmax 10), with KERAS_MNIST's parameters and defaults; it votes on accuracy, strictly, on a fixed
seeded subset of the vote split.
"""

from __future__ import annotations

from colearn_learner.registry import ModelRegistry
from colearn_models.keras_mnist.models import prepare_conv_net
from colearn_models.support import keras_support
from colearn_models.support.image_shards import register_image_dataloader

registry = ModelRegistry(extra="keras", model_files=[keras_support.MODEL_FILE])

CIFAR10_SHAPE = (32, 32, 3)

prepare_keras_cifar10_data = register_image_dataloader(registry, "KERAS_CIFAR10", CIFAR10_SHAPE)
registry.register_model_architecture("KERAS_CIFAR10", ["KERAS_CIFAR10"])(prepare_conv_net)
