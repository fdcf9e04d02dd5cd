"""What the e2e stage measures for its closing note: image sizes, up -> all healthy, the whole stage.

Not a test module: the conftest prints these at the end and writes them to ``.e2e/timings.json``.
"""

from __future__ import annotations

import time
from typing import Any

STARTED = time.monotonic()
TIMINGS: dict[str, Any] = {}


def record(**values: Any) -> None:
    TIMINGS.update({k: round(v, 1) if isinstance(v, float) else v for k, v in values.items()})
