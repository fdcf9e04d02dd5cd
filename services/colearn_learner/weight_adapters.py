"""Turns whatever a model calls its weights into named arrays for the codec, and back.

A user's MLI may hand over one numpy array, a list or tuple of arrays, a dict of name -> array, or a torch
``state_dict``; torch tensors may stand wherever an array does. The structure and the tensor type are
recorded in the buffer's layout, so the receiving learner gets back exactly the container it would have
produced itself. torch is imported only when the weights are torch tensors, i.e. when it is loaded anyway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from colearn_contract.json_limits import quoted
from colearn_contract.mli import Weights
from colearn_contract.weights_codec import (
    BFLOAT16_KEY,
    TensorLayout,
    WeightsCodecError,
    bfloat16_names,
    decode_tensors,
    encode_tensors,
)

_SUPPORTED = "a numpy array, a list or tuple of arrays, a dict of name -> array, or a torch state_dict"


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _to_numpy(name: str, value: Any, bfloat16: list[str]) -> np.ndarray:
    if _is_torch_tensor(value):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            import torch

            bfloat16.append(name)  # numpy has no bfloat16: carry the raw 16-bit pattern
            tensor = tensor.view(torch.int16)
        return tensor.numpy()
    if isinstance(value, np.ndarray | np.generic | int | float | bool):
        return np.asarray(value)
    raise WeightsCodecError(f"weight {name!r} is a {type(value).__name__}; weights must be {_SUPPORTED}")


def to_tensors(obj: Any) -> tuple[dict[str, np.ndarray], TensorLayout]:
    if isinstance(obj, Mapping):
        structure, items = "dict", list(obj.items())
        if not all(isinstance(k, str) for k, _ in items):
            raise WeightsCodecError("weight dict keys must be strings")
    elif isinstance(obj, list | tuple):
        structure, items = type(obj).__name__, [(str(i), v) for i, v in enumerate(obj)]
    else:
        structure, items = "array", [("0", obj)]
    torch_values = [_is_torch_tensor(v) for _, v in items]
    if any(torch_values) and not all(torch_values):
        raise WeightsCodecError("weights mix torch tensors and other values")
    bfloat16: list[str] = []
    tensors = {name: _to_numpy(name, value, bfloat16) for name, value in items}
    extra = {"tensor_type": "torch" if items and all(torch_values) else "numpy"}
    if bfloat16:
        extra[BFLOAT16_KEY] = json.dumps(bfloat16)
    return tensors, TensorLayout(structure=structure, names=tuple(tensors), extra=extra)


class WeightsMismatchError(WeightsCodecError):
    """Well-formed weights that do not fit the model they were sent to."""


def _tensor_type(layout: TensorLayout) -> str:
    tensor_type = layout.extra.get("tensor_type", "numpy")
    if tensor_type not in ("numpy", "torch"):
        raise WeightsCodecError(f"unknown tensor_type {quoted(tensor_type)} in the weights layout")
    return tensor_type


def from_tensors(tensors: dict[str, np.ndarray], layout: TensorLayout) -> Any:
    values: dict[str, Any] = tensors
    if _tensor_type(layout) == "torch":
        import torch

        bfloat16 = bfloat16_names(tensors, layout)
        values = {}
        for name, array in tensors.items():
            tensor = torch.from_numpy(np.array(array, copy=not array.flags.writeable))
            values[name] = tensor.view(torch.bfloat16) if name in bfloat16 else tensor
    ordered = [values[name] for name in layout.names]
    if layout.structure == "dict":
        return dict(zip(layout.names, ordered, strict=True))
    if layout.structure == "list":
        return ordered
    if layout.structure == "tuple":
        return tuple(ordered)
    if layout.structure == "array" and len(ordered) == 1:
        return ordered[0]
    raise WeightsCodecError(f"unknown weights structure {quoted(layout.structure)}")


@dataclass(frozen=True)
class WeightsSignature:
    """Names, dtypes and shapes: what weights must match to be handed to the current model."""

    structure: str
    tensor_type: str
    tensors: tuple[tuple[str, str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, tensors: Mapping[str, np.ndarray], layout: TensorLayout) -> WeightsSignature:
        bfloat16 = bfloat16_names(tensors, layout)
        return cls(
            structure=layout.structure,
            tensor_type=_tensor_type(layout),
            tensors=tuple(
                (name, "bfloat16" if name in bfloat16 else a.dtype.name, tuple(a.shape))
                for name, a in tensors.items()
            ),
        )

    @property
    def parameter_count(self) -> int:
        return int(sum(np.prod(shape, dtype=np.int64) for _, _, shape in self.tensors))

    def mismatch(self, other: WeightsSignature) -> str | None:
        """Says how ``other`` differs from this signature, or None when it fits."""
        if (other.structure, other.tensor_type) != (self.structure, self.tensor_type):
            return (
                f"weights are a {other.tensor_type} {quoted(other.structure)}, "
                f"the model needs a {self.tensor_type} {self.structure}"
            )
        if len(other.tensors) != len(self.tensors):
            return f"weights have {len(other.tensors)} tensors, the model needs {len(self.tensors)}"
        for (name, dtype, shape), (want_name, want_dtype, want_shape) in zip(
            other.tensors, self.tensors, strict=True
        ):
            if (name, dtype, shape) != (want_name, want_dtype, want_shape):
                return (
                    f"tensor {quoted(name)} is {dtype}{quoted(list(shape))}, "
                    f"the model needs {want_name!r} as {want_dtype}{list(want_shape)}"
                )
        return None


def encode_weights(weights: Weights) -> tuple[bytes, WeightsSignature]:
    tensors, layout = to_tensors(weights.weights)
    return encode_tensors(tensors, layout), WeightsSignature.of(tensors, layout)


def decode_weights(buffer: bytes | memoryview, expected: WeightsSignature | None = None) -> Weights:
    """Decodes a peer's buffer; with ``expected``, refuses weights that do not fit before building them
    (so that, say, torch is never imported for a peer's sake on a scikit-learn learner)."""
    tensors, layout = decode_tensors(buffer)
    signature = WeightsSignature.of(tensors, layout)
    if expected is not None and (problem := expected.mismatch(signature)):
        raise WeightsMismatchError(problem)
    return Weights(weights=from_tensors(tensors, layout))
