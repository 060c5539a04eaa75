"""``e2rank train`` (a stage) and ``e2rank build-data`` (training data from a dataset, RankLLM examples or
pairs); an output that is an input is refused before anything is read, and locked before the first byte."""
from dataclasses import fields

from accelerate.utils import LoggerType

from ..checks import positive_int
from ..io import numbered_lines, refuse_output_as_input, writer_lock
from ..training.config import ENCODER_POOLINGS, TrainConfig
from ..training.data import DataError, build_from_dataset, from_pairs, from_rankllm, read_listwise, write_jsonl
from ..training.trainer import train
from . import arguments


def load_examples(path: str):
    """Stage-II records, or stage-I pairs (recognised by their ``pos`` field)."""
    first = next((line for _, line in numbered_lines(path, error=DataError)), "")
    return from_pairs(path) if '"pos"' in first else read_listwise(path)


def _train_command(args) -> int:
    refuse_output_as_input(args.output, model=args.model, data=args.data, eval_data=args.eval_data)
    given = vars(args)
    config = TrainConfig(**{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given})
    examples = load_examples(args.data)
    print(f"training stage {config.stage} on {len(examples)} examples -> {train(config, examples)}")
    return 0


def _build_data_command(args) -> int:
    refuse_output_as_input(args.output, input=getattr(args, "input", None), dataset=getattr(args, "dataset", None),
                           bm25_index=getattr(args, "bm25_index", None))
    with writer_lock(args.output):
        if args.source == "dataset":
            examples = build_from_dataset(args.dataset, bm25_index_dir=args.bm25_index, slate=args.slate)
        elif args.source == "rankllm":
            examples = from_rankllm(args.input)
        else:
            examples = from_pairs(args.input, slate=args.slate)
        print(f"wrote {write_jsonl(examples, args.output)} records to {args.output}")
    return 0


def register(parsers: dict) -> None:
    p = parsers["train"]
    p.add_argument("--stage", type=int, choices=[1, 2], default=2)
    p.add_argument("--model", required=True, help="the model to start from (stage 2: the stage-1 model)")
    p.add_argument("--data", required=True, help="stage-II JSONL records (stage 1 also takes {query,pos,neg} pairs)")
    p.add_argument("--output", required=True, help="checkpoint directory, loadable by E2Rank(path)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --output")
    p.add_argument("--epochs", type=arguments.positive_float, default=1.0)
    p.add_argument("--max-steps", type=arguments.Checked(positive_int))
    p.add_argument("--batch-size", type=arguments.Checked(positive_int), default=8, help="queries per step and process")
    p.add_argument("--gradient-accumulation", type=arguments.Checked(positive_int), default=1)
    p.add_argument("--lr", type=arguments.positive_float, default=5e-6)
    p.add_argument("--warmup-ratio", type=arguments.fraction, default=0.03)
    p.add_argument("--ranknet-weight", type=arguments.non_negative_float, default=2.0)
    p.add_argument("--infonce-weight", type=arguments.non_negative_float, default=1.0)
    p.add_argument("--temperature", type=arguments.positive_float, default=0.03)
    p.add_argument("--query-max-length", type=arguments.Checked(positive_int),
                   help="tokens a query is cut to when embedded")
    p.add_argument("--doc-max-length", type=arguments.Checked(positive_int),
                   help="tokens a document is cut to when embedded")
    arguments.add_prompt_budget_options(p)
    p.add_argument("--num-input-docs", type=arguments.Checked(positive_int),
                   help="documents in the listwise prompt (default: the whole list); "
                   "the losses still use every document of the list")
    p.add_argument("--pooling", choices=ENCODER_POOLINGS,
                   help="encoders: train and save with this pooling instead of the base model's")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lora-rank", type=arguments.Checked(positive_int),
                   help="train LoRA adapters of this rank (merged when saved)")
    p.add_argument("--seed", type=arguments.seed, default=0)
    p.add_argument("--log-every", type=arguments.Checked(positive_int), default=10)
    p.add_argument("--max-grad-norm", type=arguments.non_negative_float, default=1.0,
                   help="clip the gradients' total norm to this (0: no clipping; the norm is logged either way)")
    p.add_argument("--save-every", type=arguments.Checked(positive_int),
                   help="steps between resumable states, kept (the last two) in .<output>.state beside the output")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest state in .<output>.state (none yet: start from the beginning); "
                   "refused if it was made with other settings or data")
    p.add_argument("--eval-every", type=arguments.Checked(positive_int),
                   help="steps between evaluations (loss and the PRF reranker's nDCG@10) on --eval-data or "
                   "--eval-fraction")
    p.add_argument("--eval-data", help="stage-II JSONL records to evaluate on")
    p.add_argument("--eval-fraction", type=arguments.fraction,
                   help="share of the training records held out for evaluation instead (chosen by --seed)")
    p.add_argument("--log-with", nargs="+", choices=[tracker.value for tracker in LoggerType], metavar="TRACKER",
                   help="accelerate trackers to log to (%(choices)s)")
    p.add_argument("--logging-dir", help="the trackers' files (default: <output>.logs)")
    p.set_defaults(func=_train_command)

    p = parsers["build-data"]
    sources = p.add_subparsers(dest="source", required=True)
    d = sources.add_parser("dataset", help="BM25 top-k of a split's queries, labels from its qrels")
    d.add_argument("--dataset", required=True, help="e.g. irds:beir/scifact/train")
    d.add_argument("--bm25-index", default="indexes/bm25-train.pisa")
    d.add_argument("--slate", type=arguments.Checked(positive_int), default=16)
    d.add_argument("--output", required=True)
    for name, helptext in [("rankllm", "RankGPT/RankLLM chat examples"), ("pairs", "FlagEmbedding {query,pos,neg}")]:
        c = sources.add_parser(name, help=helptext)
        c.add_argument("--input", required=True)
        c.add_argument("--output", required=True)
        if name == "pairs":  # RankLLM examples keep their lists whole: their rankings cover every passage
            c.add_argument("--slate", type=arguments.Checked(positive_int), default=None,
                           help="documents per list: the positive and the first slate-1 negatives")
    p.set_defaults(func=_build_data_command)
