"""``e2rank study``: the reviewers' questions on one command line (``study.runner.study``, pt_docs/study.rst)."""
from pathlib import Path

from ..checks import positive_int
from ..study.runner import DEPTHS, PROMPT_DOCS, study
from . import arguments


def main(args) -> int:
    study(args.model, args.dataset, args.output,
          first_stages=arguments.named_paths(args.first_stage, "--first-stage", "first stage"),
          index_dir=args.index_dir, top_k=args.top_k, num_input_docs=args.num_input_docs,
          num_queries=args.num_queries, measures=args.measures, prompt_docs=args.grid_prompt_docs,
          depths=args.grid_depths, cross_encoder=args.cross_encoder, generative=args.generative,
          timing_queries=args.timing_queries, overwrite=args.overwrite, model_options=arguments.model_options(args))
    print(f"written: {Path(args.output) / 'report.md'}")
    return 0


def register(parsers: dict) -> None:
    p = parsers["study"]
    p.add_argument("--model", action="append", required=True,
                   help="the model; given twice, the second is one not trained for the listwise prompt")
    arguments.add_options(p, "--dataset", dataset={"required": True})
    p.add_argument("--first-stage", action="append", metavar="NAME=PATH",
                   help="a TREC run file of the dataset as one more first stage, besides bm25 and dense")
    p.add_argument("--output", required=True, help="directory for report.md, results.json, figures/, steps/")
    arguments.add_options(p, "--index-dir", "--num-input-docs", "--num-queries", "--doc-max-words",
                          num_input_docs={"default": 20})
    p.add_argument("--top-k", "--depth", dest="top_k", **arguments.OPTIONS["--top-k"])
    p.add_argument("--measures", nargs="+", default=["nDCG@10"], help="ir-measures names (the first in the tables)")
    p.add_argument("--grid-prompt-docs", nargs="+", type=arguments.Checked(positive_int, minimum=0),
                   default=list(PROMPT_DOCS), help="the grid's prompt documents k")
    p.add_argument("--grid-depths", nargs="+", type=arguments.Checked(positive_int), default=list(DEPTHS),
                   help="the grid's rerank depths")
    p.add_argument("--cross-encoder", help="a sentence-transformers CrossEncoder checkpoint to time (e)")
    p.add_argument("--generative", help="a causal LM checkpoint for the generative sliding-window baseline (e)")
    p.add_argument("--timing-queries", type=arguments.Checked(positive_int),
                   help="time only the first N queries (default: all)")
    arguments.add_model_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming what --output holds")
    p.set_defaults(func=main)
