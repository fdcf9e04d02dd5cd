"""The learner settings tables of docs/settings.md and helm/colearn-fleet/README.md, made from ``Settings``.

Each table sits between two marker comments in its file and is never edited by hand: change a field of
``colearn_learner.settings.Settings`` (its default, limits or description), or the chart's learner
``env`` (templates/statefulset.yaml), then run this script.

    python docs/settings_tables.py           # rewrites both tables in place
    python docs/settings_tables.py --check   # exit 1, naming each file whose table differs

``make test`` runs the check (tests/learner/test_settings_sources.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from colearn_learner.settings import Settings, default_text, env_variable, is_list, limits_text

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_DOC = REPO_ROOT / "docs" / "settings.md"
CHART_README = REPO_ROOT / "helm" / "colearn-fleet" / "README.md"
STATEFULSET = REPO_ROOT / "helm" / "colearn-fleet" / "templates" / "statefulset.yaml"
COMMAND = "python docs/settings_tables.py"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(name: str) -> str:
    field_info = Settings.model_fields[name]
    text = default_text(field_info)
    if text is None:
        return "empty" if is_list(field_info) else "unset"
    return f"`{text}`"


def settings_doc_table() -> str:
    """Every setting: its variable, default, limits, and what it does."""
    lines = ["| variable | default | limits | meaning |", "|---|---|---|---|"]
    for name, field_info in Settings.model_fields.items():
        meaning = field_info.description or ""
        if is_list(field_info):
            meaning += "; comma-separated (the flag is repeated instead)"
        limits = limits_text(field_info) or ""
        lines.append(f"| `{env_variable(name)}` | {_default(name)} | {limits} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


# -- what the chart sets: read from the learner container's env in the StatefulSet template ---------------

_BLOCK = re.compile(r"\{\{-?\s*(if|with|range|else|end)\b([^}]*?)-?\}\}")
_VALUES = re.compile(r"\.Values\.([A-Za-z0-9_.]+)")


@dataclass
class ChartSource:
    """How the chart sets one variable: a value's path, a literal or a Secret, under some conditions."""

    source: str
    conditions: list[str] = field(default_factory=list)

    def text(self) -> str:
        conditions = [c for c in self.conditions if c not in self.source]  # a Secret's name is its own
        return self.source + (f"; only with {' and '.join(conditions)}" if conditions else "")


def chart_sources(template: str) -> dict[str, ChartSource]:
    """``COLEARN_*`` variable -> how the template sets it. The template is block-style YAML with Helm
    actions on lines of their own: ``if``/``with`` push a condition, ``end`` pops it."""
    found: dict[str, ChartSource] = {}
    blocks: list[tuple[str, str]] = []
    current: str | None = None
    for line in template.splitlines():
        for kind, expression in _BLOCK.findall(line):
            if kind == "end":
                blocks.pop()
            elif kind != "else":
                blocks.append((kind, expression.strip()))
        stripped = line.strip()
        name = re.fullmatch(r"- name: (COLEARN_\w+)", stripped)
        if name:
            current = name.group(1)
            conditions = [
                f"`{expression.replace('.Values.', '')}`" for kind, expression in blocks if kind == "if"
            ]
            found[current] = ChartSource("", conditions)
            continue
        if current is None:
            continue
        entry = found[current]
        if stripped.startswith("value:"):
            value = stripped.removeprefix("value:").strip()
            paths = _VALUES.findall(value)
            withs = [_VALUES.findall(expression) for kind, expression in blocks if kind == "with"]
            if paths:
                entry.source = f"`{paths[0]}`"
            elif "{{" in value and withs and withs[-1]:
                entry.source = f"`{withs[-1][0]}`"
            else:
                entry.source = f"`{value}`"
            current = None
        elif stripped.startswith(("name:", "key:")) and _VALUES.search(stripped):
            part = stripped.split(":", 1)[0]
            path = _VALUES.search(stripped).group(1)  # type: ignore[union-attr]
            entry.source += ("the Secret named in " if part == "name" else ", key ") + f"`{path}`"
        elif stripped.startswith("- "):
            current = None
    return found


def chart_table(template_file: Path = STATEFULSET) -> str:
    """Every setting: the learner's default and what the chart sets it to (else ``learner.extraEnv``)."""
    sources = chart_sources(template_file.read_text())
    lines = ["| variable | learner default | set by the chart |", "|---|---|---|"]
    for name in Settings.model_fields:
        variable = env_variable(name)
        chart = sources[variable].text() if variable in sources else "no (`learner.extraEnv` can)"
        lines.append(f"| `{variable}` | {_default(name)} | {_cell(chart)} |")
    return "\n".join(lines) + "\n"


# -- the tables in their files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    path: Path
    marker: str
    render: Callable[[], str]

    @property
    def start(self) -> str:
        return f"<!-- {self.marker}: generated by `{COMMAND}` from Settings; do not edit by hand -->\n"

    @property
    def end(self) -> str:
        return f"<!-- end of {self.marker} -->\n"

    def expected(self, text: str) -> str:
        """The file's text with this table as it must be."""
        if text.count(self.start) != 1 or text.count(self.end) != 1:
            raise ValueError(f"{self.path.name} needs the lines {self.start.strip()} and {self.end.strip()}")
        before, rest = text.split(self.start)
        _, after = rest.split(self.end)
        return f"{before}{self.start}\n{self.render()}\n{self.end}{after}"  # blank lines: a table of its own


TABLES = (
    Table(SETTINGS_DOC, "settings table", settings_doc_table),
    Table(CHART_README, "learner settings table", chart_table),
)


def stale() -> list[Path]:
    """The files whose table is not the one made from Settings now."""
    return [t.path for t in TABLES if t.expected(t.path.read_text()) != t.path.read_text()]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        files = stale()
        for path in files:
            print(f"{path.relative_to(REPO_ROOT)}: the settings table is stale; run `{COMMAND}`")
        return 1 if files else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for table in TABLES:
        text = table.path.read_text()
        table.path.write_text(table.expected(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
