"""Data tools behind ``colearn-data``: split original dataset files into one folder per learner, or write
small synthetic files in the same original formats (for tests, and for users to try a family).

A model family registers one :class:`DataTool` under its dataloader's tag
(``ModelRegistry.register_data_tool``); ``colearn-data`` finds them through the installed families.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: split(source, n_learners, out, seed) -> the learner folders it wrote, in order.
SplitFn = Callable[[Path, int, Path, int], list[Path]]
#: fixtures(out, seed) -> the folder of original-format files, to pass as ``--source`` to split.
FixturesFn = Callable[[Path, int], Path]


class DataToolError(Exception):
    """A user's mistake (a missing file, a bad count): reported as one line, never a traceback."""


@dataclass(frozen=True)
class DataTool:
    tag: str
    source: str  # what ``--source`` must hold, for help and error messages
    split: SplitFn
    fixtures: FixturesFn
