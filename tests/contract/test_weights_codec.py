"""The weights codec: named arrays <-> the safetensors layout, and nothing else (never pickle)."""

from __future__ import annotations

import ast
import contextlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from colearn_contract.weights_codec import (
    TensorLayout,
    WeightsCodecError,
    bfloat16_names,
    decode_tensors,
    encode_tensors,
    sha256_hex,
)

REPO = Path(__file__).resolve().parents[2]

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
]
SHAPES = [(0,), (1,), (7,), (2, 3), (3, 0, 2), (2, 1, 3, 1)]  # 0-d: see the test below


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape, dtype=np.int64))
    if dtype == "bool":
        flat = rng.integers(0, 2, size).astype(bool)
    elif dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, size, dtype=dtype, endpoint=True)
    elif dtype == "complex64":
        flat = (rng.normal(size=size) + 1j * rng.normal(size=size)).astype(dtype)
    else:
        flat = rng.normal(size=size).astype(dtype)
    return flat.reshape(shape)


def layout_for(tensors: dict[str, np.ndarray], structure: str = "dict") -> TensorLayout:
    return TensorLayout(structure=structure, names=tuple(tensors), extra={"tensor_type": "numpy"})


def roundtrip(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    decoded, layout = decode_tensors(encode_tensors(tensors, layout_for(tensors)))
    assert layout.names == tuple(tensors)
    return decoded


def assert_same(decoded: dict[str, np.ndarray], original: dict[str, np.ndarray]) -> None:
    assert list(decoded) == list(original)
    for name, array in original.items():
        got = decoded[name]
        assert isinstance(got, np.ndarray), name
        assert got.dtype == array.dtype, (name, got.dtype, array.dtype)
        assert got.shape == array.shape, (name, got.shape, array.shape)
        np.testing.assert_array_equal(got, array, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_dtype_and_shape_round_trips(dtype: str, shape: tuple[int, ...]) -> None:
    original = {"t": sample(dtype, shape)}
    assert_same(roundtrip(original), original)


def test_zero_dimensional_arrays_keep_their_shape() -> None:
    # A scalar weight (a bias, a temperature) must come back as a 0-d array, not as shape (1,).
    original = {dtype: np.array(sample(dtype, (1,))[0], dtype=dtype) for dtype in DTYPES}
    assert all(a.shape == () for a in original.values())
    assert_same(roundtrip(original), original)


def test_many_tensors_of_mixed_dtypes_keep_their_order() -> None:
    # safetensors sorts by dtype and name internally; the codec must give the caller's order back.
    names = ["z.weight", "a.bias", "10", "2", "m", "B", "layer.0.kernel", "_"]
    original = {name: sample(DTYPES[i % len(DTYPES)], (i % 3 + 1, 2), seed=i) for i, name in enumerate(names)}
    decoded = roundtrip(original)
    assert list(decoded) == names
    assert_same(decoded, original)


def test_empty_mapping_round_trips() -> None:
    decoded, layout = decode_tensors(encode_tensors({}, TensorLayout("list", ())))
    assert decoded == {}
    assert layout.structure == "list"
    assert layout.names == ()


def test_layout_structure_and_extra_survive() -> None:
    tensors = {"0": np.arange(3.0), "1": np.ones((2, 2), np.int32)}
    layout = TensorLayout("tuple", ("0", "1"), {"tensor_type": "torch", "bfloat16": '["1"]'})
    _, back = decode_tensors(encode_tensors(tensors, layout))
    assert back == layout


@pytest.mark.parametrize(
    "make",
    [
        lambda a: np.asfortranarray(a),
        lambda a: a[:, ::2],
        lambda a: a.T,
        lambda a: a.astype(a.dtype.newbyteorder(">")),
    ],
    ids=["fortran", "strided", "transposed", "big-endian"],
)
def test_non_contiguous_and_big_endian_arrays_keep_their_values(make) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6) / 7
    view = make(base)
    decoded = roundtrip({"x": view})["x"]
    assert decoded.dtype == np.dtype(np.float32)  # native little-endian on the way back
    assert decoded.shape == view.shape
    np.testing.assert_array_equal(decoded, view)


def test_encoded_buffer_is_the_safetensors_layout() -> None:
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.int64)}
    buffer = bytes(encode_tensors(tensors, layout_for(tensors)))
    (header_len,) = struct.unpack_from("<Q", buffer, 0)
    header = json.loads(buffer[8 : 8 + header_len])
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": header["w"]["data_offsets"]}
    assert header["b"]["dtype"] == "I64"
    assert json.loads(header["__metadata__"]["colearn.layout"])["names"] == ["w", "b"]
    # Raw little-endian data: the float32 tensor's bytes are in the buffer as they are in memory.
    start, end = header["w"]["data_offsets"]
    assert buffer[8 + header_len + start : 8 + header_len + end] == tensors["w"].astype("<f4").tobytes()
    # And the reference implementation reads it.
    loaded = safetensors.numpy.load(buffer)
    np.testing.assert_array_equal(loaded["w"], tensors["w"])


def test_sha256_hex_is_lowercase_hex_of_the_bytes() -> None:
    digest = sha256_hex(b"abc")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(memoryview(b"abc")) == digest


# --- rejections -------------------------------------------------------------------------------------------


def valid_buffer() -> bytes:
    tensors = {"w": np.arange(40, dtype=np.float64).reshape(5, 8), "b": np.ones(5, np.float32)}
    return bytes(encode_tensors(tensors, layout_for(tensors)))


def with_layout(layout: object, tensors: dict[str, np.ndarray] | None = None) -> bytes:
    tensors = {"a": np.zeros(3, np.float32)} if tensors is None else tensors
    metadata = (
        {}
        if layout is None
        else {"colearn.layout": layout if isinstance(layout, str) else json.dumps(layout)}
    )
    return safetensors.numpy.save(tensors, metadata=metadata or None)


class Exploit:
    """Unpickling this would create a marker file: the codec must never unpickle anything."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "buffer",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00" * 7, id="shorter-than-length-prefix"),
        pytest.param(struct.pack("<Q", 2**60), id="huge-header-length"),
        pytest.param(struct.pack("<Q", 5) + b"nope!", id="header-not-json"),
        pytest.param(struct.pack("<Q", 2) + b"[]", id="header-not-object"),
        pytest.param(b"PK\x03\x04" + bytes(60), id="zip-npz"),
        pytest.param(b"\x93NUMPY" + bytes(60), id="npy"),
        pytest.param(pickle.dumps({"w": [1.0, 2.0]}), id="pickle"),
        pytest.param(bytes(range(256)) * 4, id="garbage"),
    ],
)
def test_non_safetensors_bytes_are_rejected(buffer: bytes) -> None:
    with pytest.raises(WeightsCodecError):
        decode_tensors(buffer)


@pytest.mark.parametrize("cut", [1, 8, 9, 20, -1, -8, -40])
def test_truncated_buffers_are_rejected(cut: int) -> None:
    buffer = valid_buffer()
    with pytest.raises(WeightsCodecError):
        decode_tensors(buffer[:cut])


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(WeightsCodecError):
        decode_tensors(valid_buffer() + b"\x00" * 16)


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(None, id="no-metadata"),
        pytest.param("not json", id="layout-not-json"),
        pytest.param("null", id="layout-null"),
        pytest.param([1, 2], id="layout-a-list"),
        pytest.param({"names": ["a"]}, id="no-structure"),
        pytest.param({"structure": "dict"}, id="no-names"),
        pytest.param({"structure": "dict", "names": 3}, id="names-not-a-list"),
        pytest.param({"structure": "dict", "names": ["b"]}, id="names-do-not-match"),
        pytest.param({"structure": "dict", "names": []}, id="names-missing-one"),
        pytest.param({"structure": "dict", "names": ["a", "a"]}, id="duplicate-names"),
        pytest.param({"structure": "dict", "names": ["a", "extra"]}, id="extra-name"),
        pytest.param({"structure": "dict", "names": ["a"], "extra": [1]}, id="extra-not-a-mapping"),
    ],
)
def test_buffers_without_the_colearn_layout_are_rejected(layout: object) -> None:
    with pytest.raises(WeightsCodecError):
        decode_tensors(with_layout(layout))


def test_pickle_payload_is_rejected_without_running_it(tmp_path: Path) -> None:
    exploit = Exploit()
    exploit.marker = tmp_path / "pwned"
    payload = pickle.dumps(exploit)
    with pytest.raises(WeightsCodecError):
        decode_tensors(payload)
    assert not exploit.marker.exists()


def test_layout_names_must_match_the_tensors_when_encoding() -> None:
    tensors = {"a": np.zeros(2), "b": np.zeros(2)}
    with pytest.raises(WeightsCodecError):
        encode_tensors(tensors, TensorLayout("dict", ("b", "a")))
    with pytest.raises(WeightsCodecError):
        encode_tensors(tensors, TensorLayout("dict", ("a",)))


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.array([1 + 2j], np.complex128), id="complex128"),
        pytest.param(np.array(["a", "b"]), id="unicode"),
        pytest.param(np.array([object(), 1], dtype=object), id="object"),
        pytest.param(np.array([b"x"]), id="bytes"),
        pytest.param(np.array(["2020-01-01"], dtype="datetime64[D]"), id="datetime"),
    ],
)
def test_unsupported_dtypes_are_refused_with_a_codec_error(array: np.ndarray) -> None:
    with pytest.raises(WeightsCodecError):
        encode_tensors({"x": array}, TensorLayout("dict", ("x",)))


def test_no_product_module_uses_pickle() -> None:
    """Weights are never pickled: no module of the contract or the learner imports a pickle-based loader."""
    forbidden_modules = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
    offenders = []
    roots = [REPO / "proto" / "colearn_contract", REPO / "services" / "learner"]
    files = [p for root in roots for p in root.rglob("*.py") if "_pb2" not in p.name]
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                offenders += [(path, a.name) for a in node.names if a.name.split(".")[0] in forbidden_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in forbidden_modules:
                offenders.append((path, node.module))
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    offenders.append((path, "allow_pickle"))
            elif isinstance(node, ast.Attribute) and node.attr in {"loads", "load"}:
                base = node.value
                if isinstance(base, ast.Name) and base.id == "torch":
                    offenders.append((path, "torch.load"))
    assert offenders == []


# --- property: any supported array mapping round-trips ---------------------------------------------------

_names = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=8)
_arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype=dtype,
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        elements=None if dtype in ("bool",) or dtype.startswith(("int", "uint")) else {"allow_nan": False},
    )
)


@settings(max_examples=75, deadline=None, database=None)
@given(st.dictionaries(_names, _arrays, max_size=6))
def test_property_any_mapping_of_arrays_round_trips(tensors: dict[str, np.ndarray]) -> None:
    assert_same(roundtrip(tensors), tensors)


# --- the in-place layout against the safetensors library -------------------------------------------------


@settings(max_examples=75, deadline=None, database=None)
@given(st.dictionaries(_names, _arrays, max_size=6))
def test_property_the_library_reads_what_the_codec_writes(tensors: dict[str, np.ndarray]) -> None:
    loaded = safetensors.numpy.load(bytes(encode_tensors(tensors, layout_for(tensors))))
    assert_same({name: loaded[name] for name in tensors}, tensors)


@settings(max_examples=75, deadline=None, database=None)
@given(st.dictionaries(_names, _arrays, max_size=6))
def test_property_the_codec_reads_what_the_library_writes(tensors: dict[str, np.ndarray]) -> None:
    metadata = {"colearn.layout": layout_for(tensors).to_json()}
    buffer = safetensors.numpy.save(dict(tensors), metadata=metadata)
    assert_same(decode_tensors(buffer)[0], tensors)


def test_decoded_arrays_are_read_only_views_of_the_buffer() -> None:
    tensors = {"w": np.arange(1000, dtype=np.float32), "b": np.arange(7, dtype=np.int64)}
    buffer = encode_tensors(tensors, layout_for(tensors))
    decoded, _ = decode_tensors(buffer)
    backing = np.frombuffer(buffer, np.uint8)
    for array in decoded.values():
        assert np.shares_memory(array, backing)  # no copy was made
        assert not array.flags.writeable  # nobody can change a buffer whose sha256 is known
    assert buffer.readonly


def test_tensors_are_aligned_to_their_item_size() -> None:
    tensors = {"a": np.ones(3, np.int8), "b": np.ones(5, np.float64), "c": np.ones(3, np.float16)}
    for array in decode_tensors(encode_tensors(tensors, layout_for(tensors)))[0].values():
        assert array.flags.aligned


def raw_layout(header: dict, data: bytes, pad: bool = True) -> bytes:
    head = json.dumps(header).encode()
    if pad:
        head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


_META = {"__metadata__": {"colearn.layout": json.dumps({"structure": "dict", "names": ["a", "b"]})}}


@pytest.mark.parametrize(
    ("entries", "data"),
    [
        pytest.param({"a": [0, 8], "b": [12, 20]}, bytes(20), id="gap"),
        pytest.param({"a": [0, 8], "b": [4, 12]}, bytes(12), id="overlap"),
        pytest.param({"a": [8, 16], "b": [8, 16]}, bytes(16), id="not-from-zero"),
        pytest.param({"a": [0, 8], "b": [8, 15]}, bytes(15), id="size-not-shape"),
        pytest.param({"a": [0, 8], "b": [8, 16]}, bytes(24), id="trailing-data"),
        pytest.param({"a": [8, 0], "b": [0, 8]}, bytes(16), id="reversed-offsets"),
    ],
)
def test_offsets_that_the_library_refuses_are_refused(entries: dict, data: bytes) -> None:
    header = dict(_META)
    header.update({n: {"dtype": "F32", "shape": [2], "data_offsets": o} for n, o in entries.items()})
    with pytest.raises(WeightsCodecError):
        decode_tensors(raw_layout(header, data))
    with pytest.raises(Exception):  # noqa: B017 - the reference refuses it too
        safetensors.numpy.load(raw_layout(header, data))


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}, id="unknown-dtype"),
        pytest.param({"dtype": 3, "shape": [2], "data_offsets": [0, 8]}, id="dtype-not-text"),
        pytest.param({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, id="negative-dim"),
        pytest.param({"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}, id="bool-dim"),
        pytest.param({"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}, id="shape-not-list"),
        pytest.param({"dtype": "F32", "shape": [2], "data_offsets": [0]}, id="one-offset"),
        pytest.param({"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}, id="float-offset"),
        pytest.param({"dtype": "F32", "shape": [2]}, id="no-offsets"),
        pytest.param("F32", id="entry-not-object"),
    ],
)
def test_malformed_tensor_entries_are_refused(entry: object) -> None:
    header = {"__metadata__": {"colearn.layout": json.dumps({"structure": "dict", "names": ["a"]})}}
    header["a"] = entry
    with pytest.raises(WeightsCodecError, match="tensor 'a'"):
        decode_tensors(raw_layout(header, bytes(8)))


@pytest.mark.parametrize("metadata", [[1], {"k": 1}, "text"], ids=["list", "non-string-value", "string"])
def test_metadata_must_map_strings_to_strings(metadata: object) -> None:
    with pytest.raises(WeightsCodecError, match="__metadata__"):
        decode_tensors(raw_layout({"__metadata__": metadata}, b""))


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=64), st.integers(0, 200), st.integers(0, 255))
def test_fuzz_damaged_buffers_raise_only_codec_errors(noise: bytes, at: int, byte: int) -> None:
    """Any change to a valid buffer either still decodes (a changed data byte) or raises the codec's
    error: never another exception, and never a read outside the buffer."""
    buffer = bytearray(valid_buffer())
    if at < len(buffer):
        buffer[at] = byte
    for candidate in (bytes(buffer), bytes(buffer) + noise, bytes(buffer[: len(buffer) - len(noise)])):
        with contextlib.suppress(WeightsCodecError):
            decode_tensors(candidate)


# --- limits: dimensions, sizes, nesting and echoes ---------------------------------------------------------

DEEP = 100_000


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _layout_json(structure: str = "dict", names: tuple[str, ...] = ("a",), extra: str = "{}") -> str:
    return f'{{"structure": "{structure}", "names": {json.dumps(list(names))}, "extra": {extra}}}'


def _with_raw_header(head: str, data: bytes = b"") -> bytes:
    encoded = head.encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        pytest.param([1] * 65, "65 dimensions; at most 64", id="65-dimensions"),
        pytest.param([1] * 1000, "1000 dimensions; at most 64", id="1000-dimensions"),
        pytest.param([0, 10**30], "non-zero dimensions", id="zero-by-10e30"),
        pytest.param([0, 2**62, 2**62], "non-zero dimensions", id="zero-by-2e62-by-2e62"),
        pytest.param([0, 2**63], "non-zero dimensions", id="zero-by-2e63"),
    ],
)
def test_shapes_no_array_can_have_are_refused_naming_the_limit(shape: list[int], message: str) -> None:
    header = {"__metadata__": {"colearn.layout": _layout_json()}}
    header["a"] = {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
    with pytest.raises(WeightsCodecError, match=message):
        decode_tensors(raw_layout(header, b""))


def test_the_largest_shapes_numpy_allows_still_decode() -> None:
    header = {"__metadata__": {"colearn.layout": _layout_json(names=("a", "b"))}}
    header["a"] = {"dtype": "U8", "shape": [0, 2**62], "data_offsets": [0, 0]}
    header["b"] = {"dtype": "F32", "shape": [1] * 64, "data_offsets": [0, 4]}
    tensors, _ = decode_tensors(raw_layout(header, bytes(4)))
    assert tensors["a"].shape == (0, 2**62) and tensors["b"].ndim == 64


@pytest.mark.parametrize(
    "buffer",
    [
        pytest.param(_with_raw_header(_deep(DEEP)), id="header"),
        pytest.param(_with_raw_header(f'{{"__metadata__": {_deep(DEEP)}}}'), id="header-metadata"),
        pytest.param(_with_raw_header(f'{{"a": {_deep(DEEP)}}}'), id="tensor-entry"),
        pytest.param(
            raw_layout({"__metadata__": {"colearn.layout": _deep(DEEP)}}, b""), id="layout-metadata"
        ),
        pytest.param(
            raw_layout(
                {"__metadata__": {"colearn.layout": _layout_json(extra=f'{{"x": {_deep(70)}}}')}}, b""
            ),
            id="layout-nested-70",
        ),
    ],
)
def test_json_nested_too_deep_is_refused_naming_the_limit(buffer: bytes) -> None:
    with pytest.raises(WeightsCodecError, match="nests deeper than 64 levels"):
        decode_tensors(buffer)


def test_a_bfloat16_list_nested_too_deep_is_refused_naming_the_limit() -> None:
    layout = TensorLayout("dict", ("a",), {"tensor_type": "torch", "bfloat16": _deep(DEEP)})
    tensors = {"a": np.zeros(2, np.int16)}
    with pytest.raises(WeightsCodecError, match="nests deeper than 64 levels"):
        bfloat16_names(tensors, layout)


def test_errors_repeat_a_long_name_only_in_part() -> None:
    name = "n" * 100_000
    header = {"__metadata__": {"colearn.layout": _layout_json(names=(name,))}}
    header[name] = {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}
    with pytest.raises(WeightsCodecError) as caught:
        decode_tensors(raw_layout(header, bytes(4)))
    assert "nnnn" in str(caught.value) and len(str(caught.value)) < 1000


_dimension = st.one_of(st.integers(0, 4), st.integers(0, 2**70), st.sampled_from([2**62, 2**63, 10**30]))
_entry_values = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "U8", "I64", "BOOL", "F99", 3]),
        "shape": st.lists(_dimension, max_size=80),
        "data_offsets": st.lists(st.integers(0, 64), min_size=2, max_size=2),
    }
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    entries=st.dictionaries(st.text(max_size=300), _entry_values, max_size=3),
    nesting=st.integers(0, 3000),
    where=st.sampled_from(["none", "metadata", "layout", "entry", "bfloat16"]),
    data=st.binary(max_size=64),
)
def test_fuzz_crafted_headers_raise_only_codec_errors_with_short_messages(
    entries: dict, nesting: int, where: str, data: bytes
) -> None:
    """Headers built field by field, as a hostile peer would: dimension counts up to 80, dimensions up to
    2^70, long names, JSON nested thousands of levels deep anywhere. Only the codec's error comes out,
    and it never repeats more than a bounded part of the input."""
    extra = {"bfloat16": _deep(nesting)} if where == "bfloat16" else {}
    layout = {"structure": "dict", "names": list(entries), "extra": extra}
    parts = [json.dumps(f"{n}") + ": " + json.dumps(e) for n, e in entries.items()]
    if where == "entry" and entries:
        parts[0] = parts[0].rsplit('"data_offsets"', 1)[0] + f'"data_offsets": {_deep(nesting)}}}'
    metadata = {"colearn.layout": _deep(nesting) if where == "layout" else json.dumps(layout)}
    meta_text = _deep(nesting) if where == "metadata" else json.dumps(metadata)
    head = "{" + ", ".join([f'"__metadata__": {meta_text}', *parts]) + "}"
    try:
        tensors, decoded_layout = decode_tensors(_with_raw_header(head, data))
        bfloat16_names(tensors, decoded_layout)
    except WeightsCodecError as exc:
        assert len(str(exc)) < 2000
