"""Weights as bytes: the safetensors layout, never pickle.

A buffer is a JSON header (names, dtypes, shapes) followed by raw little-endian tensors, written and
checked by the ``safetensors`` library. Loading such a buffer can only ever produce numeric arrays, so a
hostile peer cannot make the receiver run code.

safetensors sorts tensors by dtype and name, so the original order of the names is kept in the header's
metadata, together with a ``structure`` tag that the learner's weight adapters use to give a user's model
back the container it handed over (one array, a list, a tuple, a dict or a torch ``state_dict``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import safetensors
import safetensors.numpy

ENCODING = "safetensors"
_LAYOUT_KEY = "colearn.layout"


class WeightsCodecError(ValueError):
    """The bytes are not a weights buffer that this codec wrote, or the arrays cannot be encoded."""


@dataclass(frozen=True)
class TensorLayout:
    """What a flat ``{name: array}`` mapping needs to become the caller's structure again."""

    structure: str
    names: tuple[str, ...]
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"structure": self.structure, "names": list(self.names), "extra": dict(self.extra)})

    @classmethod
    def from_json(cls, text: str) -> TensorLayout:
        try:
            raw = json.loads(text)
            names = tuple(str(n) for n in raw["names"])
            extra = {str(k): str(v) for k, v in raw.get("extra", {}).items()}
            return cls(structure=str(raw["structure"]), names=names, extra=extra)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsCodecError(f"weights buffer has an unreadable layout: {exc}") from exc


def encode_tensors(tensors: Mapping[str, np.ndarray], layout: TensorLayout) -> bytes:
    """Serialises named arrays; the layout's names must be exactly the mapping's keys."""
    if list(layout.names) != list(tensors.keys()):
        raise WeightsCodecError("layout names must list the tensors in their order")
    # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them shape (1,)).
    arrays = {name: np.require(array, requirements="C") for name, array in tensors.items()}
    try:
        return safetensors.numpy.save(arrays, metadata={_LAYOUT_KEY: layout.to_json()})
    except (safetensors.SafetensorError, ValueError, TypeError, KeyError) as exc:
        raise WeightsCodecError(f"cannot encode weights: {exc}") from exc


def decode_tensors(buffer: bytes | memoryview) -> tuple[dict[str, np.ndarray], TensorLayout]:
    """Reads a buffer back into named arrays, in the order they were encoded."""
    try:
        loaded = safetensors.numpy.load(bytes(buffer))  # the library reads bytes only
    except (safetensors.SafetensorError, ValueError, TypeError, KeyError) as exc:
        raise WeightsCodecError(f"not a safetensors weights buffer: {exc}") from exc
    layout = TensorLayout.from_json(_read_metadata(buffer).get(_LAYOUT_KEY, "null"))
    if sorted(layout.names) != sorted(loaded.keys()) or len(set(layout.names)) != len(layout.names):
        raise WeightsCodecError("weights buffer layout does not match its tensors")
    return {name: loaded[name] for name in layout.names}, layout


def _read_metadata(buffer: bytes | memoryview) -> dict[str, str]:
    # safetensors' Python API reads metadata only from files; the header format is documented as an
    # 8-byte little-endian length followed by that many bytes of JSON. load() has already validated it.
    (header_len,) = struct.unpack_from("<Q", buffer, 0)
    header = json.loads(bytes(buffer[8 : 8 + header_len]))
    return header.get("__metadata__") or {}


def sha256_hex(buffer: bytes | memoryview) -> str:
    return hashlib.sha256(buffer).hexdigest()
