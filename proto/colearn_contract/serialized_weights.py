"""Weights as the bytes that travel, readable as arrays when someone wants to look.

The backend never needs the arrays: it relays the bytes. A user of the backend's Python API does want
them: to see what a learner holds, to compare two learners, to keep the trained model. Both classes of
encoded weights (``EncodedWeights``, one buffer; ``RelayedWeights``, the parts as they came off the
wire) are therefore also a read-only mapping of tensor name to numpy array. Nothing is decoded until a
tensor is asked for; then the buffer is read once, in place (a relayed stream is joined first), and the
arrays are views of it.

Two weights are equal when their sha256 digests are: the digest covers every byte of the encoding.
``save`` writes them as a plain safetensors file of the model's own tensor names, which
``safetensors.numpy.load_file`` and ``safetensors.torch.load_file`` read.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Self

import numpy as np

from colearn_contract import safetensors_layout
from colearn_contract.atomic_files import write_atomically
from colearn_contract.mli import Weights
from colearn_contract.weights_codec import LAYOUT_KEY, TensorLayout, bfloat16_names, decode_tensors

#: Metadata key of a saved file that holds the sha256 of the weights as they travelled.
WEIGHTS_SHA256_KEY = "colearn.weights_sha256"


class SerializedWeights(Mapping[str, np.ndarray], abc.ABC):
    """Encoded weights: a digest, a size and a proposal id, and the tensors on demand."""

    #: The sha256 of the encoded buffer, 64 lowercase hex digits.
    sha256: str
    #: The proposal these weights are, or "" for plain weights.
    proposal_id: str

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """The encoded buffer's size in bytes."""

    @abc.abstractmethod
    def renamed(self, proposal_id: str) -> Self:
        """The same weights under another proposal id ("" sends them as plain weights, not a proposal)."""

    @abc.abstractmethod
    def buffer(self) -> bytes | memoryview:
        """The whole encoded buffer."""

    @abc.abstractmethod
    def serialized_parts(self, part_bytes: int) -> Iterator[bytes]:
        """The weights messages to send, serialized (any of the four weights messages: they share one
        shape): parts that came off the wire are sent as they came, a buffer is cut into ``part_bytes``."""

    @functools.cached_property
    def _decoded(self) -> tuple[dict[str, np.ndarray], TensorLayout]:
        tensors, layout = decode_tensors(self.buffer())
        for name in bfloat16_names(tensors, layout):
            # numpy has no bfloat16: its 16 bits are the top half of a float32, so widening is exact.
            bits = tensors[name].view(np.uint16).astype(np.uint32) << 16
            tensors[name] = bits.view(np.float32)
            tensors[name].flags.writeable = False
        return tensors, layout

    @property
    def layout(self) -> TensorLayout:
        """The structure the weights came in (a dict, a list, one array, a torch ``state_dict``)."""
        return self._decoded[1]

    def __getitem__(self, name: str) -> np.ndarray:
        """A read-only array (a view of the buffer; bfloat16 tensors are widened to float32)."""
        return self._decoded[0][name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded[0])

    def __len__(self) -> int:
        return len(self._decoded[0])

    def __bool__(self) -> bool:
        return True  # never decode just to answer "are there weights?"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SerializedWeights):
            return self.sha256 == other.sha256
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.sha256)

    def save(self, path: Path, metadata: Mapping[str, str] | None = None) -> Path:
        """Writes the weights to ``path`` as a plain safetensors file, atomically.

        The tensors keep their names and bytes (bfloat16 ones their dtype); the file's metadata holds the
        layout, the weights' sha256 and ``metadata``."""
        return write_atomically(Path(path), self.file_chunks(metadata))

    def file_chunks(
        self, metadata: Mapping[str, str] | None = None, buffer: bytes | memoryview | None = None
    ) -> tuple[bytes, memoryview]:
        """What ``save`` writes: the new header, then the data section of the buffer (a view, no copy).
        ``buffer`` spares joining a relayed stream again when the caller has it."""
        buffer = self.buffer() if buffer is None else buffer
        tensors, layout = decode_tensors(buffer)
        relabel = {name: "BF16" for name in bfloat16_names(tensors, layout)}
        meta = {LAYOUT_KEY: layout.to_json(), WEIGHTS_SHA256_KEY: self.sha256, **(metadata or {})}
        return safetensors_layout.relabelled(buffer, meta, relabel)


def serialized(weights: Weights[object]) -> SerializedWeights:
    """The encoded weights that ``weights`` holds, or ``TypeError``: a party that relays weights (the
    backend) takes them from another learner, never a model's own objects."""
    if not isinstance(weights.weights, SerializedWeights):
        raise TypeError(
            "weights to relay must be encoded weights received from a learner, "
            f"not {type(weights.weights).__name__}"
        )
    return weights.weights
