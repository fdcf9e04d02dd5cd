"""What every file-backed dataloader shares: finding its files, reading `.npz` shards, seeded splits.

A location that does not exist, or lacks a file the family needs, is the client's mistake: it is refused
with ``INVALID_ARGUMENT`` naming what was expected, never a framework's stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile

from colearn_learner.errors import InvalidParametersError

#: The file the split tool writes into each learner's folder for the `.npz` families.
SHARD_FILE = "data.npz"


def require_folder(location: str | None, expected: Sequence[str], family: str) -> Path:
    """The location as a folder holding every ``expected`` entry (files or sub-folders), or an error."""
    wanted = ", ".join(expected)
    if not location:
        raise InvalidParametersError(f"{family} needs 'location': a folder holding {wanted}")
    folder = Path(location)
    if not folder.is_dir():
        raise InvalidParametersError(
            f"{family} location {location!r} is not a folder; expected one holding {wanted}"
        )
    missing = [name for name in expected if not (folder / name).exists()]
    if missing:
        raise InvalidParametersError(
            f"{family} location {location!r} lacks {', '.join(missing)}; expected a folder holding {wanted}"
        )
    return folder


def load_npz_arrays(path: Path, specs: Mapping[str, tuple[str, tuple[int | None, ...]]], family: str) -> dict:
    """Reads arrays without pickle and checks each one's dtype kind and shape.

    ``specs`` maps an array name to (numpy dtype kinds such as ``"f"`` or ``"iu"``, shape with ``None`` for
    any length). All arrays must have the same first dimension, and it must not be zero.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, NpzFile):
            with loaded:
                arrays = {name: loaded[name] for name in specs if name in loaded.files}
    except Exception as exc:
        # A damaged file is the client's mistake, and numpy's and zipfile's parsers signal it with a dozen
        # types (ValueError, OSError, EOFError, BadZipFile, zlib.error, NotImplementedError for an unknown
        # compression, RuntimeError for an encrypted member, tokenize's TokenError for a torn header...).
        raise InvalidParametersError(f"{family}: {path} is not a readable .npz file: {exc}") from None
    if not isinstance(loaded, NpzFile):
        raise InvalidParametersError(
            f"{family}: {path} holds one bare array (.npy); expected an .npz archive of {', '.join(specs)}"
        )
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise InvalidParametersError(
            f"{family}: {path} lacks arrays {', '.join(missing)}; expected {', '.join(specs)}"
        )
    for name, (kinds, shape) in specs.items():
        array = arrays[name]
        fits = array.ndim == len(shape) and all(
            want in (None, got) for want, got in zip(shape, array.shape, strict=True)
        )
        if array.dtype.kind not in kinds or not fits:
            want = "x".join("N" if s is None else str(s) for s in shape)
            raise InvalidParametersError(
                f"{family}: array {name!r} in {path} is {array.dtype}{list(array.shape)}; "
                f"expected shape {want}"
            )
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise InvalidParametersError(f"{family}: arrays in {path} differ in length: {lengths}")
    if not next(iter(lengths.values())):
        raise InvalidParametersError(f"{family}: {path} holds no samples (an empty shard)")
    return arrays


@dataclass(frozen=True)
class SplitIndices:
    train: np.ndarray
    vote: np.ndarray
    test: np.ndarray


def split_indices(
    n_samples: int, train_ratio: float, vote_ratio: float, seed: int, family: str
) -> SplitIndices:
    """Seeded, disjoint train/vote/test index sets; each must hold at least one sample."""
    if train_ratio + vote_ratio >= 1:
        raise InvalidParametersError("train_ratio + vote_ratio must leave some data for the test split (< 1)")
    order = np.random.default_rng(seed).permutation(n_samples)
    n_train, n_vote = int(n_samples * train_ratio), int(n_samples * vote_ratio)
    if min(n_train, n_vote, n_samples - n_train - n_vote) < 1:
        raise InvalidParametersError(
            f"{family}: {n_samples} samples are too few for train, vote and test splits"
        )
    return SplitIndices(order[:n_train], order[n_train : n_train + n_vote], order[n_train + n_vote :])


def fixed_subset(indices: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded subset of at most ``size`` indices, chosen once, so a score never depends on the call."""
    if size >= len(indices):
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, size=size, replace=False))


def scored_subsets(split: SplitIndices, size: int, seed: int) -> dict[str, np.ndarray]:
    """What a learner scores weights on: fixed, seeded subsets of at most ``size`` vote and test indices."""
    return {"vote": fixed_subset(split.vote, size, seed), "test": fixed_subset(split.test, size, seed + 1)}
