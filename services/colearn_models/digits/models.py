"""DIGITS: scikit-learn's embedded 8x8 digits, sharded across learners. Needs no files at all.

Every learner permutes the 1,797 images with the same seed, takes every ``n_shards``-th one from position
``shard`` and splits its share into train, vote and test parts. Shards and splits are therefore disjoint,
and a learner given the same parameters always sees the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field

from colearn_learner.errors import InvalidParametersError
from colearn_learner.parameter_types import Ratio, Seed
from colearn_learner.registry import ModelRegistry

registry = ModelRegistry(extra="sklearn")


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, N x 64, in [0, 1]
    y: np.ndarray  # int64, N


@dataclass(frozen=True)
class DigitsData:
    train: Split
    vote: Split
    test: Split
    n_classes: int = 10
    n_features: int = 64


def shard_indices(n_samples: int, shard: int, n_shards: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n_samples)
    return order[shard::n_shards]


@registry.register_dataloader("DIGITS")
def prepare_digits(
    shard: Annotated[int, Field(ge=0)] = 0,
    n_shards: Annotated[int, Field(ge=1, le=64)] = 1,
    train_ratio: Ratio = 0.6,
    vote_ratio: Ratio = 0.2,
    seed: Seed = 42,
) -> DigitsData:
    if shard >= n_shards:
        raise InvalidParametersError(f"shard must be below n_shards: got shard={shard}, n_shards={n_shards}")
    if train_ratio + vote_ratio >= 1:
        raise InvalidParametersError("train_ratio + vote_ratio must leave some data for the test split (< 1)")
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = shard_indices(len(digits.target), shard, n_shards, seed)
    x = (digits.data[idx] / 16.0).astype(np.float32)
    y = digits.target[idx].astype(np.int64)
    n_train = int(len(idx) * train_ratio)
    n_vote = int(len(idx) * vote_ratio)
    if min(n_train, n_vote, len(idx) - n_train - n_vote) < 1:
        raise InvalidParametersError(
            f"shard {shard} of {n_shards} holds {len(idx)} images: too few for train, vote and test splits"
        )
    cut = (n_train, n_train + n_vote)
    return DigitsData(
        train=Split(x[: cut[0]], y[: cut[0]]),
        vote=Split(x[cut[0] : cut[1]], y[cut[0] : cut[1]]),
        test=Split(x[cut[1] :], y[cut[1] :]),
    )
