"""Data tools behind ``colearn-data``: split original dataset files into one folder per learner, or write
small synthetic files in the same original formats (for tests, and for users to try a family).

Each family module registers one :class:`DataTool` under its dataloader's tag.
"""

from __future__ import annotations

import importlib
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


DATA_TOOLS: dict[str, DataTool] = {}

MODULES = (
    "colearn_learner.datatools.mnist_idx",
    "colearn_learner.datatools.cifar10_binary",
    "colearn_learner.datatools.xray_folders",
    "colearn_learner.datatools.covid_mat",
    "colearn_learner.datatools.fraud_csv",
)


def register(tool: DataTool) -> DataTool:
    DATA_TOOLS[tool.tag] = tool
    return tool


def load_data_tools() -> dict[str, DataTool]:
    for name in MODULES:
        importlib.import_module(name)
    return DATA_TOOLS
