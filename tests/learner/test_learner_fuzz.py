"""Every RPC fuzzed over real gRPC: no client input gets INTERNAL or UNKNOWN, or hurts the learner."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import grpc
import pytest
import safetensors.numpy
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from learner_testkit import (
    MIB,
    SERVICE,
    SERVING,
    Learner,
    deep_parameters,
    digits_setup,
    joined,
    length_delimited,
    rpc_code,
    sha256_hex,
)
from wire_kit import varint

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weights_codec import decode_tensors

BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Compatible (dataloader, model) pairs; FRAUD reads files at its location.
PAIRS = [("DIGITS", "SKLEARN_DIGITS"), ("DIGITS", "PYTORCH_DIGITS"), ("FRAUD", "FRAUD")]
LOADERS = sorted({loader for loader, _ in PAIRS})
MODELS = sorted({model for _, model in PAIRS})
PARAMETER_NAMES = [
    "shard",
    "n_shards",
    "train_ratio",
    "vote_ratio",
    "seed",
    "learning_rate",
    "epochs",
    "batch_size",
    "loss",
    "hidden",
    "no_cuda",
    "location",
]

texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=24)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    st.sampled_from(["log_loss", "hinge", "modified_huber", "", "..", "/etc"]),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
# Values a client's JSON never has but a hostile one's may: echoes past gRPC's 16 KiB metadata limit, file
# names past NAME_MAX, paths past PATH_MAX, lists nested as deep as a Struct can carry.
huge_texts = st.sampled_from([16_000, 20_000, 70_000]).map(lambda n: "x" * n)
long_locations = st.sampled_from(
    ["a" * 256, "a" * 300, "d/" + "b" * 256 + "/c", "/" + "p/" * 2100, "é" * 200, "a\x00b"]
)
parameter_names = st.sampled_from(PARAMETER_NAMES) | texts | huge_texts
parameter_values = st.one_of(
    json_values, long_locations, huge_texts, st.integers(1, 30).map(lambda n: json.loads("[" * n + "]" * n))
)


def _struct(values: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)  # a Struct holds NaN and infinities, which a client's JSON could not
    return struct


parameter_structs = st.dictionaries(parameter_names, parameter_values, max_size=5).map(_struct)
loader_names = (
    st.sampled_from(LOADERS) | st.sampled_from(["", "digits", "DIGITS ", "TINY_DATA"]) | texts | huge_texts
)
model_names = (
    st.sampled_from(MODELS) | st.sampled_from(["", "sklearn_digits", "KERAS_MNIST"]) | texts | huge_texts
)


def _unknown_field(number: int, wire_type: int, payload: bytes, number_value: int) -> bytes:
    tag = varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + varint(number_value)
    if wire_type == 1:
        return tag + (number_value & (2**64 - 1)).to_bytes(8, "little")
    if wire_type == 5:
        return tag + (number_value & (2**32 - 1)).to_bytes(4, "little")
    return tag + varint(len(payload)) + payload


# Fields a newer client might send: valid wire format, numbers this contract does not know.
unknown_fields = st.lists(
    st.builds(
        _unknown_field,
        st.integers(16, 2**29 - 1),
        st.sampled_from([0, 1, 2, 5]),
        st.binary(max_size=40),
        st.integers(0, 2**64 - 1),
    ),
    max_size=4,
).map(b"".join)


def raw_unary(learner: Learner, method: str, request: bytes) -> tuple[grpc.StatusCode, str]:
    call = learner.channel.unary_unary(f"/{SERVICE}/{method}")
    return rpc_code(lambda: call(request, timeout=60))


@pytest.fixture(scope="module")
def target() -> Iterator[Learner]:
    """A set-up learner with a small weights cap; its weights must survive everything sent to it."""
    with Learner(max_weights_bytes=MIB) as learner:
        learner.stub.MLSetup(digits_setup(), timeout=60)
        yield learner


@pytest.fixture(scope="module")
def setup_target() -> Iterator[Learner]:
    """A learner that MLSetup fuzzing may set up and replace as it likes."""
    with Learner() as learner:
        yield learner


def assert_healthy(learner: Learner) -> None:
    assert learner.health_of("") == SERVING
    assert learner.stub.QueryVersion(pb.QueryVersionRequest(), timeout=10).contract == "colearn.v1"


# Each parameter: values it accepts, and values near or past the edges of what it accepts. A request keeps
# most parameters valid and pushes one to the edge, so that fuzzing reaches user code, not only validation.
edge_ints = st.sampled_from([-2, -1, 0, 1, 2, 63, 64, 65, 2**31, 2**32 - 1, 2**32, 2**63, -(2**63), 10**30])
edge_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1e-300, 0.999, 1.0, 2.0])
seeds = st.integers(0, 2**31)
PLAUSIBLE = {
    "DIGITS": {
        "shard": (st.just(0), edge_ints),
        "n_shards": (st.integers(1, 8), edge_ints),
        "train_ratio": (st.floats(0.3, 0.7), edge_floats),
        "vote_ratio": (st.floats(0.1, 0.25), edge_floats),
        "seed": (seeds, edge_ints),
    },
    "FRAUD": {
        "location": (st.sampled_from(["", ".", "no-such-folder"]) | long_locations, long_locations | texts),
        "train_ratio": (st.floats(0.3, 0.7), edge_floats),
    },
    "SKLEARN_DIGITS": {
        "learning_rate": (st.floats(1e-4, 0.5), edge_floats),
        "epochs": (st.integers(1, 2), edge_ints),
        "batch_size": (st.integers(1, 512), edge_ints),
        "loss": (st.sampled_from(["log_loss", "hinge", "modified_huber"]), texts),
        "seed": (seeds, edge_ints),
    },
    "PYTORCH_DIGITS": {
        "hidden": (st.integers(1, 64), st.integers(-1, 5000)),
        "learning_rate": (st.floats(1e-4, 0.5), edge_floats),
        "epochs": (st.integers(1, 2), edge_ints),
        "batch_size": (st.integers(1, 512), edge_ints),
        "seed": (seeds, edge_ints),
        "no_cuda": (st.just(True), st.just(True)),
    },
}


@st.composite
def plausible_parameters(draw: st.DrawFn, name: str) -> struct_pb2.Struct:
    fields = PLAUSIBLE.get(name)
    if not fields:
        return draw(parameter_structs)
    pushed = draw(st.sampled_from([None, *fields]))
    params = {}
    for key, (valid, edge) in fields.items():
        if key == pushed:
            params[key] = draw(edge)
        elif draw(st.booleans()):
            params[key] = draw(valid)
    return _struct(params)


@st.composite
def setup_requests(draw: st.DrawFn) -> bytes:
    # Mostly known names with plausible parameters, so that fuzzing reaches user code, not only validation.
    def mostly(usual: st.SearchStrategy, wild: st.SearchStrategy) -> object:
        return draw(usual if draw(st.integers(0, 7)) else wild)

    pair = draw(st.sampled_from(PAIRS))
    loader = mostly(st.just(pair[0]), loader_names)
    model = mostly(st.just(pair[1]), model_names)
    request = pb.MLSetupRequest(
        dataloader_name=loader,
        dataloader_parameters=mostly(plausible_parameters(loader), parameter_structs),
        model_name=model,
        model_parameters=mostly(plausible_parameters(model), parameter_structs),
    ).SerializeToString()
    if draw(st.integers(0, 9)) == 0:  # parameters nested deeper than any Struct may be
        field = draw(st.sampled_from([5, 6]))
        request += length_delimited(field, deep_parameters(draw(st.sampled_from([60, 200, 5000]))))
    return request


#: What a learner may answer a setup: never INTERNAL or UNKNOWN, and never RESOURCE_EXHAUSTED, which is
#: what a Python client reports when a status message overflows gRPC's 16 KiB metadata limit.
SETUP_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
}
#: The longest status message a learner sends (servicer.MAX_DETAILS).
MAX_DETAILS = 2000


@settings(FUZZ, max_examples=100)
@given(request=setup_requests(), extra=unknown_fields)
def test_fuzz_mlsetup(setup_target: Learner, request: bytes, extra: bytes) -> None:
    before = setup_target.status()
    code, details = raw_unary(setup_target, "MLSetup", request + extra)
    assert code in SETUP_CODES, (code, details[:300])
    assert len(details) <= MAX_DETAILS
    if code != grpc.StatusCode.OK:
        after = setup_target.status()
        assert (after.ready, after.model_name, after.weights_sha256) == (
            before.ready,
            before.model_name,
            before.weights_sha256,
        )


@FUZZ
@given(
    method=st.sampled_from(["QueryVersion", "QuerySupportedSystem", "GetStatus", "AcceptProposal"]),
    proposal_id=texts | huge_texts,
    extra=unknown_fields,
)
def test_fuzz_other_unary_rpcs(target: Learner, method: str, proposal_id: str, extra: bytes) -> None:
    digest = target.sha()
    body = (
        pb.AcceptProposalRequest(proposal_id=proposal_id).SerializeToString()
        if method == "AcceptProposal"
        else b""
    )
    code, details = raw_unary(target, method, body + extra)
    if method == "AcceptProposal":
        assert code in {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}, (code, details[:300])
    else:
        assert code == grpc.StatusCode.OK, details
    assert len(details) <= MAX_DETAILS
    assert target.sha() == digest


def _mutated(draw: st.DrawFn, good: bytes) -> bytes:
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def relabelled(draw: st.DrawFn, good: bytes) -> bytes:
    """The learner's own tensors under a layout a hostile peer made up: safetensors-valid, colearn-dubious."""
    tensors, _ = decode_tensors(good)
    names = draw(st.permutations(list(tensors)))
    extra = draw(
        st.fixed_dictionaries(
            {"tensor_type": st.sampled_from(["numpy", "torch", "torch", ""])},
            optional={
                "bfloat16": st.sampled_from(
                    [json.dumps(names), json.dumps(names[:1]), "[]", "{", "5", "null"]
                )
                | texts,
            },
        )
    )
    layout = {
        "structure": draw(st.sampled_from(["dict", "list", "tuple", "array"]) | texts | huge_texts),
        "names": names,
        "extra": extra,
    }
    arrays = {name: tensors[name] for name in names}
    layout_text = json.dumps(layout)
    if draw(st.integers(0, 5)) == 0:  # nested deeper than any JSON parser should recurse
        levels = draw(st.sampled_from([65, 2000, 100_000]))
        key = draw(st.sampled_from(["extra", "bfloat16"]))
        layout_text = json.dumps({**layout, "extra": {}})[:-1] + f', "{key}": ' + "[" * levels + "]" * levels
        layout_text += "}"
    return safetensors.numpy.save(arrays, metadata={"colearn.layout": layout_text})


@st.composite
def crafted_headers(draw: st.DrawFn, good: bytes) -> bytes:
    """The learner's own data under a header that names shapes no array can have: more than 64
    dimensions, or a zero beside dimensions whose product overflows."""
    tensors, layout = decode_tensors(good)
    name = draw(st.sampled_from(list(tensors)))
    shape = draw(
        st.sampled_from([[1] * 65, [1] * 300, [0, 10**30], [0, 2**62, 2**62], [0, 2**63], [0, 2**64 - 1]])
    )
    header = {"__metadata__": {"colearn.layout": layout.to_json()}}
    offset = 0
    for tensor_name, array in tensors.items():
        entry_shape = shape if tensor_name == name else list(array.shape)
        size = 0 if tensor_name == name else array.nbytes
        header[tensor_name] = {"dtype": "F64", "shape": entry_shape, "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + bytes(offset)


@st.composite
def weight_streams(draw: st.DrawFn, good: bytes) -> list[pb.WeightsPart]:
    source = draw(
        st.sampled_from(["random", "good", "mutated", "truncated", "relabelled", "relabelled", "crafted"])
    )
    if source == "relabelled":
        data = draw(relabelled(good))
    elif source == "crafted":
        data = draw(crafted_headers(good))
    elif source == "random":
        data = draw(st.binary(max_size=3000))
    elif source == "good":
        data = good
    elif source == "mutated":
        data = _mutated(draw, good)
    else:
        data = good[: draw(st.integers(0, len(good)))]

    # Mostly well-framed, so that many streams get through the framing to the codec and the model's checks.
    def mostly(usual: st.SearchStrategy, wild: st.SearchStrategy) -> object:
        return draw(usual if draw(st.integers(0, 4)) else wild)

    sha = mostly(
        st.just(sha256_hex(data)),
        st.just(sha256_hex(good)) | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | texts,
    )
    header = pb.WeightsHeader(
        proposal_id=draw(texts | huge_texts),
        encoding=mostly(st.just(pb.WEIGHTS_ENCODING_SAFETENSORS), st.integers(0, 2**31 - 1)),
        sha256=sha,
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    total = len(data)
    parts = [
        pb.WeightsPart(offset=a, total_bytes=total, data=data[a:b]) for a, b in itertools.pairwise(bounds)
    ]
    parts[0].header.CopyFrom(header)
    operations = st.sampled_from(["drop", "dup", "swap", "offset", "total", "header", "unheader"])
    for op in mostly(st.just([]), st.lists(operations, min_size=1, max_size=3)):
        if not parts:
            break
        i = draw(st.integers(0, len(parts) - 1))
        if op == "drop":
            parts.pop(i)
        elif op == "dup":
            parts.insert(i, parts[i])
        elif op == "swap":
            j = draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
        elif op == "offset":
            parts[i] = pb.WeightsPart(
                header=parts[i].header if parts[i].HasField("header") else None,
                offset=draw(st.integers(0, 2**64 - 1)),
                total_bytes=parts[i].total_bytes,
                data=parts[i].data,
            )
        elif op == "total":
            value = draw(
                st.integers(0, 2**64 - 1) | st.sampled_from([MIB, MIB + 1, total + 1, max(total - 1, 0)])
            )
            for part in parts[i:]:
                part.total_bytes = value
        elif op == "header":
            parts[i].header.CopyFrom(header)
        else:
            parts[i].ClearField("header")
    return parts


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_fuzz_weight_streams(target: Learner, data: st.DataObject) -> None:
    good = joined(target.current())
    digest = sha256_hex(good)
    method = data.draw(st.sampled_from(["TestWeights", "SetWeights"]))
    parts = data.draw(weight_streams(good))
    code, details = rpc_code(lambda: getattr(target.stub, method)(iter(parts), timeout=60))
    assert code not in BAD_CODES, details[:300]
    assert len(details) <= MAX_DETAILS
    if code != grpc.StatusCode.OK:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert target.sha() == digest
    elif method == "SetWeights" and target.sha() != digest:
        # A mutation that still decodes to weights of the right shape is legitimately accepted: put back.
        assert target.stub.SetWeights(iter(target_parts(good)), timeout=60).weights_sha256 == digest
    assert target.sha() == digest
    assert target.health_of(SERVICE) == SERVING


def target_parts(good: bytes) -> list[pb.WeightsPart]:
    part = pb.WeightsPart(offset=0, total_bytes=len(good), data=good)
    part.header.CopyFrom(pb.WeightsHeader(encoding=pb.WEIGHTS_ENCODING_SAFETENSORS, sha256=sha256_hex(good)))
    return [part]


def test_learners_are_healthy_and_unchanged_after_fuzzing(target: Learner, setup_target: Learner) -> None:
    for learner in (target, setup_target):
        assert_healthy(learner)
    original = target.stub.MLSetup(digits_setup(), timeout=60)
    assert original.unchanged is True
    assert target.sha() == original.weights_sha256
    with Learner() as fresh:
        assert fresh.stub.MLSetup(digits_setup(), timeout=60).weights_sha256 == target.sha()
    # The MLSetup target still takes a valid setup after whatever it was sent.
    assert setup_target.stub.MLSetup(digits_setup(seed=11), timeout=60).weights_sha256
    code, _ = rpc_code(lambda: setup_target.propose())
    assert code == grpc.StatusCode.OK
