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

    def serialized_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
        return wire_parts(self, part_bytes)


def iter_parts(
    weights: SerializedWeights,
    part_bytes: int = DEFAULT_PART_BYTES,
    *,
    message: type[WeightsMessage] | None = None,
) -> Iterator[Any]:
    """Yields the buffer's parts; an empty buffer still yields one part, which carries the header. With
    ``message`` each part comes in one of those (built in it, never copied into it), else bare."""
    for head, chunk in _cut(weights, part_bytes):
        holder = pb.WeightsPart() if message is None else message()
        part = holder if message is None else holder.part
        part.MergeFrom(head)
        part.data = bytes(chunk)  # protobuf needs bytes: each part is copied once, part by part
        yield holder


def wire_parts(weights: SerializedWeights, part_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
    """The parts as serialized weights messages (the four share one shape): byte for byte what
    ``iter_parts(..., message=...)`` and ``SerializeToString`` give, written with one copy of the data
    where those take three (the part's ``bytes``, protobuf's own, the serialized message; BENCHMARKS.md,
    issue 16). A message's wire form is its fields in number order, and ``data`` (field 4) is the last
    of a ``WeightsPart``: so the part without its data is serialized by protobuf, and the data's tag,
    length and bytes follow it (proto3 writes no empty ``data``)."""
    for head, chunk in _cut(weights, part_bytes):
        fields = head.SerializeToString()
        data_field = (_DATA_TAG, _varint(len(chunk)), chunk) if len(chunk) else ()
        size = len(fields) + sum(len(piece) for piece in data_field)
        yield b"".join((_PART_TAG, _varint(size), fields, *data_field))


#: The tags of field 1 of a weights message (``part``) and field 4 of a ``WeightsPart`` (``data``), both
#: length-delimited (wire type 2).
_PART_TAG = bytes([1 << 3 | 2])
_DATA_TAG = bytes([4 << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _cut(weights: SerializedWeights, part_bytes: int) -> Iterator[tuple[pb.WeightsPart, memoryview]]:
    """Each part's fields but its data (the header in the first), with its data as a view of the buffer."""
    if not MIN_PART_BYTES <= part_bytes <= MAX_PART_BYTES:
        raise ValueError(f"part_bytes must be between {MIN_PART_BYTES} and {MAX_PART_BYTES}")
    view = memoryview(weights.buffer()).cast("B")  # slices of a memoryview cost nothing
    total = len(view)
    offset = 0
    while True:
        chunk = view[offset : offset + part_bytes]
        head = pb.WeightsPart(offset=offset, total_bytes=total)
        if offset == 0:
            header = head.header
            header.proposal_id, header.sha256 = weights.proposal_id, weights.sha256
            header.encoding = _ENCODING
        yield head, chunk
        offset += len(chunk)
        if offset >= total:
            return


class PartsAssembler:
    """The framing every stream of parts shares (weights, model files): a header in the first message
    only, every message's ``offset`` and ``total_bytes``, a size cap, and a sha256 over the data. Parts are
    checked as they arrive and hashed on the way, so a bad stream fails at its first bad part. A subclass
    checks its own header (``_check_header``) and names its error (``error``).

    With ``join=False`` it only checks: the caller keeps the parts (a relay), and ``verified_header``
    ends the stream instead of joining it."""

    error: type[ValueError] = ValueError
    what = "part"

    def __init__(self, max_total_bytes: int, *, join: bool = True) -> None:
        self._max_total_bytes = max_total_bytes
        self._join = join
        self._header: Any = None
        self._total = 0
        self._received = 0
        self._buffer = memoryview(b"")
        self._hasher = hashlib.sha256()

    def _check_header(self, header: Any) -> None:
        """Raises ``self.error`` for a header this stream cannot take (its sha256 is checked here)."""

    def add(self, part: Any) -> None:
        data = part.data  # each read of a bytes field copies it: read it once
        if self._header is None:
            self._start(part)
        elif part.HasField("header"):
            raise self.error(f"only the first {self.what} may carry a header")
        if part.total_bytes != self._total:
            raise self.error(f"total_bytes changed mid-stream: {part.total_bytes} after {self._total}")
        if part.offset != self._received:
            raise self.error(
                f"{self.what}s are not contiguous: expected offset {self._received}, got {part.offset}"
            )
        if self._received + len(data) > self._total:
            raise self.error(
                f"{self.what} at offset {part.offset} with {len(data)} bytes runs past total_bytes "
                f"{self._total}"
            )
        if self._join:
            self._buffer[self._received : self._received + len(data)] = data
        self._received += len(data)
        self._hasher.update(data)

    def _start(self, part: Any) -> None:
        if not part.HasField("header"):
            raise self.error(f"the first {self.what} must carry a header")
        self._check_header(part.header)
        if not _SHA256_HEX.fullmatch(part.header.sha256):
            raise self.error("header sha256 must be 64 lowercase hex digits")
        if part.total_bytes > self._max_total_bytes:
            raise self.error(f"total_bytes {part.total_bytes} exceeds the limit of {self._max_total_bytes}")
        self._header = part.header
        self._total = part.total_bytes
        # One buffer for the whole stream, written part by part. np.empty leaves its pages untouched, so a
        # declared size costs memory only as data arrives, and numpy asks the kernel for huge pages: far
        # fewer page faults than joining the parts at the end (BENCHMARKS.md, "Code figures").
        if self._join:
            self._buffer = memoryview(np.empty(self._total, dtype=np.uint8))

    @property
    def total_bytes(self) -> int:
        return self._total

    @property
    def received(self) -> int:
        """Bytes received so far: ``total_bytes`` once the last part is in."""
        return self._received

    def verified_header(self) -> Any:
        """Ends the stream: it must be complete, and its data must match the header's sha256."""
        if self._header is None:
            raise self.error("the stream was empty")
        if self._received != self._total:
            raise self._truncated(f"the stream ended after {self._received} of {self._total} bytes")
        digest = self._hasher.hexdigest()
        if digest != self._header.sha256:
            raise self.error(f"sha256 mismatch: header says {self._header.sha256}, data is {digest}")
        return self._header

    def _truncated(self, message: str) -> ValueError:
        return self.error(message)

    def joined(self) -> memoryview:
        """The whole data, once ``verified_header`` has passed; read-only, since its digest is known."""
        if not self._join:
            raise RuntimeError(f"a {type(self).__name__} made with join=False keeps no data")
        self.verified_header()
        return self._buffer.toreadonly()


class WeightsAssembler(PartsAssembler):
    """The parts of a weights stream (``WeightsPart``)."""

    error = WeightsStreamError

    def _check_header(self, header: pb.WeightsHeader) -> None:
        if header.encoding != _ENCODING:
            raise WeightsStreamError(
                f"unknown encoding {header.encoding}; valid: {pb.WeightsEncoding.Name(_ENCODING)}"
            )

    def _truncated(self, message: str) -> ValueError:
        return TruncatedStreamError(message)

    def finish(self) -> EncodedWeights:
        data = self.joined()
        header = self._header
        return EncodedWeights(data=data, sha256=header.sha256, proposal_id=header.proposal_id)


def assemble(parts: Iterable[pb.WeightsPart], max_total_bytes: int) -> EncodedWeights:
    assembler = WeightsAssembler(max_total_bytes)
    for part in parts:
        assembler.add(part)
    return assembler.finish()
