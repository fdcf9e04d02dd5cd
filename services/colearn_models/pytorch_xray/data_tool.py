"""PYTORCH_XRAY data: chest-xray-pneumonia JPEG folders, split into one such folder per learner.

``--source`` is either the plain layout (``NORMAL/`` and ``PNEUMONIA/`` of JPEGs) or Kaggle's
(``train/``, ``test/``, ``val/``, each holding ``NORMAL/`` and ``PNEUMONIA/``); Kaggle's parts are pooled,
since every learner makes its own train, vote and test splits. Each class is shuffled with the seed and
dealt out in near-equal parts, so every learner gets both classes in the source's proportions, and no
image goes to two learners. Images are hard-linked when the output is on the same file system (no copy of
a 1 GB dataset), and copied otherwise. Pooled files get their part as a name prefix, because Kaggle's
parts reuse file names.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from colearn_learner.data_tools import DataTool, DataToolError
from colearn_models.pytorch_xray.models import registry
from colearn_models.support.shard_writing import learner_folder, shard_order
from colearn_models.support.xray_images import CLASSES, jpeg_files

TAG = "PYTORCH_XRAY"
KAGGLE_PARTS = ("train", "test", "val")
SOURCE = "NORMAL/ and PNEUMONIA/ folders of JPEGs, or Kaggle's train/, test/, val/ each holding them"


def source_images(source: Path) -> dict[str, list[tuple[str, Path]]]:
    """Per class, (name in a learner's folder, file) for every JPEG of the source, in a fixed order."""
    if not source.is_dir():
        raise DataToolError(f"{TAG}: --source {source} is not a folder; it must hold {SOURCE}")
    if all((source / name).is_dir() for name in CLASSES):
        parts = [("", source)]
    else:
        parts = [(f"{p}_", source / p) for p in KAGGLE_PARTS if (source / p).is_dir()]
        if not parts or not all((folder / name).is_dir() for _, folder in parts for name in CLASSES):
            raise DataToolError(f"{TAG}: {source} does not hold {SOURCE}")
    images: dict[str, list[tuple[str, Path]]] = {}
    for name in CLASSES:
        images[name] = [(prefix + f.name, f) for prefix, folder in parts for f in jpeg_files(folder / name)]
        if not images[name]:
            raise DataToolError(f"{TAG}: {source} holds no {name} JPEGs (.jpeg or .jpg)")
    return images


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


def split(source: Path, n_learners: int, out: Path, seed: int) -> list[Path]:
    images = source_images(source)
    for name, files in images.items():
        if len(files) < n_learners:
            raise DataToolError(
                f"{TAG}: {source} holds {len(files)} {name} JPEGs, too few for {n_learners} learners "
                "(every learner needs images of both classes)"
            )
    folders = [learner_folder(out, i) for i in range(n_learners)]
    for folder in folders:
        if folder.exists():
            raise DataToolError(f"{TAG}: {folder} already exists; split into an empty --out folder")
    # Each class is dealt with its own seed, so adding images of one class leaves the other's deal alone.
    # The larger parts of an uneven deal go to the first learners for NORMAL and to the last ones for
    # PNEUMONIA, so that the learners' totals differ by one image at most.
    deals = {}
    for label, (name, files) in enumerate(images.items()):
        parts = shard_order(len(files), n_learners, seed + label)
        deals[name] = parts if label % 2 == 0 else parts[::-1]
    for i, folder in enumerate(folders):
        for name, files in images.items():
            (folder / name).mkdir(parents=True)
            for k in deals[name][i]:
                target, original = files[int(k)]
                _link_or_copy(original, folder / name / target)
    return folders


def fixtures(out: Path, seed: int, per_class: int = 30) -> Path:
    """Small synthetic X-rays in the plain layout: NORMAL images are a smooth vertical gradient,
    PNEUMONIA ones add bright blobs, both under noise, so a CNN can tell them apart in a few steps. Sizes
    vary around 150 x 120 (the loader must resize), and a few are RGB (some real ones are)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            height, width = int(rng.integers(110, 170)), int(rng.integers(100, 150))
            yy, xx = np.mgrid[0:height, 0:width]
            pixels = 60 + 100 * yy / height + rng.normal(0, 12, (height, width))
            if label == 1:
                for _ in range(3):
                    cy, cx = rng.integers(0, height), rng.integers(0, width)
                    radius = rng.uniform(8, 20)
                    pixels += 90 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))  # 2-D uint8: greyscale
            if k % 10 == 0:
                image = image.convert("RGB")
            image.save(folder / f"{name.lower()}-{k:04d}.jpeg", quality=90)
    return out


registry.register_data_tool(DataTool(TAG, SOURCE, split, fixtures))
