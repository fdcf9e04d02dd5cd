"""The per-learner image shards the Keras image families read: ``<location>/data.npz``.

The split tools write ``images`` (N x H x W x C) and ``labels`` (N, integers 0-9). Images may be float in
[0, 1] (KERAS_MNIST writes float32) or uint8 in 0-255 (KERAS_CIFAR10 writes uint8, a quarter of the size);
both reach the model as float32 in [0, 1]. Values outside those ranges are refused rather than silently
trained on, since an image scaled twice, or not at all, would otherwise just learn badly.

The image families differ only in their tag and image shape, so they share one dataloader, with the same
parameters and defaults: a client sets up KERAS_MNIST and KERAS_CIFAR10 data the same way.

numpy only: reading a shard never imports a framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from colearn_learner.errors import InvalidParametersError
from colearn_learner.parameter_types import BatchSize, Ratio, Seed
from colearn_learner.registry import ModelRegistry
from colearn_models.support.shard_files import SHARD_FILE, load_npz_arrays, require_folder, split_indices

N_CLASSES = 10


@dataclass(frozen=True)
class ImageSplit:
    x: np.ndarray  # float32, N x H x W x C, in [0, 1]
    y: np.ndarray  # int64, N, in [0, N_CLASSES)


@dataclass(frozen=True)
class ImageData:
    train: ImageSplit
    vote: ImageSplit
    test: ImageSplit
    batch_size: int
    image_shape: tuple[int, int, int]
    n_classes: int = N_CLASSES


def load_image_shard(
    family: str,
    location: str,
    image_shape: tuple[int, int, int],
    *,
    train_ratio: float,
    vote_ratio: float,
    batch_size: int,
    seed: int,
) -> ImageData:
    """Reads and checks one learner's shard, then splits it into seeded, disjoint train/vote/test parts."""
    folder = require_folder(location, [SHARD_FILE], family)
    specs = {"images": ("fu", (None, *image_shape)), "labels": ("iu", (None,))}
    arrays = load_npz_arrays(folder / SHARD_FILE, specs, family)
    images, labels = arrays["images"], arrays["labels"]
    path = folder / SHARD_FILE
    if images.dtype.kind == "u":
        if images.dtype != np.uint8:
            raise InvalidParametersError(
                f"{family}: 'images' in {path} is {images.dtype}; expected uint8 (0-255) or float in [0, 1]"
            )
        x = images.astype(np.float32) / np.float32(255)
    else:
        low, high = float(images.min()), float(images.max())
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 1):
            raise InvalidParametersError(
                f"{family}: float 'images' in {path} range over [{low}, {high}]; expected values in [0, 1]"
            )
        x = images.astype(np.float32, copy=False)
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise InvalidParametersError(
            f"{family}: 'labels' in {path} range over [{labels.min()}, {labels.max()}]; "
            f"expected class numbers 0-{N_CLASSES - 1}"
        )
    y = labels.astype(np.int64)
    parts = split_indices(len(y), train_ratio, vote_ratio, seed, family)
    return ImageData(
        # Sorted indices keep each split's rows in file order: a cheaper gather, the same sets.
        train=ImageSplit(x[np.sort(parts.train)], y[np.sort(parts.train)]),
        vote=ImageSplit(x[np.sort(parts.vote)], y[np.sort(parts.vote)]),
        test=ImageSplit(x[np.sort(parts.test)], y[np.sort(parts.test)]),
        batch_size=batch_size,
        image_shape=image_shape,
    )


def register_image_dataloader(
    registry: ModelRegistry, family: str, image_shape: tuple[int, int, int]
) -> Callable[..., ImageData]:
    """Registers ``family``'s dataloader, which reads shards of ``image_shape`` images; returns it."""

    def prepare_image_data(
        location: str,
        train_ratio: Ratio = 0.8,
        vote_ratio: Ratio = 0.1,
        batch_size: BatchSize = 64,
        seed: Seed = 42,
    ) -> ImageData:
        return load_image_shard(
            family,
            location,
            image_shape,
            train_ratio=train_ratio,
            vote_ratio=vote_ratio,
            batch_size=batch_size,
            seed=seed,
        )

    return registry.register_dataloader(family)(prepare_image_data)
