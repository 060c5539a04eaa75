"""``e2rank``: the command line. Each module registers its own subcommands."""
import argparse
import sys
from typing import List, Optional

from . import experiment, runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2rank", description="E2Rank retrieval and listwise reranking")
    subparsers = parser.add_subparsers(dest="command", required=True)
    experiment.register(subparsers)
    runs.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
