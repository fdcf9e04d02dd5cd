"""Model families: installed packages that name a ``ModelRegistry`` in the ``colearn.models`` entry-point
group. The built-in ones (``colearn_models``) are declared in the project's ``pyproject.toml``; a family of
your own is a package holding a ``ModelRegistry`` and one line in its own ``pyproject.toml``::

    [project.entry-points."colearn.models"]
    my_family = "my_package.my_family:registry"
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from colearn_learner.registry import ModelRegistry

GROUP = "colearn.models"


class ModelFamilyError(ValueError):
    """A family that is not installed, or one that cannot be loaded: one line naming it."""


def installed() -> dict[str, EntryPoint]:
    """The installed families by name."""
    return {entry.name: entry for entry in entry_points(group=GROUP)}


def load(names: Iterable[str] | None = None) -> ModelRegistry:
    """One registry holding the named families (every installed one when ``names`` is empty or None)."""
    available = installed()
    wanted = list(names or sorted(available))
    unknown = [name for name in wanted if name not in available]
    if unknown:
        valid = ", ".join(sorted(available)) or "(none installed)"
        raise ModelFamilyError(f"unknown model family {', '.join(map(repr, unknown))}; installed: {valid}")
    registry = ModelRegistry()
    for name in wanted:
        where = f"model family {name!r} ({available[name].value})"
        try:
            family = available[name].load()
        except Exception as exc:
            raise ModelFamilyError(f"cannot load {where}: {exc}") from exc
        if not isinstance(family, ModelRegistry):
            raise ModelFamilyError(f"{where} is a {type(family).__name__}, not a ModelRegistry")
        registry.include(family)
    return registry
