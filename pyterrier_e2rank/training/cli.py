"""``e2rank-train``: train a stage, or build training data.

    e2rank-train --stage 2 --model all-minilm-l6-v2 --data train.jsonl --output runs/minilm-stage2 [--overwrite]
    e2rank-train build-data dataset --dataset irds:beir/scifact/train --output scifact-train.jsonl
    e2rank-train build-data rankllm --input llm4ranking_listwise_train.jsonl --output msmarco.jsonl
    e2rank-train build-data pairs --input flagembedding_msmarco.jsonl --output pairs.jsonl

An output that is one of the inputs is refused before anything is read; an existing checkpoint is
replaced only with ``--overwrite``, and only once the new one is complete.
"""
import argparse
import math
import sys
from dataclasses import fields
from typing import List, Optional

from pyterrier_e2rank.io import numbered_lines, refuse_output_as_input

from .data import DataError, build_from_dataset, from_pairs, from_rankllm, read_listwise, write_jsonl
from .trainer import ENCODER_POOLINGS, TrainConfig, train


def _at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1 (0 steps, a 0-document slate or a 0 budget are mistakes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _above_zero(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e2rank-train", description="Train E2Rank (stage 1: InfoNCE; "
                                "stage 2: InfoNCE + RankNet on listwise prompts). 'build-data' makes the data.")
    p.add_argument("--stage", type=int, choices=[1, 2], default=2)
    p.add_argument("--model", required=True, help="the model to start from (stage 2: the stage-1 model)")
    p.add_argument("--data", required=True, help="stage-II JSONL records (stage 1 also takes {query,pos,neg} pairs)")
    p.add_argument("--output", required=True, help="checkpoint directory, loadable by E2Rank(path)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --output")
    p.add_argument("--epochs", type=_above_zero, default=1.0)
    p.add_argument("--max-steps", type=_at_least_one)
    p.add_argument("--batch-size", type=_at_least_one, default=8, help="queries per step and process")
    p.add_argument("--gradient-accumulation", type=_at_least_one, default=1)
    p.add_argument("--lr", type=_above_zero, default=5e-6)
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--ranknet-weight", type=float, default=2.0)
    p.add_argument("--infonce-weight", type=float, default=1.0)
    p.add_argument("--temperature", type=_above_zero, default=0.03)
    p.add_argument("--query-max-length", type=_at_least_one, help="tokens a query is cut to when embedded")
    p.add_argument("--doc-max-length", type=_at_least_one, help="tokens a document is cut to when embedded")
    p.add_argument("--prompt-doc-max-tokens", type=_at_least_one,
                   help="per-document token budget inside the prompt")
    p.add_argument("--prompt-max-tokens", type=_at_least_one,
                   help="total prompt budget (default: the model's positions)")
    p.add_argument("--num-input-docs", type=_at_least_one,
                   help="documents in the listwise prompt (default: the whole list); "
                   "the losses still use every document of the list")
    p.add_argument("--pooling", choices=ENCODER_POOLINGS,
                   help="encoders: train and save with this pooling instead of the base model's")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lora-rank", type=_at_least_one, help="train LoRA adapters of this rank (merged when saved)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=_at_least_one, default=10)
    return p


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e2rank-train build-data", description="Make stage-II JSONL records")
    sub = p.add_subparsers(dest="source", required=True)
    d = sub.add_parser("dataset", help="BM25 top-k of a split's queries, labels from its qrels")
    d.add_argument("--dataset", required=True, help="e.g. irds:beir/scifact/train")
    d.add_argument("--bm25-index", default="indexes/bm25-train.pisa")
    d.add_argument("--slate", type=_at_least_one, default=16)
    d.add_argument("--output", required=True)
    for name, helptext in [("rankllm", "RankGPT/RankLLM chat examples"), ("pairs", "FlagEmbedding {query,pos,neg}")]:
        c = sub.add_parser(name, help=helptext)
        c.add_argument("--input", required=True)
        c.add_argument("--output", required=True)
        c.add_argument("--slate", type=_at_least_one, default=None)
    return p


def load_examples(path: str):
    """Stage-II records, or stage-I pairs (recognised by their ``pos`` field)."""
    first = next((line for _, line in numbered_lines(path, error=DataError)), "")
    return from_pairs(path) if '"pos"' in first else read_listwise(path)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build-data"]:
        args = _build_parser().parse_args(argv[1:])
        refuse_output_as_input(args.output, input=getattr(args, "input", None),
                               bm25_index=getattr(args, "bm25_index", None))
        if args.source == "dataset":
            examples = build_from_dataset(args.dataset, bm25_index_dir=args.bm25_index, slate=args.slate)
        elif args.source == "rankllm":
            examples = from_rankllm(args.input)
        else:
            examples = from_pairs(args.input, slate=args.slate)
        print(f"wrote {write_jsonl(examples, args.output)} records to {args.output}")
        return 0
    args = vars(_train_parser().parse_args(argv))
    refuse_output_as_input(args["output"], model=args["model"], data=args["data"])
    config = TrainConfig(**{f.name: args[f.name] for f in fields(TrainConfig) if f.name in args})
    examples = load_examples(args["data"])
    print(f"training stage {config.stage} on {len(examples)} examples -> {train(config, examples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
