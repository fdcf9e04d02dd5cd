"""KERAS_CIFAR10 data: the CIFAR-10 *binary* batches into per-learner shards (never the pickled batches).

``--source`` is the ``cifar-10-batches-bin`` folder (or the folder holding it) with ``data_batch_1.bin`` to
``data_batch_5.bin`` and optionally ``test_batch.bin``. Each file is a run of 3,073-byte records: one
label byte (0-9), then the 32x32 image as 1,024 red, 1,024 green and 1,024 blue bytes, row by row. The
split pools every batch present (each learner splits its own shard into train, vote and test) and writes
``learner_i/data.npz`` with ``images`` (uint8 N x 32 x 32 x 3, as in the original: a quarter of float32's
size; the dataloader scales it to [0, 1]) and ``labels`` (int64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from colearn_learner.data_tools import DataTool, DataToolError
from colearn_models.keras_cifar10.models import registry
from colearn_models.support.shard_writing import write_npz_shards

TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST = "test_batch.bin"
SUBFOLDER = "cifar-10-batches-bin"
SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE
N_CLASSES = 10


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels N uint8) of one binary batch file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataToolError(f"cannot read {path}: {exc}") from None
    if not raw or len(raw) % RECORD:
        raise DataToolError(
            f"{path} holds {len(raw)} bytes: not a whole number of {RECORD}-byte CIFAR-10 records"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].copy()
    if labels.max() >= N_CLASSES:
        raise DataToolError(f"{path} holds label {labels.max()}; CIFAR-10 labels are 0-{N_CLASSES - 1}")
    # Channel planes (R, G, B) to the channels-last layout Keras uses.
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    planes = np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    path.write_bytes(np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tobytes())
    return path


def batch_folder(source: Path) -> Path:
    """``source`` itself, or its ``cifar-10-batches-bin`` folder (where the archive unpacks to)."""
    wanted = ", ".join(TRAIN)
    if not source.is_dir():
        raise DataToolError(f"KERAS_CIFAR10: --source {source} is not a folder; it must hold {wanted}")
    if not (source / TRAIN[0]).exists() and (source / SUBFOLDER).is_dir():
        source = source / SUBFOLDER
    missing = [name for name in TRAIN if not (source / name).is_file()]
    if missing:
        pickled = (
            " (found the pickled python batches: use the binary version)"
            if (source / "data_batch_1").exists()
            else ""
        )
        raise DataToolError(
            f"KERAS_CIFAR10: {source} lacks {', '.join(missing)}{pickled}; it must hold {wanted} "
            f"({TEST} optional)"
        )
    return source


def read_source(source: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = batch_folder(source)
    names = [*TRAIN, TEST] if (folder / TEST).is_file() else list(TRAIN)
    batches = [read_batch(folder / name) for name in names]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def split(source: Path, n_learners: int, out: Path, seed: int) -> list[Path]:
    images, labels = read_source(source)
    return write_npz_shards({"images": images, "labels": labels.astype(np.int64)}, n_learners, out, seed)


PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.int16,
)  # fmt: skip


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable, class-dependent images: a 12x12 square in the class's colour, at a random place, over
    grey noise."""
    images = rng.integers(40, 120, size=(len(labels), SIDE, SIDE, 3), dtype=np.int16)
    for i, label in enumerate(labels):
        row, col = rng.integers(0, SIDE - 12, size=2)
        jitter = rng.integers(-20, 21, size=3)
        images[i, row : row + 12, col : col + 12] = PALETTE[label] + jitter
    return np.clip(images, 0, 255).astype(np.uint8)


def fixtures(out: Path, seed: int, per_batch: int = 60) -> Path:
    """Writes the five data batches and the test batch, ``per_batch`` records each; returns the folder."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in (*TRAIN, TEST):
        labels = (np.arange(per_batch) % N_CLASSES).astype(np.uint8)
        rng.shuffle(labels)
        write_batch(out / name, synthetic_images(labels, rng), labels)
    return out


registry.register_data_tool(
    DataTool(
        tag="KERAS_CIFAR10",
        source=f"binary batches {TRAIN[0]} ... {TRAIN[-1]} (+ optional {TEST}), or the {SUBFOLDER} folder",
        split=split,
        fixtures=fixtures,
    )
)
