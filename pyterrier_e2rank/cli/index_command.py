"""``e2rank index``: encode a corpus into an E2Rank index, in one process or under torchrun (a shard per
process; a killed job started again resumes after its last committed chunk)."""
from ..checks import positive_int
from ..data import corpus_iter, corpus_stamp
from ..index.indexer import check_target
from ..io import refuse_output_as_input
from ..pyserini import read_jsonl_collection
from . import arguments
from .sharding import is_main_process, main_process_lock


def _index_command(args) -> int:
    refuse_output_as_input(args.output, dataset=args.dataset, collection=args.collection, model=args.model)
    mode = "append" if args.append else "overwrite" if args.overwrite else "create"
    with main_process_lock(args.output):  # before the model loads: a second writer is refused at once
        check_target(args.output, mode, fix="pass --overwrite to replace it, or --append to add documents to it")
        model = arguments.load_model(args, verbose=False)
        source = arguments.bright_source(args, args.dataset)
        records = corpus_iter(source) if source else read_jsonl_collection(args.collection)
        index = model.indexer(args.output, mode=mode, chunk_size=args.chunk_size, verbose=not args.quiet,
                              corpus_stamp=corpus_stamp(source) if source else None,
                              store_text=False if args.no_text else None).index(records)
    if is_main_process():
        print(f"appended to {args.output}, which now holds {len(index)} documents" if args.append else
              f"indexed {len(index)} documents into {args.output}")
    return 0


def register(parsers: dict) -> None:
    p = parsers["index"]
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a pt.get_dataset name, e.g. irds:beir/scifact/test, or bright/<domain>")
    source.add_argument("--collection", help="a JSONL collection, a file or a directory of .jsonl[.gz] files: "
                                             "Pyserini's records (id, contents) or BEIR's (_id, title, text)")
    arguments.add_options(p, "--model")
    p.add_argument("--output", required=True, help="the index directory")
    p.add_argument("--chunk-size", type=arguments.Checked(positive_int), default=4096,
                   help="documents per committed chunk (what a restart may encode again)")
    arguments.add_model_run_options(p)
    arguments.add_bright_options(p)
    write = p.add_mutually_exclusive_group()
    write.add_argument("--overwrite", action="store_true",
                       help="replace an existing index once the new one is complete")
    write.add_argument("--append", action="store_true",
                       help="add the documents (new docnos only) to the existing index, swapped in once complete")
    p.add_argument("--no-text", action="store_true",
                   help="keep no document text in the index (store_text=False; kept by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown by default, on process 0)")
    p.set_defaults(func=_index_command)
