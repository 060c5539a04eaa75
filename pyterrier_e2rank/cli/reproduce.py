"""``e2rank reproduce``: the paper's evaluation in one command (pt_docs/specification.rst §7), a ``suite.Suite``
run on each dataset, the results beside the paper's figures (``paper``); started again, it resumes."""
import contextlib
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from ..io import refuse_output_as_input, writer_lock
from ..model.e2rank import E2Rank
from ..model.text import DEFAULT_RERANK_TASK
from . import arguments
from .paper import BRIGHT_SUITE, LOCAL_ONLY, PAPER_SUITE, DatasetUnavailable, resolve_dataset
from .sharding import is_main_process, main_process_decides, process_device
from .suite import FILES, Suite


def reproduce(model: Union[str, E2Rank], datasets: Sequence[str], output, *, runs: Optional[Dict[str, str]] = None,
              index_dir="indexes", top_k: int = 100, num_input_docs: int = 20, rerank_task: str = DEFAULT_RERANK_TASK,
              query_task: str = "dataset", dense: bool = False, num_queries: Optional[int] = None,
              skip_missing: bool = False, overwrite: bool = False, verbose: bool = True,
              model_options: Optional[dict] = None, bright_dir=None, bright_query: str = "query") -> Optional[dict]:
    """Runs the paper's protocol on ``datasets``, writes ``output`` and returns ``{dataset: {system: {measure:
    value}}}`` in process 0 (``None`` in the others).

    Args:
        model: a model name or path (loaded with ``model_options``), or an ``E2Rank`` made with
            ``cache_doc_vectors=True``.
        datasets: ir_datasets ids (``irds:`` optional), BEIR folders, corpus files or BRIGHT domains
            (``bright/<domain>``, read from ``bright_dir`` or the hub, topics of the ``bright_query`` field; each
            query's excluded ids removed before reranking and evaluation).
        runs: ``{dataset: run file}`` (TREC or JSONL candidates, ``runs.read_run``), pinned first stages
            instead of PISA BM25 (built in ``index_dir``).
        query_task: the dense rows' instruction (``experiment.query_task_for``).
        num_queries, skip_missing: the first N topics; drop and count run lines the dataset lacks.
        overwrite: discard what an earlier suite wrote to ``output`` instead of resuming it.

    Raises, before anything is written: ``ValueError`` for an unknown dataset or run file, a run line naming an
    unknown query or document (file:line), ``output`` begun with other settings, datasets or first stages, or
    holding an input; ``FileExistsError`` for reproduce's names in a folder it did not write; ``ArtifactLocked``.
    A dataset that cannot be had is skipped, said in the notes."""
    output, runs = Path(output), dict(runs or {})
    for name in FILES:  # what reproduce replaces or adds to is none of its inputs
        refuse_output_as_input(output / name, model=model if isinstance(model, str) else None, index_dir=index_dir,
                               **{f"--dataset {d}": d for d in datasets}, **{f"--run {k}": v for k, v in runs.items()})
    main = is_main_process()
    checked, unavailable = [], {}
    for source in dict.fromkeys(datasets):
        try:
            checked.append(resolve_dataset(source, bright_dir=bright_dir, bright_query=bright_query))
        except DatasetUnavailable as e:
            unavailable[source] = str(e)
    given = {d.column for d in checked}  # a BEIR folder given for a suite entry ir_datasets does not serve
    unavailable = {k: why for k, why in unavailable.items() if LOCAL_ONLY.get(k.removeprefix("irds:"), k) not in given}
    labels = [d.label for d in checked]
    for label, path in runs.items():
        if label not in labels:
            raise ValueError(f"--run {f'{label}={path}'!r}: {label!r} is not one of the datasets {labels}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--run {f'{label}={path}'!r}: no such file {path}")
    if isinstance(model, str):
        model = E2Rank(model, **{"device": process_device(None), **(model_options or {})}, cache_doc_vectors=True,
                       verbose=verbose and main)
    elif model.doc_cache is None:
        raise ValueError(f"{model!r}: reproduce encodes each distinct candidate once through the model's "
                         f"document cache; load it with cache_doc_vectors=True, or pass its name")
    suite = Suite(model, output, runs=runs, index_dir=index_dir, top_k=top_k, num_input_docs=num_input_docs,
                   rerank_task=rerank_task, query_task=query_task, dense=dense, num_queries=num_queries,
                   skip_missing=skip_missing, verbose=verbose)
    output.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        def take_output():  # by process 0 alone, the one writer
            held.enter_context(writer_lock(output))
            suite.prepare(checked, overwrite)
        main_process_decides(take_output)
        finished = {}
        for dataset in checked:
            try:
                finished[dataset.label] = suite.run(dataset)
            except DatasetUnavailable as e:
                unavailable[dataset.label] = str(e)
                if main:
                    print(f"skipped: {e}", file=sys.stderr)
            if main:
                suite.write_outputs(checked, finished, unavailable)
    if not main:
        return None
    if verbose:
        print((output / "results.md").read_text(encoding="utf-8"))
    return {label: done["results"] for label, done in finished.items()}


def main(args) -> int:
    datasets = list({"paper": PAPER_SUITE, "bright": BRIGHT_SUITE}.get(args.suite, ())) + list(args.dataset or [])
    if not datasets:
        raise ValueError("give --dataset (repeatable), --suite paper or --suite bright")
    reproduce(args.model, datasets, args.output, runs=arguments.named_paths(args.run, "--run", "dataset"),
              index_dir=args.index_dir, top_k=args.top_k, num_input_docs=args.num_input_docs,
              rerank_task=args.rerank_task, query_task=args.query_task, dense=args.dense,
              num_queries=args.num_queries, skip_missing=args.skip_missing, overwrite=args.overwrite,
              verbose=is_main_process(), model_options=arguments.model_options(args), bright_dir=args.bright_dir,
              bright_query=args.bright_query)
    return 0


def register(parsers: dict) -> None:
    p = parsers["reproduce"]
    arguments.add_options(p, "--dataset")
    p.add_argument("--suite", choices=["paper", "bright"],
                   help="paper: the paper's ten datasets (DL19, DL20 and eight of BEIR); bright: BRIGHT's 12 domains")
    p.add_argument("--output", required=True, help="directory for results.md, results.json, run_record.json")
    p.add_argument("--run", action="append", metavar="DATASET=PATH",
                   help="a pinned run file (TREC, or JSONL candidates such as the authors' {dataset}_top100.jsonl) "
                        "as first stage for DATASET (as given to --dataset)")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop run-file queries and documents the dataset lacks (counted in the notes), not an error")
    p.add_argument("--dense", action="store_true", help="add dense retrieval rows (builds or reuses the dense index)")
    arguments.add_options(p, "--model", "--index-dir", "--top-k", "--num-input-docs", "--num-queries", "--query-task",
                          "--doc-max-words", num_input_docs={"default": 20})
    p.add_argument("--rerank-task", default=DEFAULT_RERANK_TASK, help="the listwise prompt's task sentence")
    arguments.add_model_run_options(p)
    arguments.add_bright_options(p)
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming what --output holds")
    p.set_defaults(func=main)
