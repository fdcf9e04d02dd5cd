"""``colearn-data``: ``split`` original files into per-learner folders, or write ``fixtures``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from colearn_learner import model_families
from colearn_learner.data_tools import DataTool, DataToolError
from colearn_runtime.cli_flags import add_flag, add_version, whole_number

_positive = whole_number(1)
_seed = whole_number(0, 2**32 - 1)


def data_tools() -> dict[str, DataTool]:
    """The data tools of every installed model family, by dataloader tag."""
    return model_families.load().data_tools


def build_parser() -> argparse.ArgumentParser:
    tools = data_tools()
    tags = sorted(tools)
    parser = argparse.ArgumentParser(prog="colearn-data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sources = "; ".join(f"{tag}: {tools[tag].source}" for tag in tags)
    split = commands.add_parser("split", help="split original files into one folder per learner")
    split.add_argument("tag", choices=tags)
    add_flag(split, "source", type=Path, required=True, help=f"the original files ({sources})")
    add_flag(split, "n_learners", type=_positive, required=True, help="how many learner folders to write")
    add_flag(split, "out", type=Path, required=True, help="folder to write learner_0 ... learner_{N-1} into")
    add_flag(split, "seed", type=_seed, default=0, help="shuffle seed; the same seed gives the same split")
    fixtures = commands.add_parser("fixtures", help="write small synthetic data in the original formats")
    fixtures.add_argument("tag", choices=tags)
    add_flag(fixtures, "out", type=Path, required=True, help="folder to write the files into")
    add_flag(fixtures, "seed", type=_seed, default=0, help="seed of the synthetic data")
    listing = commands.add_parser("list", help="the tags and the original files each one splits")
    add_version(parser, split, fixtures, listing)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tools = data_tools()
    try:
        if args.command == "list":
            for tag in sorted(tools):
                print(f"{tag}\t{tools[tag].source}")
        elif args.command == "split":
            folders = tools[args.tag].split(args.source, args.n_learners, args.out, args.seed)
            for folder in folders:
                print(folder)
        else:
            print(tools[args.tag].fixtures(args.out, args.seed))
    except DataToolError as exc:
        print(f"colearn-data: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
