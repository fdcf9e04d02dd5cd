"""The per-learner feature shards that PYTORCH_COVID_XRAY and FRAUD read: ``<location>/data.npz``.

Their split tools write ``features`` (float32 N x F, already encoded and scaled) and ``labels`` (class
numbers). A shard with NaN or infinite features, or labels outside the family's classes, is refused rather
than trained on: either would only make the model learn badly, far from the file that caused it.

numpy only: reading a shard never imports a framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from colearn_learner.errors import InvalidParametersError
from colearn_models.support.shard_files import (
    SHARD_FILE,
    SplitIndices,
    load_npz_arrays,
    require_folder,
    split_indices,
)


@dataclass(frozen=True)
class FeatureShard:
    features: np.ndarray  # float32, N x F
    labels: np.ndarray  # int64, N, in [0, number of classes)
    split: SplitIndices
    batch_size: int
    seed: int


def load_feature_shard(
    family: str,
    location: str,
    n_features: int | None,
    classes: Sequence[str],
    *,
    train_ratio: float,
    vote_ratio: float,
    batch_size: int,
    seed: int,
) -> FeatureShard:
    """Reads and checks one learner's shard (``n_features`` columns, or any number when ``None``; labels
    numbering ``classes``), then splits it into seeded, disjoint train/vote/test index sets."""
    path = require_folder(location, [SHARD_FILE], family) / SHARD_FILE
    # Booleans are class numbers too: FRAUD's isFraud is often stored as one.
    specs = {"features": ("f", (None, n_features)), "labels": ("iub", (None,))}
    arrays = load_npz_arrays(path, specs, family)
    features, labels = arrays["features"], arrays["labels"]
    if features.shape[1] == 0:
        raise InvalidParametersError(f"{family}: 'features' in {path} has no columns; expected N x F, F >= 1")
    if not np.isfinite(features).all():
        raise InvalidParametersError(f"{family}: 'features' in {path} holds NaN or infinities")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise InvalidParametersError(
            f"{family}: 'labels' in {path} must lie in 0..{len(classes) - 1} ({', '.join(classes)}); "
            f"found {labels.min()}..{labels.max()}"
        )
    return FeatureShard(
        features=features.astype(np.float32, copy=False),
        labels=labels.astype(np.int64),
        split=split_indices(len(labels), train_ratio, vote_ratio, seed, family),
        batch_size=batch_size,
        seed=seed,
    )
