"""``e2rank export``: a model as a sentence-transformers directory (``E2Rank.save_sentence_transformers``)."""
from ..model.e2rank import E2Rank
from . import arguments


def _export_command(args) -> int:
    task = {} if args.query_task is None else {"query_task": args.query_task}
    path = E2Rank(args.model, device="cpu", **task).save_sentence_transformers(args.output, overwrite=args.overwrite)
    print(f"wrote {path}: SentenceTransformer({str(path)!r}) gives the query and document vectors of {args.model}")
    return 0


def register(parsers: dict) -> None:
    p = parsers["export"]
    arguments.add_options(p, "--model")
    p.add_argument("--output", required=True, help="the directory to write")
    p.add_argument("--query-task", help="the retrieval instruction of the 'query' prompt (default: the model's)")
    p.add_argument("--overwrite", action="store_true", help="replace an export already at --output")
    p.set_defaults(func=_export_command)
