"""argparse types and options shared by the ``e2rank`` subcommands; a bad value is refused while parsing."""
import argparse
import math
from typing import Callable, Dict, Optional, Sequence

import torch

from ..bright import QUERY_FIELDS, domain_of
from ..data import bright_dataset
from ..model.backends import BACKENDS, PROMISED_COSINE, QUANTIZATIONS
from ..model.e2rank import E2Rank
from ..model.text import DOC_MAX_WORDS
from ..checks import positive_int
from .sharding import is_main_process, process_device


class Checked:
    """An argparse type of an integer check of ``checks`` (``Checked(positive_int)``), naming the text as typed."""

    def __init__(self, check: Callable[..., int], **limits):
        self.check = check
        self.limits = limits

    def __call__(self, text: str) -> int:
        try:
            return self.check(int(text), "", **self.limits)
        except ValueError:
            pass
        try:
            self.check(text, "", **self.limits)  # a text is no integer: refused, named as typed ('0', 'ten')
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).strip()) from None


def _number(wanted: str, accept: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: a finite number that ``accept`` takes, else an error saying it must be ``wanted``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value
    return parse


#: A random seed: what ``accelerate.utils.set_seed`` accepts (NumPy's range).
seed = Checked(positive_int, minimum=0, maximum=2**32 - 1)
#: Learning rates, temperatures, epochs.
positive_float = _number("a finite number > 0", lambda value: value > 0)
#: Loss weights (0 switches a loss off).
non_negative_float = _number("a finite number >= 0", lambda value: value >= 0)
#: Ratios such as the warm-up share of the steps.
fraction = _number("a number from 0 to 1", lambda value: 0 <= value <= 1)


#: Options several commands take, by flag; ``add_options`` adds them, a command changing a setting or two.
OPTIONS = {
    "--model": dict(required=True, help="model directory, hub id (E2Rank's: Alibaba-NLP/E2Rank-0.6B, -4B, -8B) or "
                                        "embedded name (all-minilm-l6-v2, an offline encoder not trained for the "
                                        "listwise prompt)"),
    "--index-dir": dict(default="indexes", help="where BM25 (and dense) indexes are built or reused (default: "
                                                "indexes/ in the current directory)"),
    "--top-k": dict(type=Checked(positive_int), default=100, help="candidates reranked per query"),
    "--num-input-docs": dict(type=Checked(positive_int),
                             help="documents in the listwise prompt (default: the checkpoint's, else 20)"),
    "--num-queries": dict(type=Checked(positive_int), help="evaluate only the first N topics (of each dataset)"),
    "--query-task": dict(default="dataset", help="retrieval instruction: 'dataset' (the authors' per-dataset task "
                                                 "for instructed models), 'auto' (the model's default), or a sentence"),
    "--dataset": dict(action="append", help="irds:<id> (or the bare id), a BEIR folder, a corpus file or "
                                            "bright/<domain>; repeatable"),
    "--doc-max-words": dict(type=Checked(positive_int), default=DOC_MAX_WORDS,
                            help="documents are cut to this many words"),
}


def add_options(parser: argparse.ArgumentParser, *flags: str, **changes: dict) -> None:
    """Adds the ``OPTIONS`` of ``flags``; ``changes`` by destination (``model={"required": True}``)."""
    for flag in flags:
        parser.add_argument(flag, **{**OPTIONS[flag], **changes.get(flag[2:].replace("-", "_"), {})})


def add_model_run_options(parser: argparse.ArgumentParser) -> None:
    """``--batch-size``, ``--device``, ``--backend``, ``--dtype`` and ``--quantize``: how ``load_model`` runs the
    model."""
    parser.add_argument("--batch-size", type=Checked(positive_int), default=32, help="texts per forward pass")
    parser.add_argument("--device", default=None,
                        help="cuda, cuda:N or cpu (default: cuda when available; under torchrun each process's "
                             "cuda:LOCAL_RANK)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="how the backbone runs: torch (default), or on the CPU (the [cpu] extra) openvino, "
                             f"3-4x float32 torch on a CPU with bfloat16, about 2x without, vectors within cosine "
                             f"{PROMISED_COSINE['openvino']}; or onnx (float32)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="the precision (default: bfloat16 on CUDA, float32 with torch on a CPU, bfloat16 with "
                             "openvino where the CPU has it); openvino in float32 shares the identity of indexes "
                             "built with torch")
    parser.add_argument("--quantize", choices=sorted({q for qs in QUANTIZATIONS.values() for q in qs if q}),
                        help=f"int8 with --backend onnx: 2-3x float32 torch, vectors within cosine "
                             f"{PROMISED_COSINE['onnx-int8']}")


def add_bright_options(parser: argparse.ArgumentParser) -> None:
    """``--bright-dir`` and ``--bright-query``: where ``bright/<domain>`` datasets are read, and their query text."""
    parser.add_argument("--bright-dir", help="a local copy of BRIGHT (examples/<domain>-*.parquet or .jsonl, "
                                             "documents/<domain>-*...) for bright/<domain> (default: the hub's)")
    parser.add_argument("--bright-query", choices=QUERY_FIELDS, default="query",
                        help="bright/<domain>'s query text: its query field (default) or its reasoning field")


def bright_source(args: argparse.Namespace, source: Optional[str]) -> Optional[str]:
    """``source`` (``None`` too), or for a BRIGHT domain the dataset of ``--bright-dir`` and ``--bright-query``
    (``data.bright_dataset``)."""
    found = domain_of(source)
    if found is None:
        return source
    query = args.bright_query if found[1] == "query" else found[1]
    return f"irds:{bright_dataset(found[0], bright_dir=args.bright_dir, query=query).irds_ref().dataset_id()}"


def named_paths(pairs: Optional[Sequence[str]], flag: str, what: str) -> Dict[str, str]:
    """``["NAME=PATH", ...]`` given to the repeatable ``flag`` -> ``{NAME: PATH}``, a run file per ``what``. Raises
    ``ValueError`` naming a pair without a name, ``=`` and a path, or a name given twice."""
    paths = {}
    for pair in pairs or ():
        name, sep, path = pair.partition("=")  # a path may hold "="; the names do not
        if not sep or not name or not path:
            raise ValueError(f"{flag} {pair!r}: expected NAME=PATH (a name, '=', a run file)")
        if name in paths:
            raise ValueError(f"{flag} {pair!r}: the name {name!r} was given already (for {paths[name]!r}): two run "
                             f"files for {what} {name!r}; give one")
        paths[name] = path
    return paths


def add_prompt_budget_options(parser: argparse.ArgumentParser) -> None:
    """``--prompt-doc-max-tokens`` and ``--prompt-max-tokens``: the listwise prompt's token budgets."""
    parser.add_argument("--prompt-doc-max-tokens", type=Checked(positive_int),
                        help="per-document token budget inside the prompt")
    parser.add_argument("--prompt-max-tokens", type=Checked(positive_int),
                        help="total prompt budget (default: the model's positions)")


def model_options(args: argparse.Namespace) -> dict:
    """The ``E2Rank`` keyword arguments of ``add_model_run_options``' flags (and of ``--doc-max-words`` where the
    command has it), on this process's device."""
    return {"device": process_device(args.device), "batch_size": args.batch_size, "backend": args.backend,
            "quantize": args.quantize, "dtype": getattr(torch, args.dtype) if args.dtype else None,
            **({"doc_max_words": args.doc_max_words} if "doc_max_words" in args else {})}


def load_model(args: argparse.Namespace, **options) -> E2Rank:
    """The ``E2Rank`` of ``--model`` and ``model_options`` (verbose on process 0, unless ``options`` say)."""
    return E2Rank(args.model, **{"verbose": is_main_process(), **model_options(args), **options})
