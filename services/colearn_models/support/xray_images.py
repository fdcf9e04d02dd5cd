"""Chest X-ray image folders, the chest-xray-pneumonia layout: ``NORMAL/`` and ``PNEUMONIA/`` of JPEGs.

Shared by the PYTORCH_XRAY dataloader (which decodes them) and its split tool (which only lists them).
Pillow is imported when images are decoded, never when this module is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from colearn_learner.errors import InvalidParametersError

#: Class folders in label order: NORMAL is 0, PNEUMONIA is 1.
CLASSES = ("NORMAL", "PNEUMONIA")
JPEG_SUFFIXES = (".jpeg", ".jpg")
IMAGE_SIZE = 128


def jpeg_files(folder: Path) -> list[Path]:
    """The JPEGs directly in ``folder``, sorted by name; other files (``.DS_Store``, notes) are ignored."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in JPEG_SUFFIXES)


def decode_xray(path: Path, family: str) -> np.ndarray:
    """One image as uint8 greyscale ``IMAGE_SIZE`` x ``IMAGE_SIZE``; an unreadable file is the client's
    mistake and is named in the error."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # Lets the JPEG decoder scale down by 1/2 to 1/8 while decoding: the original X-rays are
            # 1-2k pixels a side, and this makes loading them several times faster.
            image.draft("L", (IMAGE_SIZE, IMAGE_SIZE))
            grey = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(grey, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidParametersError(f"{family}: {path} is not a readable JPEG image: {exc}") from None


def load_xray_folder(folder: Path, family: str) -> tuple[np.ndarray, np.ndarray]:
    """Every JPEG under ``folder/NORMAL`` and ``folder/PNEUMONIA``: images (uint8 N x 128 x 128) and
    labels (int64 N), in a fixed order (class, then file name) so that seeded splits are reproducible."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    for name in CLASSES:
        if not (folder / name).is_dir():
            raise InvalidParametersError(
                f"{family}: {folder / name} is not a folder; expected {', '.join(CLASSES)} folders of JPEGs"
            )
    for label, name in enumerate(CLASSES):
        files = jpeg_files(folder / name)
        if not files:
            raise InvalidParametersError(
                f"{family}: {folder / name} holds no .jpeg or .jpg files; each learner needs images of "
                f"both classes, {' and '.join(CLASSES)} (an empty shard)"
            )
        images.extend(decode_xray(path, family) for path in files)
        labels.extend([label] * len(files))
    return np.stack(images), np.asarray(labels, dtype=np.int64)
