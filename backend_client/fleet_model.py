"""The fleet's accepted weights in a run directory: a model file for users, and the resume's source.

``model.safetensors`` is a plain safetensors file of the model's own tensor names (``SerializedWeights.save``)
with metadata naming the model, the parameters, the round and the weights' sha256. It also keeps the
header the weights travelled with, so that the exact bytes the learners hold (and their digest) can be
rebuilt from the file: a resumed backend pushes them to learners that lag, even when no live learner
holds them. Writing is atomic, so the file always holds one complete set of accepted weights.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from pathlib import Path

from colearn_contract import atomic_files, json_limits
from colearn_contract.serialized_weights import WEIGHTS_SHA256_KEY, SerializedWeights
from colearn_contract.weight_stream import EncodedWeights

#: The header of the weights as they travel, base64: with the file's data it gives back the exact bytes.
WIRE_HEADER_KEY = "colearn.wire_header"


class FleetModelError(ValueError):
    """A model file that does not hold the weights it names."""


def write(path: Path, weights: SerializedWeights, metadata: Mapping[str, str]) -> Path:
    return commit(stage(path, weights, metadata), path)


def stage(path: Path, weights: SerializedWeights, metadata: Mapping[str, str]) -> Path:
    """Writes the model file for ``path`` to a temp file beside it (fsync'd); ``commit`` puts it in place.
    A run stages each proposal while the voters test it, and commits only an accepted one."""
    buffer = memoryview(weights.buffer()).cast("B")
    (head_len,) = struct.unpack_from("<Q", buffer, 0)
    wire_header = base64.b64encode(bytes(buffer[8 : 8 + head_len])).decode()
    chunks = weights.file_chunks({**metadata, WIRE_HEADER_KEY: wire_header}, buffer)
    return atomic_files.stage(path, chunks)


def commit(staged: Path, path: Path) -> Path:
    return atomic_files.commit(staged, path)


def read(path: Path) -> tuple[EncodedWeights, dict[str, str]]:
    """The exact weights the file was written from (checked against their sha256), and its metadata."""
    try:
        data = memoryview(Path(path).read_bytes())
        (head_len,) = struct.unpack_from("<Q", data, 0)
        header = json_limits.loads(bytes(data[8 : 8 + head_len]).decode("utf-8"), f"the header of {path}")
        metadata = header["__metadata__"]
        wire_header = base64.b64decode(metadata[WIRE_HEADER_KEY], validate=True)
        sha256 = metadata[WEIGHTS_SHA256_KEY]
    except (OSError, struct.error, ValueError, KeyError, TypeError) as exc:
        raise FleetModelError(f"{path} is no model file of a run: {json_limits.shown(str(exc))}") from None
    exact = EncodedWeights.wrap(struct.pack("<Q", len(wire_header)) + wire_header + data[8 + head_len :])
    if exact.sha256 != sha256:
        raise FleetModelError(f"{path} does not hold the weights it names ({sha256[:12]}): damaged")
    return exact, {str(k): str(v) for k, v in metadata.items() if k != WIRE_HEADER_KEY}
