"""``e2rank``: the command line. Each module registers its own subcommands; numbers are checked by the
types of ``arguments``."""
import argparse
import sys
from typing import List, Optional

from ..training import cli as training
from . import experiment, index_command, runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2rank", description="E2Rank retrieval, listwise reranking and training")
    subparsers = parser.add_subparsers(dest="command", required=True)
    experiment.register(subparsers)
    index_command.register(subparsers)
    runs.register(subparsers)
    training.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def e2rank_argv(argv: List[str]) -> List[str]:
    """The ``e2rank`` command line of an ``e2rank-train`` one: ``build-data ...`` stays, anything else
    is ``train ...``."""
    return list(argv) if argv[:1] == ["build-data"] else ["train", *argv]


def train_main(argv: Optional[List[str]] = None) -> int:
    """``e2rank-train``, kept for existing scripts: the ``e2rank`` parser and commands, nothing of its own."""
    return main(e2rank_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
