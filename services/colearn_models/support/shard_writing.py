"""Writing per-learner shards: a seeded permutation cut into N near-equal, disjoint parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from colearn_learner.data_tools import DataToolError
from colearn_models.support.shard_files import SHARD_FILE


def learner_folder(out: Path, index: int) -> Path:
    return out / f"learner_{index}"


def shard_order(n_samples: int, n_learners: int, seed: int) -> list[np.ndarray]:
    """Disjoint index sets covering every sample once; refuses more learners than samples."""
    if n_learners > n_samples:
        raise DataToolError(f"cannot split {n_samples} samples across {n_learners} learners")
    order = np.random.default_rng(seed).permutation(n_samples)
    return np.array_split(order, n_learners)


def write_npz_shards(arrays: dict[str, np.ndarray], n_learners: int, out: Path, seed: int) -> list[Path]:
    """Writes ``learner_i/data.npz`` (uncompressed, no pickled objects) for each shard of ``arrays``."""
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise DataToolError(f"arrays differ in length: { {k: len(a) for k, a in arrays.items()} }")
    folders = []
    for i, idx in enumerate(shard_order(lengths.pop(), n_learners, seed)):
        folder = learner_folder(out, i)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / SHARD_FILE, **{name: np.ascontiguousarray(a[idx]) for name, a in arrays.items()})
        folders.append(folder)
    return folders


def require_files(source: Path, names: list[str], tag: str) -> dict[str, Path]:
    """The named files under ``source``, or one line naming every one that is missing."""
    if not source.is_dir():
        raise DataToolError(f"{tag}: --source {source} is not a folder; it must hold {', '.join(names)}")
    missing = [n for n in names if not (source / n).is_file()]
    if missing:
        raise DataToolError(f"{tag}: {source} lacks {', '.join(missing)}; it must hold {', '.join(names)}")
    return {n: source / n for n in names}
