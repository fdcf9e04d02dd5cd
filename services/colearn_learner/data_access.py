"""Checks a dataloader's ``location``, and keeps it inside the learner's data root.

A location must be a path this system can name: no NUL byte, no component longer than ``NAME_MAX``
bytes, at most ``PATH_MAX`` bytes in all. Anything else would surface deep in a dataloader as an
``OSError`` ("File name too long"), which is no fault of the learner.

With a data root, resolution follows symlinks before the check, so neither ``..`` nor a link that points
out of the root can reach files the operator did not hand to this learner.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from colearn_contract.json_limits import quoted
from colearn_learner.errors import DataAccessDeniedError, InvalidParametersError

LOCATION_KEY = "location"
#: Linux's limits on one path component and on a whole path, in bytes.
NAME_MAX = 255
PATH_MAX = 4096


def confine_location(dataset_params: dict[str, Any], data_root: Path | None) -> dict[str, Any]:
    """Returns the params with ``location`` checked and, under a data root, resolved within it; refuses
    a location that is not a usable path (INVALID_ARGUMENT) or lies outside the root (PERMISSION_DENIED)."""
    if LOCATION_KEY not in dataset_params:
        return dataset_params
    location = dataset_params[LOCATION_KEY]
    if not isinstance(location, str):
        raise InvalidParametersError("dataloader parameter 'location' must be a string path")
    _check_nameable(location)
    if data_root is None:
        return dataset_params
    try:
        root = data_root.resolve()
        resolved = (root / location).resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # a symlink loop, a name too long once resolved
        raise InvalidParametersError(f"location {quoted(location)} is not a usable path: {exc}") from None
    if not resolved.is_relative_to(root):
        raise DataAccessDeniedError(f"location {quoted(location)} is outside this learner's data root {root}")
    return {**dataset_params, LOCATION_KEY: str(resolved)}


def _check_nameable(location: str) -> None:
    try:
        encoded = os.fsencode(location)
    except UnicodeEncodeError:
        raise InvalidParametersError(
            f"location {quoted(location)} holds characters no file name can hold"
        ) from None
    if b"\0" in encoded:
        raise InvalidParametersError(f"location {quoted(location)} holds a NUL byte")
    if len(encoded) > PATH_MAX:
        raise InvalidParametersError(
            f"location {quoted(location)} is {len(encoded)} bytes long; a path holds at most {PATH_MAX}"
        )
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > NAME_MAX:
        raise InvalidParametersError(
            f"location {quoted(location)} has a component of {longest} bytes; "
            f"a file name holds at most {NAME_MAX}"
        )
