"""Model and dataloader parameters: JSON object text in the Python API, a ``Struct`` on the wire.

colearn's API hands parameters around as JSON text (``setup_ml(dataset_loader_parameters=json.dumps(...))``,
``MliFactory.get_mli(..., dataset_params: str)``), and the Python API keeps that. On the wire they are a
``Struct``, so that grpcurl users write ``{"model_parameters": {"steps_per_epoch": 20}}`` and not escaped
JSON inside a string.

A ``Struct`` carries every number as a double. Whole numbers within 2^53 (exact in a double) are read
back as integers, so ``{"shard": 1}`` arrives as ``1`` and a parameter typed ``int`` takes it; a float
parameter takes an integer too. Parameters arriving from a peer nest at most ``json_limits.MAX_DEPTH``
levels (protobuf itself refuses a ``Struct`` deeper than 100).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from colearn_contract import json_limits

_EXACT = 2**53


class ParametersError(ValueError):
    """Parameters that are not a JSON object, nest too deep, or hold a value JSON cannot carry."""


def parse_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from ``text`` ("" counts as ``{}``), or ``ParametersError`` naming what is wrong; that
    includes a whole number beyond 2^53, which a ``Struct`` would carry as a double and deliver changed."""
    try:
        value = json_limits.loads(text or "{}", what)
    except json_limits.JsonLimitError as exc:
        raise ParametersError(str(exc)) from None
    if not isinstance(value, dict):
        raise ParametersError(f"{what} must be a JSON object, not {type(value).__name__}")
    _check_exact(value, what)
    return value


def to_struct(params: Mapping[str, Any], what: str = "parameters") -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    try:
        plain = json.loads(json.dumps(params, allow_nan=False, default=str))
    except (ValueError, TypeError) as exc:
        raise ParametersError(f"{what} cannot travel as JSON: {json_limits.shown(str(exc))}") from None
    struct.update(plain)
    return struct


def _check_exact(value: Any, where: str) -> None:
    pending = [(value, where)]
    while pending:
        value, where = pending.pop()
        if isinstance(value, dict):
            pending.extend((item, f"{where}.{key}") for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _EXACT:
            raise ParametersError(
                f"{json_limits.shown(where)} is a whole number beyond 2^53, which travels as a double and "
                "would arrive changed; pass it as a string"
            )


def struct_from_json(text: str, what: str) -> struct_pb2.Struct:
    """The wire form of parameters given as JSON text."""
    return to_struct(parse_object(text, what), what)


def from_struct(struct: struct_pb2.Struct, what: str = "parameters") -> dict[str, Any]:
    """Plain Python values, with whole-number doubles as integers. ``ParametersError`` for a NaN or an
    infinity (a ``Struct`` can hold them; JSON cannot) and for nesting beyond ``json_limits.MAX_DEPTH``."""
    value = _plain(struct, what, 1)
    assert isinstance(value, dict)
    return value


def _plain(value: Any, where: str, depth: int) -> Any:
    if isinstance(value, struct_pb2.Struct | struct_pb2.ListValue):
        if depth > json_limits.MAX_DEPTH:
            raise ParametersError(
                f"{json_limits.shown(where)} nests deeper than {json_limits.MAX_DEPTH} levels"
            )
        if isinstance(value, struct_pb2.Struct):
            return {key: _plain(value[key], f"{where}.{key}", depth + 1) for key in value}
        return [_plain(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParametersError(f"{json_limits.shown(where)} is {value}, which JSON cannot carry")
        if value.is_integer() and abs(value) <= _EXACT:
            return int(value)
    return value
