"""Weights as bytes: the safetensors layout, never pickle.

A buffer is a JSON header (names, dtypes, shapes) followed by raw little-endian tensors: the safetensors
layout, written and read in place by ``colearn_contract.safetensors_layout`` (and held to the
``safetensors`` library by the tests). Loading such a buffer can only ever produce numeric arrays, so a
hostile peer cannot make the receiver run code.

The layout sorts tensors by dtype and name, so the original order of the names is kept in the header's
metadata, together with a ``structure`` tag that the learner's weight adapters use to give a user's model
back the container it handed over (one array, a list, a tuple, a dict or a torch ``state_dict``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from colearn_contract import json_limits, safetensors_layout
from colearn_contract.json_limits import shown

LAYOUT_KEY = "colearn.layout"
#: The layout's ``extra`` key that lists tensors of raw bfloat16 bits, as JSON.
BFLOAT16_KEY = "bfloat16"


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
            raw = json_limits.loads(text, "the weights layout")
            names = tuple(str(n) for n in raw["names"])
            extra = {str(k): str(v) for k, v in raw.get("extra", {}).items()}
            return cls(structure=str(raw["structure"]), names=names, extra=extra)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsCodecError(f"weights buffer has an unreadable layout: {shown(str(exc))}") from exc


def encode_tensors(tensors: Mapping[str, np.ndarray], layout: TensorLayout) -> memoryview:
    """Serialises named arrays into one read-only buffer; the layout's names must be exactly the
    mapping's keys."""
    if list(layout.names) != list(tensors.keys()):
        raise WeightsCodecError("layout names must list the tensors in their order")
    try:
        return safetensors_layout.write(tensors, {LAYOUT_KEY: layout.to_json()})
    except (safetensors_layout.LayoutError, ValueError, TypeError) as exc:
        raise WeightsCodecError(f"cannot encode weights: {exc}") from exc


def decode_tensors(buffer: bytes | memoryview) -> tuple[dict[str, np.ndarray], TensorLayout]:
    """Reads a buffer back into named arrays, in the order they were encoded. The arrays are read-only
    views of ``buffer``: no copy is made."""
    try:
        loaded, metadata = safetensors_layout.read(buffer)
    except safetensors_layout.LayoutError as exc:
        raise WeightsCodecError(f"not a safetensors weights buffer: {exc}") from exc
    layout = TensorLayout.from_json(metadata.get(LAYOUT_KEY, "null"))
    if sorted(layout.names) != sorted(loaded.keys()) or len(set(layout.names)) != len(layout.names):
        raise WeightsCodecError("weights buffer layout does not match its tensors")
    return {name: loaded[name] for name in layout.names}, layout


def bfloat16_names(tensors: Mapping[str, np.ndarray], layout: TensorLayout) -> frozenset[str]:
    """The tensors that carry raw bfloat16 bits as ``int16`` (numpy has no bfloat16), from the layout's
    ``bfloat16`` list; checked, since the layout comes from the peer."""
    try:
        names = json_limits.loads(layout.extra.get(BFLOAT16_KEY, "[]"), "the weights layout's bfloat16 list")
    except json_limits.JsonLimitError as exc:
        raise WeightsCodecError(str(exc)) from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n in tensors for n in names):
        raise WeightsCodecError("the weights layout's bfloat16 list must name tensors of the buffer")
    if any(tensors[n].dtype != np.int16 for n in names):
        raise WeightsCodecError("bfloat16 tensors must travel as int16 bit patterns")
    return frozenset(names)


def sha256_hex(buffer: bytes | memoryview) -> str:
    return hashlib.sha256(buffer).hexdigest()
