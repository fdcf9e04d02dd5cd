"""Stream framing: one buffer cut into WeightsPart messages, and the receiver's checks."""

from __future__ import annotations

import hashlib
import itertools
import os

import pytest

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_stream import (
    DEFAULT_PART_BYTES,
    MAX_PART_BYTES,
    MIB,
    MIN_PART_BYTES,
    EncodedWeights,
    WeightsAssembler,
    WeightsStreamError,
    assemble,
    iter_parts,
    wire_parts,
)

CAP = 64 * MIB
SAFETENSORS = pb.WEIGHTS_ENCODING_SAFETENSORS


def encoded(size: int, proposal_id: str = "p-1") -> EncodedWeights:
    return EncodedWeights.wrap(os.urandom(size), proposal_id=proposal_id)


@pytest.mark.parametrize("part_bytes", [MIN_PART_BYTES, DEFAULT_PART_BYTES, 3 * MIB + 17, MAX_PART_BYTES])
@pytest.mark.parametrize(
    "size_of",
    [
        pytest.param(lambda p: 0, id="empty"),
        pytest.param(lambda p: 1, id="one-byte"),
        pytest.param(lambda p: p - 1, id="one-under-a-part"),
        pytest.param(lambda p: p, id="exactly-one-part"),
        pytest.param(lambda p: p + 1, id="one-over-a-part"),
        pytest.param(lambda p: 3 * p, id="exactly-three-parts"),
        pytest.param(lambda p: 2 * p + p // 2, id="two-and-a-half-parts"),
    ],
)
def test_iter_parts_and_assemble_round_trip(part_bytes: int, size_of) -> None:
    size = size_of(part_bytes)
    weights = encoded(size)
    parts = list(iter_parts(weights, part_bytes))

    expected_parts = max(1, -(-size // part_bytes))
    assert len(parts) == expected_parts
    assert parts[0].HasField("header")
    assert parts[0].header == pb.WeightsHeader(proposal_id="p-1", encoding=SAFETENSORS, sha256=weights.sha256)
    assert not any(p.HasField("header") for p in parts[1:])
    offset = 0
    for part in parts:
        assert part.offset == offset
        assert part.total_bytes == size
        assert len(part.data) <= part_bytes
        offset += len(part.data)
    assert offset == size
    assert all(len(p.data) == part_bytes for p in parts[:-1])

    back = assemble(parts, max_total_bytes=CAP)
    assert back == weights
    assert back.size == size


def test_parts_survive_serialisation_over_the_wire_format() -> None:
    weights = encoded(MIB + 5, proposal_id="wire")
    wire = [p.SerializeToString() for p in iter_parts(weights, MIN_PART_BYTES)]
    back = assemble((pb.WeightsPart.FromString(b) for b in wire), max_total_bytes=CAP)
    assert back.data == weights.data
    assert back.proposal_id == "wire"


@pytest.mark.parametrize("part_bytes", [MIN_PART_BYTES, 3 * MIB + 17, MAX_PART_BYTES])
@pytest.mark.parametrize(
    "size", [0, 1, 127, 128, 16383, 16384, MIB - 1, MIB, MIB + 1, 2 * MIB + 300, 9 * MIB + 1]
)
@pytest.mark.parametrize("proposal_id", ["", "p-1", "ü" * 200])
def test_wire_parts_are_byte_for_byte_what_protobuf_serializes(
    part_bytes: int, size: int, proposal_id: str
) -> None:
    """``wire_parts`` frames the data itself; any difference from protobuf's own bytes would be a bug. The
    sizes cross every length a varint changes width at, for the data and for the whole part."""
    weights = encoded(size, proposal_id)
    framed = list(wire_parts(weights, part_bytes))
    for message in (pb.TestWeightsRequest, pb.ProposeWeightsResponse):
        assert framed == [m.SerializeToString() for m in iter_parts(weights, part_bytes, message=message)]
    back = assemble((pb.SetWeightsRequest.FromString(w).part for w in framed), max_total_bytes=CAP)
    assert back == weights and back.proposal_id == proposal_id


def test_wire_parts_take_a_buffer_of_any_item_size() -> None:
    """A buffer whose items are wider than a byte is cut by bytes, not items."""
    import numpy as np

    floats = np.arange(MIB // 2, dtype=np.float32)
    weights = EncodedWeights.wrap(memoryview(floats))
    framed = list(wire_parts(weights, MIN_PART_BYTES))
    assert framed == [
        m.SerializeToString() for m in iter_parts(weights, MIN_PART_BYTES, message=pb.SetWeightsRequest)
    ]
    assert assemble((pb.SetWeightsRequest.FromString(w).part for w in framed), CAP).data == floats.tobytes()


@pytest.mark.parametrize("part_bytes", [MIN_PART_BYTES - 1, MAX_PART_BYTES + 1])
def test_wire_parts_refuse_a_part_size_out_of_bounds(part_bytes: int) -> None:
    with pytest.raises(ValueError, match="part_bytes must be between"):
        next(wire_parts(encoded(10), part_bytes))


WEIGHTS_MESSAGES = [
    pb.ProposeWeightsResponse,
    pb.TestWeightsRequest,
    pb.SetWeightsRequest,
    pb.GetCurrentWeightsResponse,
]


@pytest.mark.parametrize("message", WEIGHTS_MESSAGES)
def test_the_four_weights_messages_carry_the_same_bytes(message) -> None:
    """A part received in one weights message is, byte for byte, a part of any other: the relay sends
    what it received without serializing it again."""
    weights = encoded(MIB + 5, proposal_id="same")
    sent = [m.SerializeToString() for m in iter_parts(weights, MIN_PART_BYTES, message=message)]
    for other in WEIGHTS_MESSAGES:
        again = [other.FromString(b) for b in sent]
        assert [m.SerializeToString() for m in again] == sent
        assert assemble((m.part for m in again), max_total_bytes=CAP) == weights
    bare = [p.SerializeToString() for p in iter_parts(weights, MIN_PART_BYTES)]
    assert [message.FromString(b).part.SerializeToString() for b in sent] == bare


def test_encoded_weights_wrap_hashes_the_data() -> None:
    weights = EncodedWeights.wrap(b"abc")
    assert weights.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert weights.proposal_id == ""
    assert weights.size == 3


@pytest.mark.parametrize("part_bytes", [0, 1, MIN_PART_BYTES - 1, MAX_PART_BYTES + 1])
def test_part_sizes_outside_1_to_4_mib_are_refused(part_bytes: int) -> None:
    with pytest.raises(ValueError):
        list(iter_parts(encoded(10), part_bytes))


def test_assembler_accepts_parts_of_any_size_the_sender_chose() -> None:
    data = os.urandom(1000)
    weights = EncodedWeights.wrap(data)
    cuts = [0, 1, 1, 7, 500, 999, 1000]  # includes an empty part in the middle
    parts = [pb.WeightsPart(offset=a, total_bytes=1000, data=data[a:b]) for a, b in itertools.pairwise(cuts)]
    parts[0].header.CopyFrom(pb.WeightsHeader(encoding=SAFETENSORS, sha256=weights.sha256))
    assert assemble(parts, max_total_bytes=1000).data == data


# --- rejections -------------------------------------------------------------------------------------------

DATA = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(DATA).hexdigest()


def good_parts(chunk: int = 1024) -> list[pb.WeightsPart]:
    parts = [
        pb.WeightsPart(offset=o, total_bytes=len(DATA), data=DATA[o : o + chunk])
        for o in range(0, len(DATA), chunk)
    ]
    parts[0].header.CopyFrom(pb.WeightsHeader(proposal_id="x", encoding=SAFETENSORS, sha256=SHA))
    return parts


def mutate(fn):
    parts = good_parts()
    return fn(parts) or parts


def _set_header(parts, **fields):
    header = parts[0].header
    for k, v in fields.items():
        setattr(header, k, v)


def _header_later(parts):
    parts[3].header.CopyFrom(parts[0].header)


def _move_header(parts):
    parts[1].header.CopyFrom(parts[0].header)
    parts[0].ClearField("header")


def _total_changes(parts):
    parts[4].total_bytes += 1


def _runs_past(parts):
    parts[-1].data += b"!"


def _runs_past_total_declared_small(parts):
    for p in parts:
        p.total_bytes = 5000


REJECTED = {
    "missing-header": lambda ps: ps[0].ClearField("header"),
    "header-only-in-a-later-part": _move_header,
    "a-second-header": _header_later,
    "unknown-encoding": lambda ps: _set_header(ps, encoding=7),
    "unspecified-encoding": lambda ps: _set_header(ps, encoding=pb.WEIGHTS_ENCODING_UNSPECIFIED),
    "sha256-uppercase": lambda ps: _set_header(ps, sha256=SHA.upper()),
    "sha256-too-short": lambda ps: _set_header(ps, sha256=SHA[:-1]),
    "sha256-not-hex": lambda ps: _set_header(ps, sha256="g" * 64),
    "sha256-empty": lambda ps: _set_header(ps, sha256=""),
    "sha256-mismatch": lambda ps: _set_header(ps, sha256=hashlib.sha256(b"other").hexdigest()),
    "data-changed": lambda ps: setattr(ps[2], "data", b"\xff" + ps[2].data[1:]),
    "missing-part-gap": lambda ps: ps.pop(4) and None,
    "missing-first-data-part": lambda ps: [ps.pop(1), None][1],
    "duplicated-part": lambda ps: ps.insert(3, ps[2]),
    "out-of-order": lambda ps: ps.__setitem__(slice(2, 4), [ps[3], ps[2]]),
    "offset-skips-ahead": lambda ps: setattr(ps[5], "offset", ps[5].offset + 1),
    "part-runs-past-total": _runs_past,
    "total-declared-smaller": _runs_past_total_declared_small,
    "total-changes-mid-stream": _total_changes,
    "incomplete": lambda ps: ps.pop() and None,
    "only-the-header-part": lambda ps: ps.__delitem__(slice(1, None)),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_broken_streams_are_rejected(name: str) -> None:
    parts = mutate(REJECTED[name])
    with pytest.raises(WeightsStreamError):
        assemble(parts, max_total_bytes=CAP)


def test_the_unchanged_stream_used_above_is_accepted() -> None:
    # The rejections above must be caused by their mutation, not by the base stream.
    back = assemble(good_parts(), max_total_bytes=CAP)
    assert back.data == DATA
    assert back.proposal_id == "x"


def test_empty_stream_is_rejected() -> None:
    with pytest.raises(WeightsStreamError, match="empty"):
        assemble([], max_total_bytes=CAP)


def test_total_above_the_cap_is_rejected_at_the_first_part() -> None:
    assembler = WeightsAssembler(max_total_bytes=len(DATA) - 1)
    with pytest.raises(WeightsStreamError, match="exceeds"):
        assembler.add(good_parts()[0])


def test_total_equal_to_the_cap_is_accepted() -> None:
    assert assemble(good_parts(), max_total_bytes=len(DATA)).data == DATA


def test_huge_declared_total_is_refused_before_any_data_is_kept() -> None:
    part = pb.WeightsPart(offset=0, total_bytes=2**64 - 1, data=b"x")
    part.header.CopyFrom(pb.WeightsHeader(encoding=SAFETENSORS, sha256="0" * 64))
    with pytest.raises(WeightsStreamError):
        assemble([part], max_total_bytes=CAP)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing-header", "header"),
        ("a-second-header", "header"),
        ("unknown-encoding", "encoding"),
        ("sha256-not-hex", "sha256"),
        ("sha256-mismatch", "sha256"),
        ("missing-part-gap", "contiguous"),
        ("total-changes-mid-stream", "total_bytes"),
        ("incomplete", "ended"),
    ],
)
def test_rejections_say_which_rule_was_broken(name: str, message: str) -> None:
    with pytest.raises(WeightsStreamError, match=message):
        assemble(mutate(REJECTED[name]), max_total_bytes=CAP)
