"""Flags in both spellings: the tutorial's ``--metrics_port`` and the kebab-case ``--metrics-port``."""

from __future__ import annotations

import argparse
from typing import Any


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)
