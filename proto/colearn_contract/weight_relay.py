"""Weights that the backend relays: the parts exactly as they came off the wire, sent on unchanged.

The backend never decodes weights, and it does not need them as one buffer either. It checks each part as it
arrives (framing, size cap and sha256, like every receiver), and keeps the part's serialized bytes. Every
learner it sends the weights to gets those same bytes objects: the proposal is held once, whatever the
fleet's size, and no part is cut, copied or serialized again for each learner.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from google.protobuf.message import DecodeError

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import (
    DEFAULT_PART_BYTES,
    EncodedWeights,
    WeightsAssembler,
    WeightsStreamError,
    iter_parts,
)


class RelayedWeights:
    """Encoded weights as serialized ``WeightsPart`` messages, checked when they were received.

    Immutable: the header fields are read from the first part, so they cannot disagree with what is sent.
    """

    __slots__ = ("_header", "_size", "_wire_parts")

    def __init__(self, wire_parts: tuple[bytes, ...], size: int) -> None:
        if not wire_parts:
            raise ValueError("relayed weights need at least the part that carries the header")
        self._wire_parts = wire_parts
        self._header = pb.WeightsPart.FromString(wire_parts[0]).header
        self._size = size

    def __repr__(self) -> str:
        return f"RelayedWeights(sha256={self.sha256[:12]}…, size={self.size}, parts={len(self.wire_parts)})"

    @property
    def wire_parts(self) -> tuple[bytes, ...]:
        return self._wire_parts

    @property
    def sha256(self) -> str:
        return self._header.sha256

    @property
    def proposal_id(self) -> str:
        return self._header.proposal_id

    @property
    def encoding(self) -> str:
        return self._header.encoding

    @property
    def size(self) -> int:
        return self._size

    @property
    def data(self) -> bytes:
        """The whole encoded buffer, joined: a copy, for inspection. Relaying never needs it."""
        return b"".join(pb.WeightsPart.FromString(part).data for part in self._wire_parts)

    def renamed(self, proposal_id: str) -> RelayedWeights:
        """The same weights under another proposal id ("" sends them as plain weights, not a proposal).
        Only the first part, which carries the header, is serialized again."""
        first = pb.WeightsPart.FromString(self._wire_parts[0])
        first.header.proposal_id = proposal_id
        return RelayedWeights((first.SerializeToString(), *self._wire_parts[1:]), self._size)


def receive_relayed(wire_parts: Iterable[bytes], max_total_bytes: int) -> RelayedWeights:
    """Checks a stream of serialized parts as every receiver does, and keeps them as they are."""
    checker = WeightsAssembler(max_total_bytes, join=False)
    kept = []
    for wire in wire_parts:
        try:
            part = pb.WeightsPart.FromString(wire)
        except DecodeError:
            raise WeightsStreamError(f"part {len(kept)} is not a WeightsPart message") from None
        checker.add(part)
        kept.append(wire)
    checker.verified_header()
    return RelayedWeights(tuple(kept), checker.total_bytes)


def wire_parts_of(
    weights: EncodedWeights | RelayedWeights, part_bytes: int = DEFAULT_PART_BYTES
) -> Iterator[bytes]:
    """The serialized parts to send: a relayed stream's own, or a buffer's, cut and serialized now."""
    if isinstance(weights, RelayedWeights):
        return iter(weights.wire_parts)
    return (part.SerializeToString() for part in iter_parts(weights, part_bytes))
