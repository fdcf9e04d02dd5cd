"""Flags in both spellings: the tutorial's ``--metrics_port`` and the kebab-case ``--metrics-port``."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)


def add_version(*parsers: argparse.ArgumentParser) -> None:
    """``--version`` on a command and each of its subcommands: prints the package version and exits."""
    from colearn_contract import __version__

    for parser in parsers:
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer within ``[low, high]``, with an error that names the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            wanted = f"at least {low}" if high is None else f"within [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for a duration in seconds: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value
