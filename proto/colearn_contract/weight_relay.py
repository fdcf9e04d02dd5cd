"""Weights that the backend relays: the parts exactly as they came off the wire, sent on unchanged.

The backend never decodes weights to relay them, and it does not need them as one buffer either. It checks
each part as it arrives (framing, size cap and sha256, like every receiver), and keeps the message's
serialized bytes. The four weights streams share one message shape (a ``WeightsPart`` in field 1), so a
``ProposeWeightsResponse`` received from the proposer is, byte for byte, the ``TestWeightsRequest`` each
voter gets. Every learner it sends the weights to gets those same bytes objects: the proposal is held
once, whatever the fleet's size, and no part is cut, copied or serialized again for each learner.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from google.protobuf.message import DecodeError

from colearn_contract.serialized_weights import SerializedWeights
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import (
    DEFAULT_PART_BYTES,
    WeightsAssembler,
    WeightsStreamError,
)

#: Parses any of the four weights messages: they share one shape.
_Message = pb.TestWeightsRequest


class RelayedWeights(SerializedWeights):
    """Encoded weights as serialized weights messages, checked when they were received.

    Immutable: the header fields are read from the first part, so they cannot disagree with what is sent.
    """

    def __init__(self, wire_parts: tuple[bytes, ...], size: int) -> None:
        if not wire_parts:
            raise ValueError("relayed weights need at least the part that carries the header")
        self._wire_parts = wire_parts
        self._header = _Message.FromString(wire_parts[0]).part.header
        self._size = size

    def __repr__(self) -> str:
        return f"RelayedWeights(sha256={self.sha256[:12]}…, size={self.size}, parts={len(self.wire_parts)})"

    @property
    def wire_parts(self) -> tuple[bytes, ...]:
        return self._wire_parts

    def serialized_parts(self, part_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
        """The parts exactly as they came: ``part_bytes`` does not cut them again."""
        return iter(self._wire_parts)

    @property
    def sha256(self) -> str:
        return self._header.sha256

    @property
    def proposal_id(self) -> str:
        return self._header.proposal_id

    @property
    def size(self) -> int:
        return self._size

    @property
    def data(self) -> bytes:
        """The whole encoded buffer, joined: a copy, to read or save the weights. Relaying never needs it."""
        return b"".join(_Message.FromString(part).part.data for part in self._wire_parts)

    def buffer(self) -> bytes:
        return self.data

    def renamed(self, proposal_id: str) -> RelayedWeights:
        """The same weights under another proposal id ("" sends them as plain weights, not a proposal).
        Only the first part, which carries the header, is serialized again."""
        first = _Message.FromString(self._wire_parts[0])
        first.part.header.proposal_id = proposal_id
        return RelayedWeights((first.SerializeToString(), *self._wire_parts[1:]), self._size)


def receive_relayed(wire_parts: Iterable[bytes], max_total_bytes: int) -> RelayedWeights:
    """Checks a stream of serialized parts as every receiver does, and keeps them as they are."""
    checker = WeightsAssembler(max_total_bytes, join=False)
    kept = []
    for wire in wire_parts:
        try:
            message = _Message.FromString(wire)
        except DecodeError:
            raise WeightsStreamError(f"part {len(kept)} is not a weights message") from None
        checker.add(message.part)
        kept.append(wire)
    checker.verified_header()
    return RelayedWeights(tuple(kept), checker.total_bytes)
