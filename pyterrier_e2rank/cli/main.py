"""``e2rank``: the command line, each module registering its subcommands. ``main`` raises; the installed
commands (``console``) print a user error as ``e2rank: error: ...`` and exit 2."""
import argparse
import importlib
import os
import sys
from typing import Callable, List, Optional

from ..io import ArtifactLocked

#: Each subcommand: the module that registers (and runs) it, imported only for that command, and its help line.
COMMANDS = {
    "experiment": ("experiment", "BM25 / dense / E2Rank reranking on a dataset, via pt.Experiment"),
    "index": ("index_command", "encode a corpus into an E2Rank index (torchrun: one shard per process)"),
    "rerank-run": ("runs", "rerank a run file (TREC, or JSONL candidates with their texts) with E2Rank, write a TREC "
                           "run file (or the JSONL form)"),
    "eval-run": ("runs", "evaluate a run file (TREC or JSONL candidates) with ir-measures"),
    "reproduce": ("reproduce", "the paper's evaluation: BM25 top 100 reranked by E2Rank on a suite of datasets, one "
                               "table with the paper's figures"),
    "train": ("train_command", "train E2Rank (stage 1: InfoNCE; stage 2: InfoNCE + RankNet on listwise prompts), on "
                               "CPU, one GPU or many (accelerate launch)"),
    "build-data": ("train_command", "make stage-II JSONL records for 'train'"),
    "study": ("study_command", "the reviewers' questions: E2Rank against dense PRF, prompt size and depth, an "
                               "untrained model, first stages, wall-clock, end to end; report.md, figures, "
                               "results.json"),
    "export": ("export_command", "write a model as a sentence-transformers directory (its vectors, its identity)"),
    "mteb": ("mteb_command", "evaluate models side by side on MTEB tasks (mteb), instructed as the authors' runs"),
}


def build_parser(commands=tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser of ``commands`` (by default every subcommand); any other subcommand is only listed."""
    parser = argparse.ArgumentParser(prog="e2rank", description="E2Rank retrieval, listwise reranking and training")
    subparsers = parser.add_subparsers(dest="command", required=True)
    parsers = {name: subparsers.add_parser(name, help=helptext) for name, (_, helptext) in COMMANDS.items()}
    for module in dict.fromkeys(COMMANDS[command][0] for command in commands):
        importlib.import_module(f".{module}", __package__).register(parsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser([arg for arg in argv if arg in COMMANDS][:1]).parse_args(argv)
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
