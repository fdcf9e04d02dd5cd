"""The safetensors layout, written into one buffer and read back as views of it: no copy per stage.

The layout is documented by the safetensors project: an 8-byte little-endian header length, a JSON header
that gives each tensor's dtype, shape and ``data_offsets`` (plus an optional ``__metadata__`` map of
strings), padded with spaces, then the raw little-endian tensors back to back, with no gaps.

Why not the library's ``save``/``load``: it builds a buffer through fresh allocations and reads one back only
from ``bytes``, copying every tensor again, where this module encodes into one ``np.empty`` buffer with one
copy of each tensor and decodes as ``np.frombuffer`` views. A round moves one proposal through an encode and
four decodes, so the difference is a large share of a big round's CPU time (BENCHMARKS.md, "Code figures").
Every check the library makes when it loads is made here as well (offsets contiguous from 0 to the end of the
buffer, sizes matching dtype x shape, known dtypes, a JSON object header), and the tests hold this module to
the library both ways: the library loads what this module writes, and this module reads what the library
writes, with equal arrays.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping

import numpy as np

from colearn_contract import json_limits
from colearn_contract.json_limits import quoted

#: safetensors' dtype codes for the numpy dtypes it supports (``safetensors.numpy``'s own table).
DTYPE_CODES: dict[np.dtype, str] = {
    np.dtype(name): code
    for name, code in (
        ("float64", "F64"),
        ("float32", "F32"),
        ("float16", "F16"),
        ("int64", "I64"),
        ("uint64", "U64"),
        ("int32", "I32"),
        ("uint32", "U32"),
        ("int16", "I16"),
        ("uint16", "U16"),
        ("int8", "I8"),
        ("uint8", "U8"),
        ("bool", "BOOL"),
        ("complex64", "C64"),
    )
}
_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
#: Item sizes of every dtype code, those numpy lacks included (files may hold them; buffers never do).
_ITEM_SIZES = {**{code: dtype.itemsize for code, dtype in _DTYPES.items()}, "BF16": 2}
_HEADER_LIMIT = 100_000_000  # the library's own cap on the JSON header
#: numpy's own limit on the dimensions of an array.
MAX_DIMENSIONS = 64
#: The largest tensor numpy can describe, in bytes (a C ``ssize_t``), counting only non-zero dimensions:
#: numpy refuses a shape whose product overflows even when another dimension is 0.
MAX_TENSOR_BYTES = np.iinfo(np.intp).max
_METADATA = "__metadata__"


class LayoutError(ValueError):
    """The bytes break a rule of the safetensors layout; the message names the rule."""


def _little_endian(name: str, array: np.ndarray) -> np.ndarray:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.newbyteorder("=") not in DTYPE_CODES:
        valid = ", ".join(str(d) for d in DTYPE_CODES)
        raise LayoutError(f"tensor {name!r} has dtype {array.dtype}; the layout holds {valid}")
    # np.require keeps 0-d arrays 0-d; the byte order is fixed in the copy into the buffer.
    return np.require(array, requirements="C")


def write(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> memoryview:
    """One read-only buffer in the safetensors layout. Tensors are placed largest item size first, as the
    library does, so that every tensor stays aligned to its item size."""
    arrays = {name: _little_endian(name, np.asarray(a)) for name, a in tensors.items()}
    order = sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n))
    header: dict[str, object] = {_METADATA: dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        array = arrays[name]
        code = DTYPE_CODES[array.dtype.newbyteorder("=")]
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    # np.empty leaves pages untouched until written, and numpy asks for huge pages on large buffers, where
    # a fresh bytes object of the same size pays a page fault per 4 KiB.
    buffer = np.empty(8 + len(head) + offset, dtype=np.uint8)
    buffer[:8] = np.frombuffer(struct.pack("<Q", len(head)), dtype=np.uint8)
    position = 8 + len(head)
    buffer[8:position] = np.frombuffer(head, dtype=np.uint8)
    for name in order:
        array = arrays[name]
        # Assigning through a little-endian view of the destination converts a big-endian source once.
        target = buffer[position : position + array.nbytes].view(array.dtype.newbyteorder("<"))
        target[...] = array.reshape(-1)
        position += array.nbytes
    buffer.flags.writeable = False
    return memoryview(buffer)


def _entry(name: str, info: object) -> tuple[np.dtype, tuple[int, ...], int, int]:
    label = quoted(name)
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise LayoutError(f"tensor {label} must have exactly dtype, shape and data_offsets")
    dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise LayoutError(f"tensor {label} has dtype {quoted(info['dtype'])}; valid: {', '.join(_DTYPES)}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise LayoutError(f"tensor {label} has shape {quoted(shape)}; a shape is a list of whole numbers")
    if len(shape) > MAX_DIMENSIONS:
        raise LayoutError(f"tensor {label} has {len(shape)} dimensions; at most {MAX_DIMENSIONS} are allowed")
    if math.prod(d for d in shape if d) > MAX_TENSOR_BYTES // dtype.itemsize:
        raise LayoutError(
            f"tensor {label} has shape {quoted(shape)}: its non-zero dimensions describe more than "
            f"{MAX_TENSOR_BYTES} bytes, the most an array can hold"
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise LayoutError(f"tensor {label} has data_offsets {quoted(offsets)}; they are [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end or end - begin != math.prod(shape) * dtype.itemsize:
        raise LayoutError(f"tensor {label}: data_offsets {quoted(offsets)} do not hold {dtype}{shape}")
    return dtype, tuple(shape), begin, end


def read(buffer: bytes | memoryview) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read-only arrays that are views of ``buffer`` (it must stay unchanged while they live), and the
    metadata. Anything but a complete, well-formed layout raises ``LayoutError``."""
    view = memoryview(buffer).cast("B")
    if len(view) < 8:
        raise LayoutError(f"{len(view)} bytes are too few for the 8-byte header length")
    (head_len,) = struct.unpack_from("<Q", view, 0)
    if head_len > _HEADER_LIMIT or 8 + head_len > len(view):
        raise LayoutError(f"header length {head_len} does not fit a buffer of {len(view)} bytes")
    try:
        header = json_limits.loads(bytes(view[8 : 8 + head_len]).decode("utf-8"), "the header")
    except UnicodeDecodeError as exc:
        raise LayoutError(f"the header is not UTF-8: {exc}") from None
    except json_limits.JsonLimitError as exc:
        raise LayoutError(str(exc)) from None
    if not isinstance(header, dict):
        raise LayoutError("the header is not a JSON object")
    metadata = header.pop(_METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise LayoutError("__metadata__ must map strings to strings")
    entries = {name: _entry(name, info) for name, info in header.items()}
    data = np.frombuffer(view, dtype=np.uint8, offset=8 + head_len)
    expected = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin != expected:
            raise LayoutError(
                f"tensor {quoted(name)} starts at {begin}, not at {expected}: offsets must be contiguous"
            )
        expected = end
    if expected != len(data):
        raise LayoutError(
            f"the tensors end at byte {expected} of {len(data)}: the buffer is incomplete or longer"
        )
    arrays = {}
    for name, (dtype, shape, begin, end) in entries.items():
        array = data[begin:end].view(dtype.newbyteorder("<")).reshape(shape)
        array.flags.writeable = False  # the buffer is hashed and may be cached: nobody writes through it
        arrays[name] = array
    return arrays, metadata


def relabelled(
    buffer: bytes | memoryview, metadata: Mapping[str, str], dtypes: Mapping[str, str] | None = None
) -> tuple[bytes, memoryview]:
    """The tensors of a layout under a new header, for writing to a file without copying the data.

    ``metadata`` replaces the buffer's metadata; ``dtypes`` gives named tensors another dtype code of the
    same item size (``BF16`` for tensors that travel as raw ``int16`` bfloat16 bits). Returns the new
    8-byte length with the header, and the buffer's data section as a view. ``buffer`` is checked first.
    """
    read(buffer)
    view = memoryview(buffer).cast("B")
    (head_len,) = struct.unpack_from("<Q", view, 0)
    header = json.loads(bytes(view[8 : 8 + head_len]).decode("utf-8"))
    header.pop(_METADATA, None)
    for name, code in (dtypes or {}).items():
        entry = header[name]
        if _DTYPES.get(entry["dtype"], np.dtype("V1")).itemsize != _ITEM_SIZES[code]:
            raise LayoutError(f"tensor {quoted(name)} is {entry['dtype']}, which cannot be relabelled {code}")
        entry["dtype"] = code
    head = json.dumps({_METADATA: dict(metadata), **header} if metadata else header, separators=(",", ":"))
    encoded = head.encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded, view[8 + head_len :]
