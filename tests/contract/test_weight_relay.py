"""Relayed weights: the backend checks a stream like any receiver and sends the same wire bytes onwards."""

from __future__ import annotations

import contextlib
import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_weight_stream import REJECTED, mutate

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_relay import receive_relayed, wire_parts_of
from colearn_contract.weight_stream import MIB, EncodedWeights, WeightsStreamError, assemble, iter_parts

CAP = 64 * MIB


def wire(weights: EncodedWeights, part_bytes: int = MIB) -> list[bytes]:
    return [part.SerializeToString() for part in iter_parts(weights, part_bytes)]


@pytest.mark.parametrize("size", [0, 1, MIB - 1, MIB, 3 * MIB + 5])
def test_a_relayed_stream_keeps_the_weights_exactly(size: int) -> None:
    original = EncodedWeights.wrap(os.urandom(size), proposal_id="p-7")
    relayed = receive_relayed(wire(original), CAP)
    assert (relayed.sha256, relayed.size, relayed.proposal_id) == (original.sha256, size, "p-7")
    assert relayed.encoding == original.encoding
    assert relayed.data == original.data
    # What a learner receives from the relay assembles into the original buffer.
    again = assemble((pb.WeightsPart.FromString(w) for w in wire_parts_of(relayed)), CAP)
    assert bytes(again.data) == original.data and again.sha256 == original.sha256


def test_every_learner_gets_the_same_bytes_objects() -> None:
    """No copy per learner: each send iterates the very objects that were received."""
    received = wire(EncodedWeights.wrap(os.urandom(3 * MIB)))
    relayed = receive_relayed(received, CAP)
    for _ in range(3):
        assert all(a is b for a, b in zip(wire_parts_of(relayed), received, strict=True))


def test_renaming_rewrites_only_the_header_part() -> None:
    relayed = receive_relayed(wire(EncodedWeights.wrap(os.urandom(3 * MIB), proposal_id="p-1")), CAP)
    plain = relayed.renamed("")
    assert plain.proposal_id == "" and relayed.proposal_id == "p-1"
    assert plain.sha256 == relayed.sha256 and plain.size == relayed.size
    assert pb.WeightsPart.FromString(plain.wire_parts[0]).header.proposal_id == ""
    assert all(a is b for a, b in zip(plain.wire_parts[1:], relayed.wire_parts[1:], strict=True))
    assert plain.data == relayed.data


def test_relayed_weights_cannot_be_changed_behind_their_header() -> None:
    relayed = receive_relayed(wire(EncodedWeights.wrap(b"abc", proposal_id="p")), CAP)
    with pytest.raises(AttributeError):
        relayed.proposal_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        dataclasses.replace(relayed, proposal_id="")  # type: ignore[type-var]


def test_encoded_weights_are_serialized_when_sent() -> None:
    original = EncodedWeights.wrap(os.urandom(2 * MIB + 3), proposal_id="q")
    sent = list(wire_parts_of(original, MIB))
    assert sent == wire(original, MIB)
    assert original.renamed("").proposal_id == "" and original.renamed("").data is original.data


@pytest.mark.parametrize("name", list(REJECTED))
def test_the_relay_refuses_every_broken_stream(name: str) -> None:
    with pytest.raises(WeightsStreamError):
        receive_relayed([p.SerializeToString() for p in mutate(REJECTED[name])], CAP)


def test_the_relay_refuses_an_empty_stream_and_bytes_that_are_no_message() -> None:
    with pytest.raises(WeightsStreamError, match="empty"):
        receive_relayed([], CAP)
    with pytest.raises(WeightsStreamError, match="part 0 is not a WeightsPart"):
        receive_relayed([b"\xff\xff\xff"], CAP)


def test_the_relay_keeps_the_size_cap() -> None:
    with pytest.raises(WeightsStreamError, match="limit"):
        receive_relayed(wire(EncodedWeights.wrap(os.urandom(2 * MIB))), MIB)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.binary(max_size=64), max_size=4), st.integers(0, 3))
def test_fuzz_the_relay_raises_only_stream_errors(noise: list[bytes], keep: int) -> None:
    good = wire(EncodedWeights.wrap(b"x" * 100, proposal_id="p"))
    with contextlib.suppress(WeightsStreamError):
        receive_relayed(good[:keep] + noise, CAP)
