"""Weights on the wire: one buffer cut into parts, and the checks that put it back together.

A stream is a sequence of ``WeightsPart`` messages. The first carries a ``WeightsHeader`` (proposal id,
encoding, sha256); every part carries its ``offset`` and the buffer's ``total_bytes``. The receiver refuses
anything that is not contiguous, complete, within its size cap and equal to the declared sha256, so a
broken or hostile stream never reaches a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from colearn_contract.serialized_weights import SerializedWeights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weights_codec import sha256_hex

MIB = 1024 * 1024
MIN_PART_BYTES = 1 * MIB
MAX_PART_BYTES = 4 * MIB
DEFAULT_PART_BYTES = 2 * MIB
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ENCODING = pb.WEIGHTS_ENCODING_SAFETENSORS

#: The messages of the four weights streams: each holds one ``WeightsPart`` in field 1.
WeightsMessage = TypeVar(
    "WeightsMessage",
    pb.ProposeWeightsResponse,
    pb.TestWeightsRequest,
    pb.SetWeightsRequest,
    pb.GetCurrentWeightsResponse,
)


class WeightsStreamError(ValueError):
    """A weights stream broke the framing rules; the message says which rule."""


class TruncatedStreamError(WeightsStreamError):
    """The stream ended before its declared ``total_bytes``: a sender that stopped early, or one that
    cancelled (a receiver may see the end of the stream before it sees the cancellation)."""


@dataclass(frozen=True, eq=False)
class EncodedWeights(SerializedWeights):
    """Weights as one encoded buffer: what a learner sends and keeps. Equal when the digests are
    (``SerializedWeights``)."""

    #: ``bytes``, or a ``memoryview`` of the buffer a stream was received into (no copy was made).
    data: bytes | memoryview
    sha256: str
    proposal_id: str = ""

    @classmethod
    def wrap(cls, data: bytes | memoryview, proposal_id: str = "") -> EncodedWeights:
        return cls(data=data, sha256=sha256_hex(data), proposal_id=proposal_id)

    @property
    def size(self) -> int:
        return len(self.data)

    def renamed(self, proposal_id: str) -> EncodedWeights:
        """The same weights under another proposal id ("" sends them as plain weights, not a proposal)."""
        return dataclasses.replace(self, proposal_id=proposal_id)

    def buffer(self) -> bytes | memoryview:
        return self.data


def iter_parts(
    weights: SerializedWeights,
    part_bytes: int = DEFAULT_PART_BYTES,
    *,
    message: type[WeightsMessage] | None = None,
) -> Iterator[Any]:
    """Yields the buffer's parts; an empty buffer still yields one part, which carries the header. With
    ``message`` each part comes in one of those (built in it, never copied into it), else bare."""
    if not MIN_PART_BYTES <= part_bytes <= MAX_PART_BYTES:
        raise ValueError(f"part_bytes must be between {MIN_PART_BYTES} and {MAX_PART_BYTES}")
    # memoryview slices cost nothing; protobuf needs bytes, so each part is copied once, part by part,
    # rather than the whole buffer at once.
    view = memoryview(weights.buffer())
    total = len(view)
    offset = 0
    while True:
        chunk = bytes(view[offset : offset + part_bytes])
        holder = pb.WeightsPart() if message is None else message()
        part = holder if message is None else holder.part
        part.offset, part.total_bytes, part.data = offset, total, chunk
        if offset == 0:
            header = part.header
            header.proposal_id, header.sha256 = weights.proposal_id, weights.sha256
            header.encoding = _ENCODING
        yield holder
        offset += len(chunk)
        if offset >= total:
            return


class WeightsAssembler:
    """Checks parts as they arrive and hashes them on the way, so a bad stream fails at its first bad part.

    With ``join=False`` it only checks: the caller keeps the parts (a relay), and ``verified_header``
    ends the stream instead of ``finish``."""

    def __init__(self, max_total_bytes: int, *, join: bool = True) -> None:
        self._max_total_bytes = max_total_bytes
        self._join = join
        self._header: pb.WeightsHeader | None = None
        self._total = 0
        self._received = 0
        self._buffer = memoryview(b"")
        self._hasher = hashlib.sha256()

    def add(self, part: pb.WeightsPart) -> None:
        data = part.data  # each read of a bytes field copies it: read it once
        if self._header is None:
            self._start(part)
        elif part.HasField("header"):
            raise WeightsStreamError("only the first part may carry a header")
        if part.total_bytes != self._total:
            raise WeightsStreamError(
                f"total_bytes changed mid-stream: {part.total_bytes} after {self._total}"
            )
        if part.offset != self._received:
            raise WeightsStreamError(
                f"parts are not contiguous: expected offset {self._received}, got {part.offset}"
            )
        if self._received + len(data) > self._total:
            raise WeightsStreamError(
                f"part at offset {part.offset} with {len(data)} bytes runs past total_bytes {self._total}"
            )
        if self._join:
            self._buffer[self._received : self._received + len(data)] = data
        self._received += len(data)
        self._hasher.update(data)

    def _start(self, part: pb.WeightsPart) -> None:
        if not part.HasField("header"):
            raise WeightsStreamError("the first part must carry a header (proposal_id, encoding, sha256)")
        header = part.header
        if header.encoding != _ENCODING:
            raise WeightsStreamError(
                f"unknown encoding {header.encoding}; valid: {pb.WeightsEncoding.Name(_ENCODING)}"
            )
        if not _SHA256_HEX.fullmatch(header.sha256):
            raise WeightsStreamError("header sha256 must be 64 lowercase hex digits")
        if part.total_bytes > self._max_total_bytes:
            raise WeightsStreamError(
                f"total_bytes {part.total_bytes} exceeds this learner's limit of {self._max_total_bytes}"
            )
        self._header = header
        self._total = part.total_bytes
        # One buffer for the whole stream, written part by part. np.empty leaves its pages untouched, so a
        # declared size costs memory only as data arrives, and numpy asks the kernel for huge pages:
        # measured on 100 MiB, 0.09 s and 560 page faults against 0.19 s and 50,000 for chunks + join.
        if self._join:
            self._buffer = memoryview(np.empty(self._total, dtype=np.uint8))

    @property
    def total_bytes(self) -> int:
        return self._total

    def verified_header(self) -> pb.WeightsHeader:
        """Ends the stream: it must be complete, and its data must match the header's sha256."""
        if self._header is None:
            raise WeightsStreamError("the weights stream was empty")
        if self._received != self._total:
            raise TruncatedStreamError(f"the stream ended after {self._received} of {self._total} bytes")
        digest = self._hasher.hexdigest()
        if digest != self._header.sha256:
            raise WeightsStreamError(f"sha256 mismatch: header says {self._header.sha256}, data is {digest}")
        return self._header

    def finish(self) -> EncodedWeights:
        if not self._join:
            raise RuntimeError("a WeightsAssembler made with join=False keeps no data: use verified_header()")
        header = self.verified_header()
        return EncodedWeights(
            data=self._buffer.toreadonly(),  # its digest is known from now on
            sha256=header.sha256,
            proposal_id=header.proposal_id,
        )


def assemble(parts: Iterable[pb.WeightsPart], max_total_bytes: int) -> EncodedWeights:
    assembler = WeightsAssembler(max_total_bytes)
    for part in parts:
        assembler.add(part)
    return assembler.finish()
