"""One JSON line per measured figure: the figure and its baseline, measured in the same run, and the target.

Every script prints its figures with ``emit``; ``run_all.py`` reads the lines back. A line holds the name,
unit, median/min/max over ``runs`` repetitions, the baseline's name and median (and range), the ratio
figure/baseline, the target as text and whether the median meets it.
"""

from __future__ import annotations

import argparse
import json
import operator
import statistics
import sys
from collections.abc import Sequence
from typing import Any

_OPS = {"<=": operator.le, ">=": operator.ge}


def summary(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        raise ValueError("no samples")
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def target_met(value: float, target: str) -> bool | None:
    """``target`` reads like ``"<= 0.6"``; the unit is the figure's own."""
    op, _, bound = target.partition(" ")
    if op not in _OPS:
        return None
    return bool(_OPS[op](value, float(bound)))


def emit(
    name: str,
    unit: str,
    samples: Sequence[float],
    *,
    baseline: str,
    baseline_samples: Sequence[float] | None = None,
    baseline_value: float | None = None,
    target: str = "",
    target_on: str = "median",
    ratio: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Prints one figure as a JSON line and returns it.

    ``target_on`` says what the target is about: the ``median`` itself, or the ``ratio`` to the baseline.
    """
    s = summary(samples)
    line: dict[str, Any] = {
        "name": name,
        "unit": unit,
        **_rounded(s),
        "runs": len(samples),
        "baseline": baseline,
    }
    if baseline_samples is not None:
        b = summary(baseline_samples)
        line.update(
            baseline_median=_round(b["median"]), baseline_min=_round(b["min"]), baseline_max=_round(b["max"]),
            baseline_runs=len(baseline_samples),
        )  # fmt: skip
        baseline_value = b["median"]
    else:
        line["baseline_median"] = None if baseline_value is None else _round(baseline_value)
    if ratio is None and baseline_value:
        ratio = s["median"] / baseline_value
    line["ratio"] = None if ratio is None else _round(ratio)
    line["target"] = target
    line["target_on"] = target_on
    checked = s["median"] if target_on == "median" else ratio
    line["met"] = None if (not target or checked is None) else target_met(checked, target)
    line.update(extra)
    print(json.dumps(line), flush=True)
    return line


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: _round(v) for k, v in values.items()}


def repetitions_parser(description: str, default_runs: int, quick_runs: int) -> argparse.ArgumentParser:
    """Every script takes ``--runs N`` and ``--quick`` (fewer repetitions), so run_all can pass them on."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=None, help=f"repetitions (default {default_runs})")
    parser.add_argument("--quick", action="store_true", help=f"fewer repetitions ({quick_runs})")
    parser.set_defaults(default_runs=default_runs, quick_runs=quick_runs)
    return parser


def runs_from(args: argparse.Namespace) -> int:
    if args.runs is not None:
        return max(1, args.runs)
    return args.quick_runs if args.quick else args.default_runs


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the JSON lines."""
    print(message, file=sys.stderr, flush=True)
