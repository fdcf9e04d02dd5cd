"""Relayed weights: the backend checks a stream like any receiver and sends the same wire bytes onwards."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_weight_stream import REJECTED, mutate

from colearn_contract.mli import Weights
from colearn_contract.serialized_weights import WEIGHTS_SHA256_KEY
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weight_relay import ArrivingWeights, receive_relayed
from colearn_contract.weight_stream import MIB, EncodedWeights, WeightsStreamError, assemble, iter_parts
from colearn_contract.weights_codec import TensorLayout, WeightsCodecError, encode_tensors

CAP = 64 * MIB


def wire(weights: EncodedWeights, part_bytes: int = MIB) -> list[bytes]:
    """What a proposer sends: serialized ProposeWeightsResponse messages."""
    return [m.SerializeToString() for m in iter_parts(weights, part_bytes, message=pb.ProposeWeightsResponse)]


@pytest.mark.parametrize("size", [0, 1, MIB - 1, MIB, 3 * MIB + 5])
def test_a_relayed_stream_keeps_the_weights_exactly(size: int) -> None:
    original = EncodedWeights.wrap(os.urandom(size), proposal_id="p-7")
    relayed = receive_relayed(wire(original), CAP)
    assert (relayed.sha256, relayed.size, relayed.proposal_id) == (original.sha256, size, "p-7")
    assert relayed.data == original.data
    # What a learner receives from the relay assembles into the original buffer.
    again = assemble((pb.TestWeightsRequest.FromString(w).part for w in relayed.serialized_parts()), CAP)
    assert bytes(again.data) == original.data and again.sha256 == original.sha256


def test_every_learner_gets_the_same_bytes_objects() -> None:
    """No copy per learner: each send iterates the very objects that were received."""
    received = wire(EncodedWeights.wrap(os.urandom(3 * MIB)))
    relayed = receive_relayed(received, CAP)
    for _ in range(3):
        assert all(a is b for a, b in zip(relayed.serialized_parts(), received, strict=True))


def test_renaming_rewrites_only_the_header_part() -> None:
    relayed = receive_relayed(wire(EncodedWeights.wrap(os.urandom(3 * MIB), proposal_id="p-1")), CAP)
    plain = relayed.renamed("")
    assert plain.proposal_id == "" and relayed.proposal_id == "p-1"
    assert plain.sha256 == relayed.sha256 and plain.size == relayed.size
    assert pb.TestWeightsRequest.FromString(plain.wire_parts[0]).part.header.proposal_id == ""
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
    sent = list(original.serialized_parts(MIB))
    assert sent == wire(original, MIB)  # as a voter receives them: the bytes a proposer sends
    assert original.renamed("").proposal_id == "" and original.renamed("").data is original.data


@pytest.mark.parametrize("name", list(REJECTED))
def test_the_relay_refuses_every_broken_stream(name: str) -> None:
    with pytest.raises(WeightsStreamError):
        receive_relayed(
            [pb.TestWeightsRequest(part=p).SerializeToString() for p in mutate(REJECTED[name])], CAP
        )


def test_the_relay_refuses_an_empty_stream_and_bytes_that_are_no_message() -> None:
    with pytest.raises(WeightsStreamError, match="empty"):
        receive_relayed([], CAP)
    with pytest.raises(WeightsStreamError, match="part 0 is not a weights message"):
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


# --- relayed while it arrives ------------------------------------------------------------------------------


class Sender:
    """A sender's stream that a test releases part by part, and that records a cancellation."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.released = threading.Semaphore(0)
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            assert self.released.acquire(timeout=30), "the test never released this part"
            yield part

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.released.release()

    def cancel(self) -> None:
        self.cancelled.set()


def test_readers_get_each_part_while_the_rest_is_still_arriving() -> None:
    weights = EncodedWeights.wrap(os.urandom(3 * MIB + 5), proposal_id="p")
    sent = wire(weights)
    sender = Sender(sent)
    arriving = ArrivingWeights(sender, CAP)
    readers = [arriving.serialized_parts() for _ in range(3)]
    sender.release()  # only the first part has come in
    assert [next(reader) for reader in readers] == [sent[0]] * 3
    assert (arriving.sha256, arriving.proposal_id, arriving.size) == (weights.sha256, "p", weights.size)
    with pytest.raises(TimeoutError):
        arriving.result(timeout=0.05)
    sender.release(len(sent) - 1)
    for reader in readers:
        rest = list(reader)
        assert all(a is b for a, b in zip(rest, sent[1:], strict=True))  # the same bytes objects, no copy
    whole = arriving.result()
    assert whole.wire_parts == tuple(sent) and whole.sha256 == weights.sha256
    assert arriving.buffer() == bytes(weights.data) and arriving == weights
    assert not sender.cancelled.is_set() and not arriving.failed


def test_the_whole_is_handed_out_only_once_every_part_is_in() -> None:
    weights = EncodedWeights.wrap(os.urandom(2 * MIB + 1), proposal_id="p")
    sent = wire(weights)
    sender = Sender(sent)
    arriving = ArrivingWeights(sender, CAP)
    sender.release(len(sent) - 1)
    reader = arriving.serialized_parts()
    assert [next(reader) for _ in sent[1:]] == sent[:-1]  # every part but the last is in
    assert arriving.whole_if_in() is None  # the last one is still to come: relay it
    sender.release()
    arriving.result()
    whole = arriving.whole_if_in()
    assert whole is not None and whole.wire_parts == tuple(sent) and whole.sha256 == weights.sha256


def test_a_stream_that_broke_is_never_handed_out_whole() -> None:
    lying = dataclasses.replace(EncodedWeights.wrap(os.urandom(100), proposal_id="p"), sha256="0" * 64)
    arriving = ArrivingWeights(iter(wire(lying)), CAP)
    with pytest.raises(WeightsStreamError):
        arriving.result()
    assert arriving.whole_if_in() is None


def test_the_last_part_is_held_back_until_the_whole_digest_is_checked() -> None:
    weights = EncodedWeights.wrap(os.urandom(2 * MIB + 1), proposal_id="p")
    lying = dataclasses.replace(weights, sha256="0" * 64)  # every part in place, the digest wrong
    sent = wire(lying)
    sender = Sender(sent)
    cancelled = threading.Event()
    arriving = ArrivingWeights(sender, CAP)
    arriving.on_failure(cancelled.set)
    sender.release(len(sent))
    got = list(arriving.serialized_parts())
    assert got == sent[: len(got)] and len(got) < len(sent)  # never the part that would make it whole
    with pytest.raises(WeightsStreamError, match="sha256 mismatch"):
        arriving.result()
    assert arriving.failed and cancelled.is_set() and sender.cancelled.is_set()
    late = threading.Event()
    arriving.on_failure(late.set)  # a reader that registers after the failure is cancelled at once
    assert late.is_set()


@pytest.mark.parametrize("name", list(REJECTED))
def test_a_broken_stream_reaches_no_reader_whole(name: str) -> None:
    sent = [pb.TestWeightsRequest(part=p).SerializeToString() for p in mutate(REJECTED[name])]
    arriving = ArrivingWeights(iter(sent), CAP, error=lambda exc: RuntimeError(f"relay: {exc}"))
    with pytest.raises(RuntimeError, match="relay: "):  # the caller's own error type
        arriving.result()
    with pytest.raises(RuntimeError):
        arriving.buffer()
    assert len(list(arriving.serialized_parts())) < len(sent) or not sent


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.binary(max_size=64), max_size=4), st.integers(0, 3))
def test_fuzz_arriving_weights_end_whole_and_checked_or_short_and_refused(
    noise: list[bytes], keep: int
) -> None:
    good = wire(EncodedWeights.wrap(b"x" * 100, proposal_id="p"))
    stream = good[:keep] + noise
    arriving = ArrivingWeights(iter(stream), CAP)
    got = list(arriving.serialized_parts())
    try:
        expected = receive_relayed(stream, CAP)
    except WeightsStreamError:
        with pytest.raises(WeightsStreamError):
            arriving.result()
        assert got != stream or not stream  # a reader never has all of a stream the relay refused
        return
    assert arriving.result().wire_parts == expected.wire_parts == tuple(got)


# --- weights a user can read, compare and save ------------------------------------------------------------


def model_weights(seed: int = 0, proposal_id: str = "") -> EncodedWeights:
    rng = np.random.default_rng(seed)
    tensors = {"dense/kernel": rng.normal(size=(64, 32)).astype(np.float32), "dense/bias": np.arange(32.0)}
    layout = TensorLayout("dict", tuple(tensors), {"tensor_type": "numpy"})
    return EncodedWeights.wrap(encode_tensors(tensors, layout), proposal_id=proposal_id)


def test_relayed_weights_read_as_a_mapping_of_arrays_without_decoding_to_relay() -> None:
    original = model_weights(1)
    relayed = receive_relayed(wire(original, MIB), CAP)
    assert relayed  # truthiness never decodes
    assert "_decoded" not in vars(relayed)
    assert sorted(relayed) == ["dense/bias", "dense/kernel"] and len(relayed) == 2
    assert relayed["dense/kernel"].shape == (64, 32) and relayed["dense/kernel"].dtype == np.float32
    np.testing.assert_array_equal(relayed["dense/bias"], np.arange(32.0))
    assert not relayed["dense/bias"].flags.writeable
    assert relayed.layout.structure == "dict"
    with pytest.raises(KeyError):
        relayed["nope"]


def test_weights_are_equal_when_their_digests_are() -> None:
    a, b = model_weights(1, "p-1"), model_weights(1, "p-2")
    relayed = receive_relayed(wire(b, MIB), CAP)
    assert a == b == relayed and hash(a) == hash(relayed)
    assert a != model_weights(2) and relayed != model_weights(2)
    assert Weights(weights=a) == Weights(weights=relayed)
    assert len({a, b, relayed, model_weights(2)}) == 2
    assert a != "not weights"


def test_saved_weights_are_a_plain_safetensors_file(tmp_path: Path) -> None:
    relayed = receive_relayed(wire(model_weights(3), MIB), CAP)
    path = relayed.save(tmp_path / "model.safetensors", {"colearn.round": "7"})
    loaded = safetensors.numpy.load_file(str(path))
    assert sorted(loaded) == ["dense/bias", "dense/kernel"]
    for name, array in loaded.items():
        np.testing.assert_array_equal(array, relayed[name])
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    assert metadata["colearn.round"] == "7"
    assert metadata[WEIGHTS_SHA256_KEY] == relayed.sha256
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left


def test_bfloat16_weights_read_as_float32_and_save_as_bf16(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch

    values = torch.tensor([1.5, -2.25, 3.0e38], dtype=torch.bfloat16)
    bits = values.view(torch.int16).numpy()
    layout = TensorLayout("dict", ("w",), {"tensor_type": "torch", "bfloat16": '["w"]'})
    weights = EncodedWeights.wrap(encode_tensors({"w": bits}, layout))
    np.testing.assert_array_equal(weights["w"], values.float().numpy())
    path = weights.save(tmp_path / "m.safetensors")
    loaded = safetensors.torch.load_file(str(path))
    assert loaded["w"].dtype == torch.bfloat16 and torch.equal(loaded["w"], values)


def test_weights_that_are_not_a_layout_say_so_when_read() -> None:
    junk = receive_relayed(wire(EncodedWeights.wrap(b"not safetensors"), MIB), CAP)
    with pytest.raises(WeightsCodecError):
        junk["x"]


def test_bytes_past_the_end_reach_no_reader_and_neither_does_the_last_part() -> None:
    """A cancelled call can look to its receiver like a stream that ended; so a reader must never hold
    every byte of a stream the relay refused, even one whose digest checked before the extra bytes came."""
    weights = EncodedWeights.wrap(os.urandom(2 * MIB + 7), proposal_id="p")
    sent = wire(weights)
    extra = pb.TestWeightsRequest()
    extra.part.offset, extra.part.total_bytes, extra.part.data = weights.size, weights.size, b"x"
    sender = Sender([*sent, extra.SerializeToString()])
    arriving = ArrivingWeights(sender, CAP)
    reader = arriving.serialized_parts()
    sender.release(len(sent))  # every byte, with the right digest: the stream has not ended yet
    got = [next(reader) for _ in range(len(sent) - 1)]
    sender.release()  # then bytes past the end
    got += list(reader)
    with pytest.raises(WeightsStreamError, match="runs past total_bytes"):
        arriving.result()
    delivered = sum(len(pb.TestWeightsRequest.FromString(w).part.data) for w in got)
    assert delivered < weights.size and got == sent[:-1]
