"""KERAS_MNIST data: MNIST's IDX files (Fashion-MNIST uses the very same format) into per-learner shards.

``--source`` holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``, and optionally the
``t10k-`` pair, each plain or ``.gz`` (as distributed). The split pools train and t10k: every learner
splits its own shard into train, vote and test parts, so the official test set is simply more data. Each
``learner_i/data.npz`` holds ``images`` (float32 N x 28 x 28 x 1 in [0, 1]) and ``labels`` (int64).

IDX: a big-endian header (two zero bytes, a type code, the number of dimensions, then each dimension as a
uint32) followed by the values. MNIST uses unsigned bytes (type 0x08).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from colearn_learner.data_tools import DataTool, DataToolError
from colearn_models.keras_mnist.models import registry
from colearn_models.support.shard_writing import write_npz_shards

TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SIDE = 28
N_CLASSES = 10

#: IDX type codes and their numpy dtypes (big-endian, as the format stores them).
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08}


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file (plain or gzip) holds; a malformed file is a one-line DataToolError."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip's magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataToolError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataToolError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataToolError(f"{path}: the IDX header is cut short")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataToolError(
            f"{path}: the header says shape {list(shape)} ({expected} bytes), the file holds {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Writes an unsigned-byte IDX file, gzip-compressed when the name ends in ``.gz``."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _CODES:
        raise ValueError(f"IDX files here hold uint8 arrays, not {array.dtype}")
    raw = struct.pack(f">BBBB{array.ndim}I", 0, 0, _CODES[array.dtype], array.ndim, *array.shape)
    raw += array.tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)
    return path


def find_idx(source: Path, stem: str) -> Path | None:
    """The file for ``stem``, plain or gzip; also under the dotted name some mirrors use
    (``train-images.idx3-ubyte``)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (source / name).is_file():
            return source / name
    return None


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or images.dtype != np.uint8:
        raise DataToolError(
            f"{images_path} holds {images.dtype}{list(images.shape)}; expected uint8 N x 28 x 28"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataToolError(f"{labels_path} holds {labels.dtype}{list(labels.shape)}; expected uint8 N")
    if len(images) != len(labels):
        raise DataToolError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if len(labels) and labels.max() >= N_CLASSES:
        raise DataToolError(f"{labels_path} holds label {labels.max()}; expected classes 0-{N_CLASSES - 1}")
    return images, labels


def read_source(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every image and label under ``source``: the train pair, plus the t10k pair when present."""
    wanted = " and ".join(f"{stem}[.gz]" for stem in TRAIN)
    if not source.is_dir():
        raise DataToolError(f"KERAS_MNIST: --source {source} is not a folder; it must hold {wanted}")
    train = [find_idx(source, stem) for stem in TRAIN]
    if None in train:
        missing = ", ".join(f"{stem}[.gz]" for stem, p in zip(TRAIN, train, strict=True) if p is None)
        raise DataToolError(f"KERAS_MNIST: {source} lacks {missing}; it must hold {wanted} (t10k-* optional)")
    pairs = [read_pair(*train)]
    test = [find_idx(source, stem) for stem in TEST]
    if test.count(None) == 1:
        raise DataToolError(
            f"KERAS_MNIST: {source} holds only one of {' and '.join(TEST)}; give both or neither"
        )
    if None not in test:
        pairs.append(read_pair(*test))
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def split(source: Path, n_learners: int, out: Path, seed: int) -> list[Path]:
    images, labels = read_source(source)
    scaled = images[..., None].astype(np.float32) / np.float32(255)
    return write_npz_shards({"images": scaled, "labels": labels.astype(np.int64)}, n_learners, out, seed)


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable, class-dependent images: a bright 6x6 block whose place depends on the class, jittered by
    a pixel or two, over uniform noise."""
    images = rng.integers(0, 60, size=(len(labels), SIDE, SIDE), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 3 + (label // 5) * 13 + rng.integers(-1, 2)
        col = 1 + (label % 5) * 5 + rng.integers(-1, 2)
        images[i, max(row, 0) : row + 6, max(col, 0) : col + 6] = rng.integers(180, 256, dtype=np.uint8)
    return images


def fixtures(out: Path, seed: int, n_train: int = 600, n_test: int = 100) -> Path:
    """Writes the four files, gzip-compressed as MNIST distributes them; returns the folder."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for (images_name, labels_name), n in ((TRAIN, n_train), (TEST, n_test)):
        labels = (np.arange(n) % N_CLASSES).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(out / f"{images_name}.gz", synthetic_images(labels, rng))
        write_idx(out / f"{labels_name}.gz", labels)
    return out


registry.register_data_tool(
    DataTool(
        tag="KERAS_MNIST",
        source=f"{TRAIN[0]}, {TRAIN[1]} (+ optional {TEST[0]}, {TEST[1]}), plain or .gz",
        split=split,
        fixtures=fixtures,
    )
)
