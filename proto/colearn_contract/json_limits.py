"""JSON from a peer, read within limits: nesting depth, and how much of a bad value an error repeats.

Python's ``json`` parser recurses once per nesting level, so a peer that sends ``[[[[...]]]]`` 100,000
levels deep makes it raise ``RecursionError``, which is no ``ValueError`` and would surface as a fault of
the receiver. Every JSON text that arrives from a peer (a weights header, its layout metadata, model and
dataloader parameters) is read here instead, and anything nested deeper than ``MAX_DEPTH`` is refused
with an error that names the limit. Real weights headers and parameters nest two or three levels.

Errors repeat what the client sent only in part (``shown``): a 1 MiB proposal id echoed into a status
message would push the status past gRPC's 16 KiB metadata limit, and the client would see
``RESOURCE_EXHAUSTED`` instead of the real answer.
"""

from __future__ import annotations

import json
from typing import Any

#: The deepest nesting accepted in any JSON a peer sends.
MAX_DEPTH = 64
#: How many characters of a client's value an error message repeats.
MAX_ECHO = 200


class JsonLimitError(ValueError):
    """JSON that is not valid, or nests deeper than ``MAX_DEPTH``."""


def loads(text: str | bytes, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses deep nesting (and anything else unparsable) with ``JsonLimitError``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonLimitError(f"{what} nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise JsonLimitError(f"{what} is not valid JSON: {shown(str(exc))}") from None
    if depth(value) > max_depth:
        raise JsonLimitError(f"{what} nests deeper than {max_depth} levels")
    return value


def depth(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in children)
    return deepest


def shown(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def quoted(value: object, limit: int = MAX_ECHO) -> str:
    """A client's value as ``repr`` shows it (strings in quotes), cut to ``limit`` characters."""
    return shown(repr(value), limit)
