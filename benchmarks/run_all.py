#!/usr/bin/env python
"""Runs every benchmark script, prints their JSON lines, then a table of figures against their targets.

``make bench`` calls ``python benchmarks/run_all.py``. ``--quick`` passes fewer repetitions to every script.
Each script runs in its own process with a time limit, and starts and stops its own learner processes.
The exit status is 1 when a script fails; a missed target is reported, not an error (``--strict`` makes
it one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "bench_round_100mb.py",
    "bench_fanout.py",
    "bench_transfer.py",
    "bench_startup.py",
    "bench_scale.py",
    "bench_concurrency_models.py",
    "profile_round_100mb.py",
    "bench_durable_round.py",
)
SCRIPT_TIMEOUT_S = 900


def run_script(script: str, passed: list[str]) -> tuple[list[dict[str, Any]], int, float]:
    start = time.perf_counter()
    print(f"# {script} {' '.join(passed)}".rstrip(), file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / script), *passed],
            stdout=subprocess.PIPE, stderr=None, timeout=SCRIPT_TIMEOUT_S, check=False, cwd=HERE.parent,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        print(f"# {script} ran past {SCRIPT_TIMEOUT_S} s and was stopped", file=sys.stderr, flush=True)
        return [], 124, time.perf_counter() - start
    lines = []
    for raw in done.stdout.decode().splitlines():
        raw = raw.strip()
        if not raw.startswith("{"):
            continue
        print(raw, flush=True)
        lines.append(json.loads(raw))
    return lines, done.returncode, time.perf_counter() - start


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def table(figures: list[dict[str, Any]], include_informational: bool) -> str:
    header = ("figure", "median [min-max]", "baseline median", "ratio", "target", "met?")
    rows = [header]
    for f in figures:
        if not f.get("target") and not include_informational:
            continue
        target = f.get("target") or "-"
        if f.get("target") and f.get("target_on") == "ratio":
            target = f"ratio {target}"
        elif f.get("target"):
            target = f"{target} {f['unit']}"
        met = {True: "yes", False: "NO", None: "-"}[f.get("met")]
        rows.append(
            (
                f["name"],
                f"{_num(f['median'])} {f['unit']} [{_num(f['min'])}-{_num(f['max'])}] n={f['runs']}",
                _num(f.get("baseline_median")),
                _num(f.get("ratio")),
                target,
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions in every script")
    parser.add_argument("--runs", type=int, help="repetitions for every script (overrides --quick)")
    parser.add_argument(
        "--only", action="append", help="run only this script (repeatable), e.g. bench_fanout"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip profile_round_100mb (the analysis)")
    parser.add_argument("--all-lines", action="store_true", help="show informational lines in the table too")
    parser.add_argument("--json-out", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    passed = ["--quick"] if args.quick else []
    if args.runs is not None:
        passed = ["--runs", str(args.runs)]
    scripts = [s for s in SCRIPTS if not (args.no_profile and s.startswith("profile_"))]
    if args.only:
        wanted = {o.removesuffix(".py") for o in args.only}
        scripts = [s for s in scripts if s.removesuffix(".py") in wanted]
        if not scripts:
            parser.error(f"no script matches {args.only}; scripts: {', '.join(SCRIPTS)}")

    figures: list[dict[str, Any]] = []
    failed: list[str] = []
    started = time.perf_counter()
    for script in scripts:
        lines, code, seconds = run_script(script, passed)
        figures.extend(lines)
        print(f"# {script}: exit {code}, {seconds:.1f} s", file=sys.stderr, flush=True)
        if code != 0:
            failed.append(script)
    print()
    print(table(figures, args.all_lines))
    missed = [f["name"] for f in figures if f.get("met") is False]
    print()
    print(
        f"{len(figures)} figures in {time.perf_counter() - started:.0f} s; "
        f"missed targets: {', '.join(missed) or 'none'}"
    )
    if failed:
        print(f"failed scripts: {', '.join(failed)}")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
