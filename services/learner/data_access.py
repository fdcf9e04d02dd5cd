"""Keeps a dataloader's ``location`` inside the learner's data root.

Resolution follows symlinks before the check, so neither ``..`` nor a link that points out of the root
can reach files the operator did not hand to this learner.
"""

from __future__ import annotations

import json
from pathlib import Path

from colearn_learner.errors import DataAccessDeniedError, InvalidParametersError

LOCATION_KEY = "location"


def confine_location(dataset_params: str, data_root: Path | None) -> str:
    """Returns the params with ``location`` resolved under ``data_root``, or refuses them."""
    if data_root is None:
        return dataset_params
    try:
        params = json.loads(dataset_params or "{}")
    except ValueError as exc:
        raise InvalidParametersError(f"dataloader parameters are not valid JSON: {exc}") from None
    if not isinstance(params, dict) or LOCATION_KEY not in params:
        return dataset_params
    location = params[LOCATION_KEY]
    if not isinstance(location, str):
        raise InvalidParametersError("dataloader parameter 'location' must be a string path")
    try:
        root = data_root.resolve()
        resolved = (root / location).resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a symlink loop, a name too long
        raise InvalidParametersError(f"location {location!r} is not a usable path: {exc}") from None
    if not resolved.is_relative_to(root):
        raise DataAccessDeniedError(f"location {location!r} is outside this learner's data root {root}")
    params[LOCATION_KEY] = str(resolved)
    return json.dumps(params)
