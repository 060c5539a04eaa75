"""``e2rank``: the command line, each module registering its subcommands. ``main`` raises; the installed
commands (``console``) print a user error as ``e2rank: error: ...`` and exit 2."""
import argparse
import os
import sys
from typing import Callable, List, Optional

from ..io import ArtifactLocked
from . import experiment, index_command, reproduce, runs, train_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2rank", description="E2Rank retrieval, listwise reranking and training")
    subparsers = parser.add_subparsers(dest="command", required=True)
    experiment.register(subparsers)
    index_command.register(subparsers)
    runs.register(subparsers)
    reproduce.register(subparsers)
    train_command.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def train_main(argv: Optional[List[str]] = None) -> int:
    """``e2rank-train``, kept for existing scripts: ``e2rank build-data ...``, else ``e2rank train ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(argv if argv[:1] == ["build-data"] else ["train", *argv])


#: What a command raises for its user's input or environment; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, KeyError, ImportError, ArtifactLocked)


def _reporting_errors(command: Callable[[], int]) -> int:
    """Runs ``command``: a user error is one line on stderr and exit status 2 (the traceback too with
    ``E2RANK_TRACEBACK=1``), an interrupt exit status 130."""
    try:
        return command()
    except KeyboardInterrupt:
        print("e2rank: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if os.environ.get("E2RANK_TRACEBACK") == "1":
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"e2rank: error: {message}\n(set E2RANK_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2


def console() -> int:
    """The installed ``e2rank``."""
    return _reporting_errors(main)


def train_console() -> int:
    """The installed ``e2rank-train``."""
    return _reporting_errors(train_main)


if __name__ == "__main__":
    sys.exit(console())
