"""Every RPC fuzzed over real gRPC: no client input gets INTERNAL or UNKNOWN, or hurts the learner."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import grpc
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from learner_testkit import MIB, SERVICE, SERVING, Learner, digits_setup, joined, rpc_code, sha256_hex

from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.weights_codec import decode_tensors

BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LOADERS = ["DIGITS"]
MODELS = ["SKLEARN_DIGITS", "PYTORCH_DIGITS"]
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
parameter_objects = st.dictionaries(st.sampled_from(PARAMETER_NAMES) | texts, json_values, max_size=5).map(
    json.dumps
)
parameter_texts = st.one_of(
    parameter_objects,
    parameter_objects,
    json_values.map(json.dumps),
    texts,
    st.sampled_from(["", "{}", "{", "[", "null", "NaN", '{"shard": 1e999}', "[" * 300]),
)
loader_names = st.sampled_from(LOADERS) | st.sampled_from(["", "digits", "DIGITS ", "TINY_DATA"]) | texts
model_names = st.sampled_from(MODELS) | st.sampled_from(["", "sklearn_digits", "KERAS_MNIST"]) | texts


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _unknown_field(number: int, wire_type: int, payload: bytes, number_value: int) -> bytes:
    tag = _varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + _varint(number_value)
    if wire_type == 1:
        return tag + (number_value & (2**64 - 1)).to_bytes(8, "little")
    if wire_type == 5:
        return tag + (number_value & (2**32 - 1)).to_bytes(4, "little")
    return tag + _varint(len(payload)) + payload


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
def plausible_parameters(draw: st.DrawFn, name: str) -> str:
    fields = PLAUSIBLE.get(name)
    if not fields:
        return draw(parameter_texts)
    pushed = draw(st.sampled_from([None, *fields]))
    params = {}
    for key, (valid, edge) in fields.items():
        if key == pushed:
            params[key] = draw(edge)
        elif draw(st.booleans()):
            params[key] = draw(valid)
    return json.dumps(params)


@st.composite
def setup_requests(draw: st.DrawFn) -> pb.MLSetupRequest:
    # Mostly known names with plausible parameters, so that fuzzing reaches user code, not only validation.
    def mostly(usual: st.SearchStrategy[str], wild: st.SearchStrategy[str]) -> str:
        return draw(usual if draw(st.integers(0, 7)) else wild)

    loader = mostly(st.sampled_from(LOADERS), loader_names)
    model = mostly(st.sampled_from(MODELS), model_names)
    return pb.MLSetupRequest(
        dataloader_name=loader,
        dataloader_parameters=mostly(plausible_parameters(loader), parameter_texts),
        model_name=model,
        model_parameters=mostly(plausible_parameters(model), parameter_texts),
    )


@settings(FUZZ, max_examples=100)
@given(request=setup_requests(), extra=unknown_fields)
def test_fuzz_mlsetup(setup_target: Learner, request: pb.MLSetupRequest, extra: bytes) -> None:
    before = setup_target.status()
    code, details = raw_unary(setup_target, "MLSetup", request.SerializeToString() + extra)
    assert code not in BAD_CODES, details
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
    proposal_id=texts,
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
    assert code not in BAD_CODES, details
    if method != "AcceptProposal":
        assert code == grpc.StatusCode.OK, details
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
        "structure": draw(st.sampled_from(["dict", "list", "tuple", "array"]) | texts),
        "names": names,
        "extra": extra,
    }
    arrays = {name: tensors[name] for name in names}
    return safetensors.numpy.save(arrays, metadata={"colearn.layout": json.dumps(layout)})


@st.composite
def weight_streams(draw: st.DrawFn, good: bytes) -> list[pb.WeightsPart]:
    source = draw(st.sampled_from(["random", "good", "mutated", "truncated", "relabelled", "relabelled"]))
    if source == "relabelled":
        data = draw(relabelled(good))
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
        proposal_id=draw(texts), encoding=mostly(st.just("safetensors"), texts), sha256=sha
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
    assert code not in BAD_CODES, details
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
    part.header.CopyFrom(pb.WeightsHeader(encoding="safetensors", sha256=sha256_hex(good)))
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
