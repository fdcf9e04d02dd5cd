"""The chart README's values table, made from values.yaml's own comments, so that the two cannot drift.

Each key with a comment directly above it becomes a row: its dotted path, its default and the comment. A
key without one is documented by its children's rows. tests/helm checks that every value has a row (for
itself or a parent) and that the README holds exactly this table.

    python helm/values_table.py          # prints the table (paste it into helm/colearn-fleet/README.md)
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
VALUES = REPO_ROOT / "helm" / "colearn-fleet" / "values.yaml"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*):(?:\s|$)")


@dataclass(frozen=True)
class Row:
    path: str
    default: Any
    description: str


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted path, comment) for every mapping key of values.yaml; the comment is "" when there is none.

    values.yaml is block-style YAML: a key's depth is its indentation, list items ("- ") belong to the key
    above them, and a comment documents the key right below it ("# -- " opens a description)."""
    keys: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if not stripped or stripped.startswith("- ") or match is None:
            comment = []
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key")))
        description = " ".join(comment)
        keys.append((".".join(k for _, k in stack), description.removeprefix("-- ").strip()))
        comment = []
    return keys


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    """Every value that is not a non-empty mapping: what a user sets."""
    if isinstance(values, dict) and values:
        return [p for key, value in values.items() for p in leaf_paths(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def lookup(values: Any, path: str) -> Any:
    for key in path.split("."):
        values = values[key]
    return values


def rows(values_file: Path = VALUES) -> list[Row]:
    text = values_file.read_text()
    values = yaml.safe_load(text)
    return [Row(path, lookup(values, path), comment) for path, comment in documented_keys(text) if comment]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(values_file: Path = VALUES) -> str:
    """A group (a row whose children have rows of their own) shows no default: its children do."""
    found = rows(values_file)
    groups = {row.path for row in found if any(r.path.startswith(row.path + ".") for r in found)}
    lines = ["| value | default | what it does |", "|---|---|---|"]
    for row in found:
        default = "" if row.path in groups else f"`{_cell(json.dumps(row.default, separators=(', ', ': ')))}`"
        lines.append(f"| `{row.path}` | {default} | {_cell(row.description)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
