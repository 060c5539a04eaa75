"""The main job: BM25, dense retrieval, and E2Rank reranking of both, compared with ``pt.Experiment``."""
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Optional

import pyterrier as pt
from ir_measures import R, nDCG

from ..bm25 import BM25_ENGINES
from ..bright import excluding
from .. import data
from ..data import DocumentText, corpus_id, corpus_iter, corpus_stamp, is_beir_folder, must_rebuild
from ..index.artifact import E2RankIndex
from ..io import atomic_file, refuse_output_as_input
from ..model.e2rank import E2Rank
from ..model.provenance import fingerprint_differences, identity
from ..model.text import dataset_query_task
from . import arguments
from .sharding import is_main_process, main_process_first, main_process_lock, transform_by_query

#: Measures of the systems' runs, evaluated by ``pt.Experiment``; the results add ``mrt`` (run time per topic).
RUN_MEASURES = [nDCG @ 10, R @ 100]
MEASURES = RUN_MEASURES + ["mrt"]
SYSTEMS = ["bm25", "bm25>>e2rank", "dense", "dense>>e2rank", "bm25>>e2rank-prf"]


def index_name(name) -> str:
    """The folder name of a path or id: its letters, digits and ``-_.`` (cut to 60), ``-`` and 12 hex digits of
    the sha256 of the name (without a trailing ``/``), so that two names never share a folder."""
    name = str(name).rstrip("/") or str(name)
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/"))[:60]
    return f"{readable}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def dense_index_for(model: E2Rank, dataset, index_dir: str, *, verbose: bool = True) -> E2RankIndex:
    """The dataset's dense index for ``model`` under ``index_dir`` (``dense.<model>``, with ``.<inference>`` for
    vectors apart from PyTorch's), built on first use with its corpus stamp, and built again (with a warning) when
    its corpus or the weights at the model's path changed since.
    Raises ``ValueError`` for an index it did not build (no stamp: ``data.must_rebuild``)."""
    ds = data.dataset(dataset)
    stamp = corpus_stamp(ds)
    apart = identity(model.fingerprint()).get("inference")
    name = f"dense.{index_name(model.model_name_or_path)}" + (f".{apart}" if apart else "")
    index = E2RankIndex(Path(index_dir) / index_name(corpus_id(ds)) / name)
    built = index.built()
    rebuild = built and must_rebuild("dense index", index.path, index.corpus_stamp, stamp, rebuild_stale=True)
    if built and not rebuild and (index.fingerprint is None
                                  or fingerprint_differences(index.fingerprint, model.fingerprint())):
        warnings.warn(f"the dense index at {index.path} was built with other weights or settings than "
                      f"{model.model_name_or_path!r} has now; building it again", stacklevel=2)
        rebuild = True
    if rebuild or not built:
        mode = "overwrite" if rebuild else "create"
        model.indexer(index, verbose=verbose, mode=mode, corpus_stamp=stamp).index(corpus_iter(ds))
        index = E2RankIndex(index.path)  # not the object that read the old version
    index.check_model(model)
    return index


def run_experiment(dataset, model: E2Rank, *, index_dir: str = "indexes", top_k: int = 100,
                   num_input_docs: Optional[int] = None, bm25: str = "pisa", num_queries: Optional[int] = None,
                   verbose: bool = True) -> Optional[dict]:
    """``SYSTEMS`` (BM25, dense, E2Rank reranking of both, E2Rank PRF re-retrieval) evaluated on ``dataset``
    (BRIGHT's excluded ids removed from every ranking), the indexes built or reused under ``index_dir``;
    ``num_input_docs=None``: the model's. Returns ``{system: {"nDCG@10", "R@100", "mrt"}}`` (``mrt``: ms per
    topic) with ``"_timings"``, ``"_prompt"`` and ``"_excluded_ids"`` (``{"queries", "ids"}``: BRIGHT's, counted in
    the dataset) in process 0, ``None`` in the others."""
    ds = data.dataset(dataset)
    all_topics, qrels = (data.dataset_part(ds, part, dataset) for part in ("topics", "qrels"))  # before indexing
    root = Path(index_dir) / index_name(corpus_id(ds))
    timings, excluded = {}, data.excluded_ids(ds)

    started = time.perf_counter()
    first_stage = main_process_first(lambda: excluding(lambda depth: BM25_ENGINES[bm25](
        str(root / f"bm25.{bm25}"), ds, num_results=depth, rebuild_stale=True, verbose=verbose), excluded, top_k))
    timings["bm25_index_s"] = time.perf_counter() - started

    started = time.perf_counter()
    dense_index = dense_index_for(model, ds, index_dir, verbose=verbose)
    timings["dense_index_s"] = time.perf_counter() - started

    text = DocumentText(ds)
    reranker = model.reranker(num_input_docs=num_input_docs, index=dense_index)
    dense = excluding(lambda depth: model.retriever(dense_index, num_results=depth), excluded, top_k)
    feedback = reranker.prompt.num_input_docs
    systems = [first_stage % top_k,
               first_stage % top_k >> text >> reranker,
               dense % top_k,
               dense % top_k >> text >> reranker,
               first_stage % feedback >> text >> model.prompt_encoder(num_input_docs=feedback)
               >> excluding(lambda depth: dense_index.retriever(num_results=depth), excluded, top_k)]
    topics = all_topics if num_queries is None else all_topics.head(num_queries)
    runs, mrt = [], {}
    for name, system in zip(SYSTEMS, systems):
        started = time.perf_counter()
        runs.append(transform_by_query(system, topics, verbose=verbose))
        mrt[name] = (time.perf_counter() - started) * 1000 / len(topics)
    if runs[0] is None:  # not process 0, which evaluates the merged runs
        return None
    table = pt.Experiment(runs, topics, qrels, eval_metrics=RUN_MEASURES, names=SYSTEMS,
                          verbose=verbose)
    results = {row["name"]: {**{str(m): float(row[str(m)]) for m in RUN_MEASURES}, "mrt": mrt[row["name"]]}
               for _, row in table.iterrows()}
    results["_timings"] = timings
    results["_prompt"] = {"num_input_docs": feedback}
    results["_excluded_ids"] = {"queries": sum(1 for ids in excluded.values() if ids),
                                "ids": sum(map(len, excluded.values()))}
    return results


def dataset_name(source: str) -> str:
    """The name the authors' tasks and the paper's columns are keyed by: an ir_datasets id without ``irds:``,
    ``beir/<folder name>`` for a BEIR folder, else the file's name."""
    if Path(source).exists():
        return f"beir/{Path(source).resolve().name}" if is_beir_folder(source) else Path(source).name
    return source.removeprefix("irds:")


def query_task_for(setting: str, default: Optional[str], source: str) -> Optional[str]:
    """The retrieval instruction of ``--query-task`` on the dataset ``source``: ``"dataset"``, the authors' one
    for it if the model is instructed (``default`` not ``None``); ``"auto"``, ``default``; else ``setting``."""
    if setting == "auto" or (setting == "dataset" and default is None):
        return default
    if setting == "dataset":
        return dataset_query_task(dataset_name(source)) or default
    return setting


def main(args) -> int:
    """``e2rank experiment``: refuses an output that is an input; locks it from before the indexes are built."""
    if args.output:
        refuse_output_as_input(args.output, dataset=args.dataset, model=args.model, index_dir=args.index_dir)
    source = arguments.bright_source(args, args.dataset)
    with main_process_lock(args.output):
        model = arguments.load_model(args)
        model.query_task = query_task_for(args.query_task, model.query_task, source)
        results = run_experiment(source, model, index_dir=args.index_dir, top_k=args.top_k,
                                 num_input_docs=args.num_input_docs, bm25=args.bm25, num_queries=args.num_queries,
                                 verbose=is_main_process())
        if results is None:  # process 0 prints and writes the results
            return 0
        timings, prompt, excluded = results.pop("_timings"), results.pop("_prompt"), results.pop("_excluded_ids")
        print(f"\n{args.dataset} with {args.model} ({args.backend}, {model.precision}; indexes: BM25 "
              f"{timings['bm25_index_s']:.1f}s, "
              f"dense {timings['dense_index_s']:.1f}s; E2Rank prompt: {prompt['num_input_docs']} documents)")
        if excluded["ids"]:
            print(f"BRIGHT's excluded_ids: {excluded['ids']} documents of {excluded['queries']} queries removed from "
                  f"every ranking before its cut")
        print(f"{'system':<16}" + "".join(f"{str(m):>12}" for m in MEASURES))
        for name, scores in results.items():
            print(f"{name:<16}" + "".join(f"{v:>12.4f}" for v in scores.values()))
        if args.output:
            with atomic_file(args.output) as out:
                json.dump(results, out, indent=2)
            print(f"written to {args.output}")
    return 0


def register(parsers: dict) -> None:
    p = parsers["experiment"]
    p.add_argument("--dataset", default="irds:beir/scifact/test",
                   help="irds:<dataset>, a BEIR folder, or a corpus file (see data.dataset)")
    p.add_argument("--output", help="write the results as JSON here")
    arguments.add_options(p, "--model", "--index-dir", "--top-k", "--num-input-docs", "--num-queries", "--query-task",
                          model={"required": False, "default": "all-minilm-l6-v2",
                                 "help": arguments.OPTIONS["--model"]["help"] + " (default: all-minilm-l6-v2)"})
    arguments.add_model_run_options(p)
    arguments.add_bright_options(p)
    p.add_argument("--bm25", choices=sorted(BM25_ENGINES), default="pisa", help="BM25 engine (terrier needs Java)")
    p.set_defaults(func=main)
