"""A run of ``e2rank reproduce`` (``reproduce.reproduce``), one dataset at a time: opened, first stage, reranked
in committed chunks (a killed suite resumes after the last), evaluated. It writes or removes only ``FILES`` in
``output`` and ``DATASET_FILES`` in ``datasets/<folder>/``; process 0 alone writes.
"""
import contextlib
import dataclasses
import importlib
import json
import logging
import logging.handlers
import platform
import time
from pathlib import Path
from typing import List, Optional

import pandas as pd

from .. import data
from ..bm25 import pisa_bm25
from ..bright import drop_excluded, excluding
from ..data import DocumentText, corpus_id, corpus_stamp
from ..index.indexer import distributed_context
from ..io import atomic_file, file_sha256
from ..model.e2rank import E2Rank
from ..model.stats import EncodeStats
from .experiment import dense_index_for, index_name, query_task_for
from .paper import DatasetUnavailable, SuiteDataset, results_table
from .runs import evaluate_run, read_run, run_entries, write_run
from .sharding import (gather_to_main_process, is_main_process, main_process_decides, main_process_first,
                       transform_by_query)

MEASURES = ("nDCG@10", "R@100")
#: Queries reranked and committed together: what a killed suite may rerank again.
QUERIES_PER_CHUNK = 32
FILES = ("settings.json", "results.json", "results.md", "run_record.json", "datasets")
DATASET_FILES = ("made-from.json", "first-stage.run", "bm25-e2rank.run", "results.json")


@contextlib.contextmanager
def _ir_datasets_log():
    """ir_datasets' log records of the block (where it tells how to download a collection by hand)."""
    handler, logger = logging.handlers.BufferingHandler(10_000), logging.getLogger("ir_datasets")
    handler.setLevel(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    try:
        yield handler.buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _open(dataset: SuiteDataset, num_queries: Optional[int]):
    """The dataset, its topics, the first ``num_queries`` of them and their qrels; ``DatasetUnavailable`` with
    ir_datasets' last message when its files cannot be had."""
    with _ir_datasets_log() as records:
        try:
            ds = data.dataset(dataset.source)
            next(iter(ds.irds_ref().docs_iter()), None)  # a collection behind a manual download fails here
            topics = data.dataset_part(ds, "topics", dataset.label)
            qrels = data.dataset_part(ds, "qrels", dataset.label)
        except (OSError, RuntimeError) as e:  # e.g. FileNotFoundError(path), RuntimeError("All download ...")
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            told = f"; ir_datasets said: {records[-1].getMessage()}" if records else ""
            raise DatasetUnavailable(f"{dataset.label}: {type(e).__name__}: {reason}{told}") from None
    topics = topics.assign(qid=topics["qid"].astype(str))
    evaluated = topics if num_queries is None else topics.head(num_queries)
    qrels = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    return ds, topics, evaluated, qrels[qrels["query_id"].astype(str).isin(evaluated["qid"])]  # as pt.Experiment


def _first_line(path, field: int, values: set) -> tuple:
    """``(line number, value)`` of a run file's first candidate whose ``field`` of ``run_entries`` is in ``values``."""
    return next((entry[0], entry[field]) for entry in run_entries(path) if entry[field] in values)


def _pinned_run(path: str, ds, all_topics: pd.DataFrame, *, skip_missing: bool) -> tuple:
    """``(run, {"queries": n, "documents": n} dropped)`` of a run file (``read_run``; of JSONL candidates only the
    ids and scores are used): a query or document the dataset lacks is a ``ValueError`` naming file:line and the
    id, or with ``skip_missing`` dropped and counted."""
    run = read_run(path)
    missing_qids = sorted(set(run["qid"]) - set(all_topics["qid"]))
    docnos = run["docno"].unique().tolist()
    found = ds.irds_ref().docs_store().get_many(docnos)
    missing_docs = [d for d in docnos if d not in found]
    if (missing_qids or missing_docs) and not skip_missing:
        if missing_qids:
            number, qid = _first_line(path, 1, set(missing_qids))
            raise ValueError(f"{path}:{number}: query {qid!r} is not a topic of the dataset "
                             f"({len(missing_qids)} such queries; --skip-missing drops them)")
        number, docno = _first_line(path, 2, set(missing_docs))
        raise ValueError(f"{path}:{number}: document {docno!r} is not in the dataset's corpus "
                         f"({len(missing_docs)} such documents; --skip-missing drops them)")
    dropped = {"queries": len(missing_qids), "documents": len(missing_docs)}
    run = run[run["qid"].isin(all_topics["qid"]) & ~run["docno"].isin(missing_docs)]
    run = run.assign(rank=run.groupby("qid", sort=False).cumcount())
    return run, dropped


class Suite:
    """One run of ``reproduce``, one dataset at a time."""

    def __init__(self, model: E2Rank, output: Path, *, runs, index_dir, top_k, num_input_docs, rerank_task,
                 query_task, dense, num_queries, skip_missing, verbose):
        self.model, self.output, self.runs = model, output, runs
        self.index_dir, self.top_k, self.dense = Path(index_dir), top_k, dense
        self.query_task, self.num_queries, self.skip_missing = query_task, num_queries, skip_missing
        self.verbose = verbose
        self.reranker = model.reranker(num_input_docs=num_input_docs, task=rerank_task, verbose=verbose)
        self.default_query_task = model.query_task
        self.run_digests = {label: file_sha256(path) for label, path in runs.items()}  # each pinned run, once

    def settings(self) -> dict:
        """What the results depend on besides the datasets and first stages: a resumed suite's must be the same."""
        return {"model_fingerprint": self.model.fingerprint(), "prompt": dataclasses.asdict(self.reranker.prompt),
                "top_k": self.top_k, "num_queries": self.num_queries, "query_task": self.query_task,
                "dense": self.dense, "skip_missing": self.skip_missing, "dtype": str(self.model.dtype)}

    def task_of(self, dataset: SuiteDataset) -> Optional[str]:
        return query_task_for(self.query_task, self.default_query_task, dataset.source)

    def run(self, dataset: SuiteDataset) -> Optional[dict]:
        """One dataset's results and record (``datasets/<folder>/results.json``, read back when finished
        before; its folder begun by ``prepare``); ``None`` in the processes other than 0."""
        folder = self.output / "datasets" / dataset.folder
        done = folder / "results.json"
        finished = main_process_decides(lambda: json.loads(done.read_text(encoding="utf-8")) if done.exists() else None)
        if finished is not None:
            return finished
        timings, started = {}, time.perf_counter()
        # process 0 downloads what ir_datasets lacks; an unavailable dataset is raised in each
        ds, all_topics, topics, qrels = main_process_first(lambda: _open(dataset, self.num_queries))
        self.model.clear_doc_cache()  # vectors of another corpus's documents are never needed again
        run, first_stage = main_process_decides(lambda: self.first_stage(dataset, ds, all_topics, topics, folder))
        timings["first_stage_s"] = time.perf_counter() - started
        started = time.perf_counter()
        reranked, work = self.rerank(ds, topics, run, folder / "bm25-e2rank.run")
        timings["rerank_s"] = time.perf_counter() - started
        dense = {}
        if self.dense:
            started = time.perf_counter()
            dense = self.dense_systems(dataset, ds, topics, qrels)
            timings["dense_s"] = time.perf_counter() - started
        if not is_main_process():
            return None
        results = {"bm25": evaluate_run(run, qrels, MEASURES), "bm25>>e2rank": evaluate_run(reranked, qrels, MEASURES),
                   **dense}
        record = {"source": dataset.source, "paper_column": dataset.column, "queries": int(topics["qid"].nunique()),
                  "first_stage": first_stage, "query_task": self.task_of(dataset),
                  "texts_encoded": work.texts, "forward_passes": work.forward_passes, "tokens": work.tokens,
                  "timings": timings}
        finished = {"results": results, "record": record}
        with atomic_file(folder / "results.json") as out:
            json.dump(finished, out, indent=2)
        return finished

    def made_from(self, dataset: SuiteDataset) -> dict:
        """The dataset (``origin``) and the first stage (PISA, or the pinned run file by its digest)."""
        digest = self.run_digests.get(dataset.label)
        first_stage = {"kind": "pisa"} if digest is None else {"kind": "run file", "sha256": digest}
        return {"dataset": dataset.origin, "first_stage": first_stage}

    def first_stage(self, dataset: SuiteDataset, ds, all_topics, topics, folder: Path) -> tuple:
        """``(run, provenance)``: the top ``top_k`` of ``topics`` from the pinned run file or PISA, written once
        to ``first-stage.run`` and read back (the same candidates however often the suite starts); for BRIGHT,
        ``top_k`` more than a query's most excluded ids, those removed before the cut (and counted)."""
        path = folder / "first-stage.run"
        excluded = data.excluded_ids(ds)
        depth = self.top_k + max(map(len, excluded.values()), default=0)
        if dataset.label in self.runs:
            source = self.runs[dataset.label]
            run, dropped = _pinned_run(source, ds, all_topics, skip_missing=self.skip_missing)
            provenance = {"kind": "run file", "path": str(Path(source).resolve()),
                          "sha256": self.run_digests[dataset.label], "dropped": dropped}
            run = run[run["qid"].isin(topics["qid"]) & (run["rank"] < depth)]
        else:
            index = self.index_dir / index_name(corpus_id(ds)) / "bm25.pisa"  # as e2rank experiment
            provenance = {"kind": "pisa", "index": str(index.resolve()), "k1": 0.9, "b": 0.4,
                          "corpus_stamp": corpus_stamp(ds)}
            if not path.exists():
                retrieve = pisa_bm25(str(index), ds, num_results=depth, rebuild_stale=True, verbose=self.verbose)
                run = retrieve(topics[["qid", "query"]])[["qid", "docno", "score", "rank"]]
        if not path.exists():
            write_run(run, path, tag="first-stage")
        run = read_run(path)
        provenance["written"] = {"path": str(path), "sha256": file_sha256(path)}
        if excluded:
            run, removed = drop_excluded(run, excluded)
            provenance["excluded_ids"] = {"removed": removed, "of_top": depth, "rule": "each query's BRIGHT "
                                          "excluded_ids removed from its ranking before reranking and evaluation"}
        return run[run["rank"] < self.top_k], provenance

    def rerank(self, ds, topics: pd.DataFrame, run: pd.DataFrame, path: Path) -> tuple:
        """``(reranked run, work)``: ``run`` reranked ``QUERIES_PER_CHUNK`` queries at a time (split across the
        processes), ``path`` rewritten with every query reranked so far after each chunk, so that a resumed suite
        goes on after them; ``(None, None)`` in the others than 0."""
        text = DocumentText(ds)
        committed = main_process_decides(lambda: read_run(path) if path.exists() else None)
        done = set() if committed is None else set(committed["qid"])
        retrieved = set(run["qid"]) - done
        qids = [q for q in topics["qid"] if q in retrieved]
        work = EncodeStats()
        for start in range(0, len(qids), QUERIES_PER_CHUNK):
            chunk = run[run["qid"].isin(qids[start:start + QUERIES_PER_CHUNK])]
            candidates = text(chunk.merge(topics[["qid", "query"]], on="qid"))
            with self.model.counting() as counted:
                reranked = transform_by_query(self.reranker, candidates)
            work.add(counted)
            if reranked is not None:  # process 0 commits the merged chunk
                write_run(pd.concat([committed, reranked], ignore_index=True), path, tag="e2rank")
                committed = read_run(path)
        works = gather_to_main_process(work)
        if works is None:
            return None, None
        return (run.iloc[:0] if committed is None else committed), sum(works, EncodeStats())

    def dense_systems(self, dataset: SuiteDataset, ds, topics, qrels) -> dict:
        """``dense`` and ``dense>>e2rank`` with the dataset's retrieval instruction (``{}`` in the others than 0)."""
        task, self.model.query_task = self.model.query_task, self.task_of(dataset)
        cache, self.model.doc_cache = self.model.doc_cache, None  # the corpus's vectors go to the index, not here
        try:
            index = dense_index_for(self.model, ds, str(self.index_dir), verbose=self.verbose)
            retriever = excluding(lambda depth: self.model.retriever(index, num_results=depth),
                                  data.excluded_ids(ds), self.top_k)
            reranker = self.model.reranker(num_input_docs=self.reranker.prompt.num_input_docs,
                                           task=self.reranker.prompt.task, index=index)
            queries = topics[["qid", "query"]]
            dense = transform_by_query(retriever, queries)
            reranked = transform_by_query(retriever >> DocumentText(ds) >> reranker, queries)
        finally:
            self.model.query_task, self.model.doc_cache = task, cache
        if dense is None:  # not process 0
            return {}
        return {"dense": evaluate_run(dense, qrels, MEASURES), "dense>>e2rank": evaluate_run(reranked, qrels, MEASURES)}

    def prepare(self, datasets: List[SuiteDataset], overwrite: bool) -> None:
        """Refuses names of reproduce's that it did not write and, unless ``overwrite`` (which removes what an
        earlier suite wrote), a suite of other settings or a dataset folder begun from another dataset or first
        stage; then writes the marks: ``settings.json``, each dataset folder's ``made-from.json``."""
        path, settings = self.output / "settings.json", self.settings()
        _check_mark(path, settings, FILES, overwrite, f"{self.output} (a suite run)")
        marks = {self.output / "datasets" / dataset.folder / "made-from.json": dataset for dataset in datasets}
        for mark, dataset in marks.items():
            _check_mark(mark, self.made_from(dataset), DATASET_FILES, overwrite, f"{mark}: {dataset.label}")
        if overwrite:
            _remove_written(self.output)
        with atomic_file(path) as out:
            json.dump(settings, out, indent=2, default=str)
        for mark, dataset in marks.items():  # each folder's mark, before anything else of it
            if not mark.exists():
                mark.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(mark) as out:
                    json.dump(self.made_from(dataset), out)

    def write_outputs(self, datasets: List[SuiteDataset], finished: dict, unavailable: dict) -> None:
        """``results.json``, ``run_record.json`` and ``results.md`` of the datasets ``finished`` so far."""
        model = self.model
        results = {label: done["results"] for label, done in finished.items()}
        record = {"model": model.model_name_or_path, "checkpoint": str(model.checkpoint_path),
                  "revision": getattr(model.backbone.config, "_commit_hash", None), "fingerprint": model.fingerprint(),
                  "versions": _versions(), "device": str(model.device), "dtype": str(model.dtype),
                  "prompt": dataclasses.asdict(self.reranker.prompt), "top_k": self.top_k,
                  "num_queries": self.num_queries, "processes": distributed_context()[1],
                  "datasets": {label: done["record"] for label, done in finished.items()},
                  "skipped": unavailable}
        for name, content in (("results.json", results), ("run_record.json", record)):
            with atomic_file(self.output / name) as out:
                json.dump(content, out, indent=2, default=str)
        with atomic_file(self.output / "results.md") as out:
            out.write(results_table(model.model_name_or_path, [d for d in datasets if d.label in finished], finished,
                                    unavailable))


def _check_mark(mark: Path, now: dict, names, overwrite: bool, what: str, command: str = "e2rank reproduce") -> None:
    """Refuses ``mark``'s folder holding any of ``names`` without ``mark`` (not ``command``'s to replace), or,
    unless ``overwrite``, a ``mark`` of other values than ``now``."""
    if not mark.exists():
        found = [name for name in names if (mark.parent / name).exists() or (mark.parent / name).is_symlink()]
        if found:
            raise FileExistsError(f"{mark.parent} holds {', '.join(found)} but no {mark.name} of {command}: "
                                  f"not written by it, so not replaced; nothing was written. Move them, or choose "
                                  f"another --output")
    elif not overwrite:
        before, now = json.loads(mark.read_text(encoding="utf-8")), json.loads(json.dumps(now, default=str))
        differ = [key for key in now if before.get(key) != now[key]]
        if differ:
            was, then = json.dumps([before.get(k) for k in differ]), json.dumps([now[k] for k in differ])
            raise ValueError(f"{what} was begun with other {', '.join(differ)} ({was}, now {then}); pass "
                             f"--overwrite to start afresh, or choose another --output")


def _remove_written(output: Path) -> None:
    """Removes what an earlier suite wrote in ``output`` and the folders left empty; the marks go last, so an
    interrupted removal can be done again."""
    datasets = output / "datasets"
    for folder in (datasets.iterdir() if _is_folder(datasets) else ()):
        if (folder / "made-from.json").is_file():
            _remove(folder, DATASET_FILES)
    _remove(datasets, ())
    _remove(output, FILES, keep_folder=True)


def _remove(folder: Path, names, *, keep_folder: bool = False) -> None:
    """Removes the files ``names`` of ``folder`` (the mark, first of them, last), then ``folder`` if empty."""
    for name in reversed(names):
        if (folder / name).is_file() or (folder / name).is_symlink():
            (folder / name).unlink()
    if not keep_folder and _is_folder(folder) and not any(folder.iterdir()):
        folder.rmdir()


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _versions() -> dict:
    from .. import __version__
    return {"pyterrier_e2rank": __version__, "python": platform.python_version(),
            **{name: importlib.import_module(name).__version__ for name in
               ("torch", "transformers", "pyterrier", "ir_datasets")}}
