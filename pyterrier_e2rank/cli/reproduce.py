"""``e2rank reproduce``: the paper's evaluation in one command (pt_docs/specification.rst §7).

    e2rank reproduce --model Alibaba-NLP/E2Rank-0.6B --suite paper --output runs/e2rank-0.6b
    e2rank reproduce --model my-model --dataset irds:beir/scifact/test --run irds:beir/scifact/test=bm25.run \\
        --output runs/mine

Per dataset: BM25 top 100 (PISA, the index built once per corpus and reused as ``e2rank experiment`` does,
or a pinned TREC run file), reranked by E2Rank with the published listwise prompt (the generic task
sentence, 20 prompt documents, documents cut to 1,024 words). Rerank-only: no corpus index; each distinct
candidate is encoded once (the model's document-vector cache, emptied per dataset). ``dense=True`` adds
dense retrieval and its reranking (the dense index built or reused as ``e2rank experiment`` does); only
these rows read the per-dataset retrieval instruction: the authors' listwise reranking embeds the prompt,
never the instructed query (their ``src/eval.py`` sets ``EVAL_PROMPTS`` only in its ``embedding`` mode).

The output directory holds ``results.json`` (``{dataset: {system: {measure: value}}}``), ``results.md``
(the table, with the paper's figures beside ours) and ``run_record.json`` (model, versions, settings,
first-stage provenance with digests, timings, texts encoded); under ``datasets/<index_name(dataset)>/`` each
dataset's ``made-from.json`` (its dataset and first stage), first-stage and reranked runs and its finished
``results.json``. A killed suite started again with the same command keeps finished datasets and reranked
chunks of queries; ``overwrite=True`` starts afresh, removing only what reproduce wrote (``_FILES``).

Under ``torchrun``/``accelerate launch`` (``torchrun --nproc-per-node 8 -m pyterrier_e2rank.cli.main -- reproduce
...``) each dataset's queries are split across the processes, each on its own GPU; process 0 merges, and is
the one that builds the PISA indexes and writes ``output`` (``reproduce``).
"""
import contextlib
import dataclasses
import difflib
import json
import logging
import platform
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import pandas as pd

from ..bm25 import pisa_bm25
from ..index.indexer import distributed_context
from ..checks import positive_int
from ..io import atomic_file, file_sha256, numbered_lines, refuse_output_as_input, writer_lock
from ..model.e2rank import E2Rank
from ..model.stats import EncodeStats
from ..model.text import DEFAULT_RERANK_TASK, DOC_MAX_WORDS, dataset_query_task
from .. import data
from ..data import DocumentText, corpus_id, corpus_stamp, is_beir_folder
from . import arguments
from .experiment import dense_index_for, index_name
from .runs import evaluate_run, read_run, write_run
from .sharding import (gather_to_main_process, is_main_process, main_process_decides, main_process_first,
                       process_device, transform_by_query)

#: The paper's columns (pt_docs/specification.rst §8); the last eight are BEIR's, averaged as "BEIR avg".
PAPER_COLUMNS = ("DL19", "DL20", "Covid", "NFC", "Touche", "DBPedia", "SciFact", "Signal", "News", "Robust04")
BEIR_COLUMNS = PAPER_COLUMNS[2:]
#: nDCG@10 x 100 of the paper's tables, reranking BM25 top-100 (pt_docs/specification.rst §8), by row.
PAPER_FIGURES = {
    "BM25": (50.58, 47.96, 59.47, 30.75, 44.22, 31.80, 67.89, 33.05, 39.52, 40.70),
    "E2Rank-0.6B": (70.84, 70.15, 79.17, 38.60, 41.91, 41.96, 73.43, 35.26, 52.75, 53.67),
    "E2Rank-4B": (70.44, 70.64, 83.30, 39.20, 43.16, 42.95, 77.19, 34.48, 52.71, 60.16),
    "E2Rank-8B": (72.95, 71.16, 84.09, 39.08, 42.06, 43.44, 77.49, 34.01, 54.25, 60.34),
}
#: Dataset names (ir_datasets ids without ``irds:``, a local BEIR folder as ``beir/<folder name>``) -> column.
PAPER_DATASETS = {
    "msmarco-passage/trec-dl-2019": "DL19", "msmarco-passage/trec-dl-2020": "DL20", "beir/trec-covid": "Covid",
    "beir/nfcorpus": "NFC", "beir/webis-touche2020/v2": "Touche", "beir/dbpedia-entity": "DBPedia",
    "beir/scifact": "SciFact", "beir/signal1m": "Signal", "beir/trec-news": "News", "beir/robust04": "Robust04",
}
#: The paper's suite: ir_datasets ids, and for the three collections ir_datasets does not serve in their
#: BEIR form, the folder name BEIR's scripts give them (the user builds it and passes its path).
PAPER_SUITE = ("irds:msmarco-passage/trec-dl-2019/judged", "irds:msmarco-passage/trec-dl-2020/judged",
               "irds:beir/trec-covid", "irds:beir/nfcorpus/test", "irds:beir/webis-touche2020/v2",
               "irds:beir/dbpedia-entity/test", "irds:beir/scifact/test", "signal1m", "trec-news", "robust04")
_LOCAL_ONLY = {"signal1m": "Signal", "trec-news": "News", "robust04": "Robust04"}
MEASURES = ("nDCG@10", "R@100")
SYSTEMS = ("bm25", "bm25>>e2rank")
DENSE_SYSTEMS = ("dense", "dense>>e2rank")
#: Queries reranked and committed together: what a killed suite may rerank again.
QUERIES_PER_CHUNK = 32
#: The names reproduce writes, and the only ones it replaces or removes: in ``output`` (``settings.json``, written
#: first, marks a suite's folder), in each ``datasets/<folder>/`` (``made-from.json``, written first, marks it
#: ours) and in its ``reranked/`` (the chunks). Anything else there is the user's: kept, or refused if in the way.
_FILES = ("settings.json", "results.json", "results.md", "run_record.json", "datasets")
_DATASET_FILES = ("made-from.json", "first-stage.run", "reranked", "bm25-e2rank.run", "results.json")
_CHUNK = re.compile(r"\d{5}\.run")


class DatasetUnavailable(RuntimeError):
    """A dataset that cannot be read here (a manual download, no network): the suite skips it, saying why."""


@dataclasses.dataclass(frozen=True)
class _Dataset:
    label: str       # as the user gave it: the key of results.json and of ``runs``
    source: str      # what ``data.dataset`` opens
    name: str        # ir_datasets id without ``irds:``, or ``beir/<folder>`` (tasks and paper columns)

    @property
    def column(self) -> Optional[str]:
        return next((c for key, c in PAPER_DATASETS.items() if self.name == key or self.name.startswith(key + "/")),
                    None)

    @property
    def folder(self) -> str:
        """Its folder under ``datasets/``: one per label (``index_name``: readable, and a digest of the label)."""
        return index_name(self.label)

    @property
    def origin(self) -> str:
        """What the label opened: the ir_datasets id, or the absolute path of the folder or file."""
        return self.source if self.source.startswith("irds:") else str(Path(self.source).resolve())


def resolve_dataset(source: str) -> _Dataset:
    """A dataset argument checked: an existing folder or file (``data.dataset``), or an ir_datasets id with
    or without ``irds:``. An unknown id is a ``ValueError`` listing the closest names of ir_datasets'
    registry; ``signal1m``, ``trec-news`` and ``robust04`` (no BEIR form in ir_datasets) say how to pass
    their BEIR folder."""
    import ir_datasets
    if Path(source).exists():
        name = f"beir/{Path(source).resolve().name}" if is_beir_folder(source) else Path(source).name
        return _Dataset(source, str(Path(source)), name)
    name = source.removeprefix("irds:")
    if name in _LOCAL_ONLY:
        raise DatasetUnavailable(
            f"{source}: ir_datasets does not serve BEIR's {name}; build its BEIR folder with BEIR's scripts "
            f"(github.com/beir-cellar/beir) and pass the folder's path as --dataset")
    try:
        ir_datasets.registry[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(ir_datasets.registry), n=6, cutoff=0.5)
        raise ValueError(f"dataset {source!r}: no such file or folder, and not an ir_datasets id"
                         + (f"; close names: {', '.join('irds:' + c for c in close)}" if close else "")) from None
    return _Dataset(source, f"irds:{name}", name)


def paper_row(model_name: str) -> Optional[str]:
    """The paper's row for a model (``E2Rank-0.6B`` for ``Alibaba-NLP/E2Rank-0.6B`` or a folder of that
    name); ``None`` for a model the paper does not report."""
    base = Path(str(model_name).rstrip("/")).name.lower()
    return next((row for row in PAPER_FIGURES if row != "BM25" and row.lower() == base), None)


def parse_runs(pairs: Sequence[str], labels: Sequence[str]) -> Dict[str, str]:
    """``["D=PATH", ...]`` -> ``{D: PATH}``; D must be one of ``labels`` (the ``--dataset`` arguments), once."""
    runs = {}
    for pair in pairs:
        label, sep, path = pair.partition("=")  # a path may hold "="; the datasets' names do not
        if not sep or not label or not path:
            raise ValueError(f"--run {pair!r}: expected DATASET=PATH, DATASET as given to --dataset")
        if label in runs:
            raise ValueError(f"--run: two run files for dataset {label!r} ({runs[label]} and {path}); give one")
        if label not in labels:
            raise ValueError(f"--run {pair!r}: {label!r} is not one of the datasets {list(labels)}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--run {pair!r}: no such file {path}")
        runs[label] = path
    return runs


@contextlib.contextmanager
def _ir_datasets_messages():
    """Collects ir_datasets' log messages: a manual download's instructions are logged, then a bare
    ``FileNotFoundError`` raised, so an unavailable dataset is reported with the last message."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
    handler, logger = Collect(logging.INFO), logging.getLogger("ir_datasets")
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _open(dataset: _Dataset, num_queries: Optional[int]):
    """The dataset, its topics, the topics evaluated (the first ``num_queries``) and their qrels;
    ``DatasetUnavailable`` with ir_datasets' message when its files cannot be had."""
    with _ir_datasets_messages() as messages:
        try:
            ds = data.dataset(dataset.source)
            next(iter(ds.irds_ref().docs_iter()), None)  # a collection behind a manual download fails here
            topics = data.dataset_part(ds, "topics", dataset.label)
            qrels = data.dataset_part(ds, "qrels", dataset.label)
        except (OSError, RuntimeError) as e:  # e.g. FileNotFoundError(path), RuntimeError("All download ...")
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            told = f"; ir_datasets said: {messages[-1]}" if messages else ""  # a manual download's instructions
            raise DatasetUnavailable(f"{dataset.label}: {type(e).__name__}: {reason}{told}") from None
    topics = topics.assign(qid=topics["qid"].astype(str))
    evaluated = topics if num_queries is None else topics.head(num_queries)
    qrels = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    return ds, topics, evaluated, qrels[qrels["query_id"].astype(str).isin(evaluated["qid"])]  # as pt.Experiment


def _first_line(path, column: int, values: set) -> tuple:
    """``(line number, value)`` of the first line of a run file whose ``column``-th field is in ``values``."""
    return next((number, line.split()[column]) for number, line in numbered_lines(path)
                if line.split()[column] in values)


def _pinned_run(path: str, ds, all_topics: pd.DataFrame, *, skip_missing: bool) -> tuple:
    """The run file read strictly (``runs.read_run``), checked against the dataset: a query it lacks or a
    document its corpus lacks is an error naming file:line and the id, or with ``skip_missing`` dropped and
    counted. Returns ``(run, {"queries": n, "documents": n} dropped)``."""
    run = read_run(path)
    missing_qids = sorted(set(run["qid"]) - set(all_topics["qid"]))
    docnos = run["docno"].unique().tolist()
    found = ds.irds_ref().docs_store().get_many(docnos)
    missing_docs = [d for d in docnos if d not in found]
    if (missing_qids or missing_docs) and not skip_missing:
        if missing_qids:
            number, qid = _first_line(path, 0, set(missing_qids))
            raise ValueError(f"{path}:{number}: query {qid!r} is not a topic of the dataset "
                             f"({len(missing_qids)} such queries; --skip-missing drops them)")
        number, docno = _first_line(path, 2, set(missing_docs))
        raise ValueError(f"{path}:{number}: document {docno!r} is not in the dataset's corpus "
                         f"({len(missing_docs)} such documents; --skip-missing drops them)")
    dropped = {"queries": len(missing_qids), "documents": len(missing_docs)}
    run = run[run["qid"].isin(all_topics["qid"]) & ~run["docno"].isin(missing_docs)]
    run = run.assign(rank=run.groupby("qid", sort=False).cumcount())
    return run, dropped


def _rerank(pipeline, candidates: pd.DataFrame) -> Optional[pd.DataFrame]:
    """Every dataset's candidates are reranked here: ``pipeline`` (the E2Rank reranker) on the frame
    ``qid, query, docno, text, score, rank`` of some queries, the queries split across the processes of a
    launcher (``sharding.transform_by_query``): process 0 gets the whole reranked frame, the others ``None``."""
    return transform_by_query(pipeline, candidates)


class _Suite:
    """One run of ``reproduce``: the settings, the output directory's state, and one dataset at a time."""

    def __init__(self, model: E2Rank, output: Path, *, runs, index_dir, top_k, num_input_docs, rerank_task,
                 query_task, dense, num_queries, skip_missing, verbose):
        self.model, self.output, self.runs = model, output, runs
        self.index_dir, self.top_k, self.dense = Path(index_dir), top_k, dense
        self.query_task, self.num_queries, self.skip_missing = query_task, num_queries, skip_missing
        self.verbose = verbose
        self.reranker = model.reranker(num_input_docs=num_input_docs, task=rerank_task, verbose=verbose)
        self.default_query_task = model.query_task

    def settings(self) -> dict:
        """What the results depend on besides the datasets and their first stages (``check_made_from``);
        a resumed suite must have the same."""
        return {"model_fingerprint": self.model.fingerprint(), "prompt": dataclasses.asdict(self.reranker.prompt),
                "top_k": self.top_k, "num_queries": self.num_queries, "query_task": self.query_task,
                "dense": self.dense, "skip_missing": self.skip_missing, "dtype": str(self.model.dtype)}

    def task_of(self, dataset: _Dataset) -> Optional[str]:
        if self.query_task not in ("dataset", "auto"):
            return self.query_task
        if self.query_task == "auto" or self.default_query_task is None:  # an encoder without instructions
            return None
        return dataset_query_task(dataset.name) or self.default_query_task

    def run(self, dataset: _Dataset) -> Optional[dict]:
        """One dataset's results and record, from ``datasets/<name>/results.json`` when finished before.

        Under a launcher every process calls this: each reranks (and with ``dense`` retrieves for) its block
        of the queries, process 0 decides what is finished (``resumed``), builds the PISA index, writes every
        file and returns the results; the others return ``None``, or a finished dataset's results as process 0
        read them back."""
        folder = self.output / "datasets" / dataset.folder
        finished = main_process_decides(lambda: self.resumed(dataset, folder))
        if finished is not None:
            return finished
        timings, started = {}, time.perf_counter()
        with main_process_first():  # process 0 downloads what ir_datasets lacks; an unavailable dataset in each
            ds, all_topics, topics, qrels = _open(dataset, self.num_queries)
        self.model.clear_doc_cache()  # vectors of another corpus's documents are never needed again
        run, first_stage = main_process_decides(lambda: self.first_stage(dataset, ds, all_topics, topics, folder))
        timings["first_stage_s"] = time.perf_counter() - started
        started = time.perf_counter()
        reranked, work = self.rerank(ds, topics, run, folder / "reranked")
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
        write_run(reranked, folder / "bm25-e2rank.run", tag="e2rank")
        record = {"source": dataset.source, "paper_column": dataset.column, "queries": int(topics["qid"].nunique()),
                  "first_stage": first_stage, "query_task": self.task_of(dataset),
                  "texts_encoded": work.texts, "forward_passes": work.forward_passes, "tokens": work.tokens,
                  "timings": timings}
        done = folder / "results.json"
        finished = {"results": results, "record": record}
        with atomic_file(done) as out:
            json.dump(finished, out, indent=2)
        _remove_chunks(folder / "reranked")
        return finished

    def resumed(self, dataset: _Dataset, folder: Path) -> Optional[dict]:
        """The dataset's finished results and record (``folder/results.json``), ``None`` when not finished;
        ``folder/made-from.json`` is checked (``check_made_from``), or written before anything else of it."""
        path = folder / "made-from.json"
        if self.check_made_from(dataset, folder):
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as out:
                json.dump(self.made_from(dataset), out)
        done = folder / "results.json"
        return json.loads(done.read_text(encoding="utf-8")) if done.exists() else None

    def made_from(self, dataset: _Dataset) -> dict:
        """What a dataset folder's files are made from: the dataset (``origin``) and the first stage (PISA,
        or the pinned run file by its digest)."""
        pinned = self.runs.get(dataset.label)
        first_stage = {"kind": "pisa"} if pinned is None else {"kind": "run file", "sha256": file_sha256(pinned)}
        return {"dataset": dataset.origin, "first_stage": first_stage}

    def check_made_from(self, dataset: _Dataset, folder: Path, *, overwrite: bool = False) -> bool:
        """Whether ``folder`` is new to the dataset (no ``made-from.json``, and none of the names reproduce
        writes: those would not be ours, and are refused, naming them). Otherwise its ``made-from.json`` must
        be ``made_from(dataset)`` (unless ``overwrite``): another dataset or first stage is refused, naming it."""
        path, made_from = folder / "made-from.json", self.made_from(dataset)
        if not path.exists():
            _refuse_foreign(folder, _DATASET_FILES, "made-from.json of e2rank reproduce")
            return True
        if overwrite:
            return False
        before = json.loads(path.read_text(encoding="utf-8"))
        for key, what in (("dataset", "dataset"), ("first_stage", "first stage")):
            if before.get(key) != made_from[key]:
                raise ValueError(f"{path}: {dataset.label} was begun from another {what} ({json.dumps(before.get(key))}"
                                 f", now {json.dumps(made_from[key])}); pass --overwrite to start afresh, or choose "
                                 f"another --output")
        return False

    def first_stage(self, dataset: _Dataset, ds, all_topics, topics, folder: Path) -> tuple:
        """BM25 top ``top_k`` of ``topics``: from the pinned run file, else PISA; written once to
        ``first-stage.run``, which a resumed suite reads back (the same candidates)."""
        path = folder / "first-stage.run"
        if dataset.label in self.runs:
            source = self.runs[dataset.label]
            run, dropped = _pinned_run(source, ds, all_topics, skip_missing=self.skip_missing)
            provenance = {"kind": "run file", "path": str(Path(source).resolve()), "sha256": file_sha256(source),
                          "dropped": dropped}
            run = run[run["qid"].isin(topics["qid"]) & (run["rank"] < self.top_k)]
        else:
            index = self.index_dir / index_name(corpus_id(ds)) / "bm25.pisa"  # as e2rank experiment
            provenance = {"kind": "pisa", "index": str(index.resolve()), "k1": 0.9, "b": 0.4,
                          "corpus_stamp": corpus_stamp(ds)}
            if not path.exists():
                retrieve = pisa_bm25(str(index), ds, num_results=self.top_k, rebuild_stale=True, verbose=self.verbose)
                run = retrieve(topics[["qid", "query"]])[["qid", "docno", "score", "rank"]]
        if not path.exists():
            write_run(run, path, tag="first-stage")
        run = read_run(path)  # what was written: one set of candidates however often the suite starts
        provenance["written"] = {"path": str(path), "sha256": file_sha256(path)}
        return run, provenance

    def rerank(self, ds, topics: pd.DataFrame, run: pd.DataFrame, chunks: Path) -> tuple:
        """``run`` reranked, ``QUERIES_PER_CHUNK`` queries at a time, each chunk committed to ``chunks/`` so a
        killed suite resumes after it; returns the reranked frame and the work of the chunks reranked now.

        Under a launcher, process 0 decides once which chunks are pending, before any is written; each chunk's
        queries are split across the processes, process 0 writes the merged chunk and returns the frame and
        the work of all processes; the others return ``(None, None)``."""
        text = DocumentText(ds)
        retrieved = set(run["qid"])
        qids = [q for q in topics["qid"] if q in retrieved]
        paths = [chunks / f"{number:05d}.run" for number in range(-(-len(qids) // QUERIES_PER_CHUNK))]
        pending = main_process_decides(lambda: [number for number, path in enumerate(paths) if not path.exists()])
        work = EncodeStats()
        for number in pending:
            start = number * QUERIES_PER_CHUNK
            chunk = run[run["qid"].isin(qids[start:start + QUERIES_PER_CHUNK])]
            candidates = text(chunk.merge(topics[["qid", "query"]], on="qid"))
            with self.model.counting() as counted:
                reranked = _rerank(self.reranker, candidates)
            work.add(counted)
            if reranked is not None:  # process 0 writes the merged chunk
                write_run(reranked, paths[number], tag="e2rank")
        works = gather_to_main_process(work)
        if works is None:
            return None, None
        parts = [read_run(path) for path in paths]
        reranked = pd.concat(parts, ignore_index=True) if parts else run.iloc[:0]
        return reranked, sum(works, EncodeStats())

    def dense_systems(self, dataset: _Dataset, ds, topics, qrels) -> dict:
        """``dense`` and ``dense>>e2rank`` with the dataset's retrieval instruction (in process 0; ``{}`` in
        the others of a launcher, each retrieving and reranking its block of the queries); the model's
        instruction and document cache are restored afterwards."""
        task, self.model.query_task = self.model.query_task, self.task_of(dataset)
        cache, self.model.doc_cache = self.model.doc_cache, None  # the corpus's vectors go to the index, not here
        try:
            index = dense_index_for(self.model, ds, str(self.index_dir), verbose=self.verbose)
            retriever = self.model.retriever(index, num_results=self.top_k)
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


def reproduce(model: Union[str, E2Rank], datasets: Sequence[str], output, *, runs: Optional[Dict[str, str]] = None,
              index_dir="indexes", top_k: int = 100, num_input_docs: int = 20, rerank_task: str = DEFAULT_RERANK_TASK,
              query_task: str = "dataset", dense: bool = False, num_queries: Optional[int] = None,
              skip_missing: bool = False, overwrite: bool = False, verbose: bool = True) -> Optional[dict]:
    """Runs the paper's protocol on ``datasets`` and writes ``output/results.{json,md}`` and
    ``output/run_record.json``; returns ``{dataset: {system: {measure: value}}}``.

    Args:
        model: a model name or path (loaded with ``cache_doc_vectors=True``), or an ``E2Rank`` made with
            ``cache_doc_vectors=True`` (each distinct candidate encoded once; the cache is emptied per dataset).
        datasets: ir_datasets ids (``irds:`` optional), BEIR folders or corpus files (``data.dataset``).
        runs: ``{dataset: TREC run file}``, pinned first stages instead of PISA BM25.
        index_dir: where the PISA (and with ``dense``, the dense) indexes are built or reused.
        num_input_docs, rerank_task: the listwise prompt (the paper's: 20 documents, the generic sentence).
        query_task: ``"dataset"`` (the authors' per-dataset instruction, for instructed models), ``"auto"`` (the
            model's default) or a sentence; read by the dense rows only.
        num_queries: the first N topics of each dataset (a quick look).
        skip_missing: drop, and count in the notes, run-file queries or documents the dataset lacks.
        overwrite: discard what an earlier suite wrote to ``output`` instead of resuming it.

    Errors: an unknown dataset id (``ValueError`` with close names), a run file naming an unknown query or
    document (``ValueError`` naming file:line and the id), an ``output`` holding a suite of other settings
    or a dataset's folder made from another dataset or first stage (``ValueError`` naming them), files of
    reproduce's names in a folder it did not write (``FileExistsError`` naming them), an input inside what it
    writes (``ValueError``), another writer (``ArtifactLocked``); all before anything is written. A dataset
    that cannot be had (a manual download, no network) is skipped, and said so in the table's notes.

    Under ``torchrun``/``accelerate launch`` every process calls this with the same arguments (a model name
    is loaded on the process's own device, ``sharding.process_device``): the queries of each dataset are
    split across the processes, process 0 alone takes ``output``'s lock, decides what a resumed suite finds
    done, builds the PISA indexes (the dense ones are built sharded), writes every file (``texts_encoded``
    and the other counts summed over the processes) and returns the results; the others return ``None``. An
    error of process 0 (the lock, other settings) is raised in every process."""
    output, runs = Path(output), dict(runs or {})
    for name in _FILES:  # what reproduce replaces or adds to is none of its inputs
        refuse_output_as_input(output / name, model=model if isinstance(model, str) else None, index_dir=index_dir,
                               **{f"--dataset {d}": d for d in datasets}, **{f"--run {k}": v for k, v in runs.items()})
    main = is_main_process()
    checked, unavailable = [], {}
    for source in dict.fromkeys(datasets):
        try:
            checked.append(resolve_dataset(source))
        except DatasetUnavailable as e:
            unavailable[source] = str(e)
    given = {d.column for d in checked}  # a BEIR folder given for a suite entry ir_datasets does not serve
    unavailable = {k: why for k, why in unavailable.items() if _LOCAL_ONLY.get(k.removeprefix("irds:")) not in given}
    parse_runs([f"{k}={v}" for k, v in runs.items()], [d.label for d in checked])
    if isinstance(model, str):
        model = E2Rank(model, device=process_device(None), cache_doc_vectors=True, verbose=verbose and main)
    elif model.doc_cache is None:
        raise ValueError(f"{model!r}: reproduce encodes each distinct candidate once through the model's "
                         f"document cache; load it with cache_doc_vectors=True, or pass its name")
    suite = _Suite(model, output, runs=runs, index_dir=index_dir, top_k=top_k, num_input_docs=num_input_docs,
                   rerank_task=rerank_task, query_task=query_task, dense=dense, num_queries=num_queries,
                   skip_missing=skip_missing, verbose=verbose)
    output.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        def take_output():  # by process 0 alone, the one writer
            held.enter_context(writer_lock(output))
            _prepare(output, suite, checked, overwrite)
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
                _write_outputs(output, suite, checked, finished, unavailable)
    if not main:
        return None
    if verbose:
        print((output / "results.md").read_text(encoding="utf-8"))
    return {label: done["results"] for label, done in finished.items()}


def _prepare(output: Path, suite: _Suite, datasets: List[_Dataset], overwrite: bool) -> None:
    """Before anything is written: resume only a suite of the same settings (``settings.json``) and of the
    same datasets (``check_made_from``); refuse names reproduce writes that an earlier suite did not, naming
    them. ``overwrite`` removes what an earlier suite wrote (``_remove_written``) and nothing else."""
    path, settings = output / "settings.json", suite.settings()
    if not path.exists():
        _refuse_foreign(output, _FILES, "settings.json of e2rank reproduce")
    elif not overwrite:
        before = json.loads(path.read_text(encoding="utf-8"))
        now = json.loads(json.dumps(settings, default=str))  # as stored
        differ = [k for k in now if before.get(k) != now[k]]
        if differ:
            raise ValueError(f"{output} holds a suite run with other settings ({', '.join(differ)}); pass "
                             f"--overwrite to start it afresh, or choose another --output")
    for dataset in datasets:
        suite.check_made_from(dataset, output / "datasets" / dataset.folder, overwrite=overwrite)
    if overwrite:
        _remove_written(output)
    with atomic_file(path) as out:
        json.dump(settings, out, indent=2, default=str)


def _refuse_foreign(folder: Path, names, marker: str) -> None:
    """Raise, naming them, when ``folder`` holds any of ``names`` (those reproduce writes) without ``marker``:
    they are not ours to replace."""
    found = [name for name in names if (folder / name).exists() or (folder / name).is_symlink()]
    if found:
        raise FileExistsError(f"{folder} holds {', '.join(found)} but no {marker}: not written by it, so not "
                              f"replaced; nothing was written. Move them, or choose another --output")


def _remove_written(output: Path) -> None:
    """Remove what an earlier suite wrote in ``output`` (``_FILES``; in each ``datasets/<folder>`` carrying
    ``made-from.json``, ``_DATASET_FILES`` and the chunks) and the folders left empty; anything else is kept.
    The marks (``settings.json``, ``made-from.json``) go last, so an interrupted removal can be done again."""
    datasets = output / "datasets"
    for folder in (datasets.iterdir() if datasets.is_dir() and not datasets.is_symlink() else ()):
        if (folder / "made-from.json").is_file():
            _remove_chunks(folder / "reranked")
            _unlink_files(folder, _DATASET_FILES)
            _remove_if_empty(folder)
    _remove_if_empty(datasets)
    _unlink_files(output, _FILES)


def _remove_chunks(reranked: Path) -> None:
    """Remove the chunks reproduce wrote in ``reranked`` (``00000.run``, ...), and the folder if then empty."""
    if reranked.is_dir() and not reranked.is_symlink():
        for chunk in reranked.iterdir():
            if _CHUNK.fullmatch(chunk.name) and chunk.is_file():
                chunk.unlink()
        _remove_if_empty(reranked)


def _unlink_files(folder: Path, names) -> None:
    for name in reversed(names):  # the mark, first of the names, last
        if (folder / name).is_file() or (folder / name).is_symlink():
            (folder / name).unlink()


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()


def _versions() -> dict:
    import ir_datasets
    import pyterrier
    import torch
    import transformers
    from .. import __version__
    return {"pyterrier_e2rank": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "pyterrier": pyterrier.__version__, "ir_datasets": ir_datasets.__version__,
            "python": platform.python_version()}


def _write_outputs(output: Path, suite: _Suite, datasets: List[_Dataset], finished: dict, unavailable: dict) -> None:
    model = suite.model
    results = {label: done["results"] for label, done in finished.items()}
    record = {"model": model.model_name_or_path, "checkpoint": str(model.checkpoint_path),
              "revision": getattr(model.backbone.config, "_commit_hash", None), "fingerprint": model.fingerprint(),
              "versions": _versions(), "device": str(model.device), "dtype": str(model.dtype),
              "prompt": dataclasses.asdict(suite.reranker.prompt), "top_k": suite.top_k,
              "num_queries": suite.num_queries, "processes": distributed_context()[1],
              "datasets": {label: done["record"] for label, done in finished.items()},
              "skipped": unavailable}
    for name, content in (("results.json", results), ("run_record.json", record)):
        with atomic_file(output / name) as out:
            json.dump(content, out, indent=2, default=str)
    with atomic_file(output / "results.md") as out:
        out.write(results_table(model.model_name_or_path, [d for d in datasets if d.label in finished], finished,
                                unavailable))


def _cell(ours: Optional[float], paper: Optional[float]) -> str:
    if ours is None:
        return "–"
    return f"{ours:.2f}" if paper is None else f"{ours:.2f} ({paper:.2f}, {ours - paper:+.2f})"


def results_table(model_name: str, datasets: List[_Dataset], finished: dict, unavailable: dict) -> str:
    """The Markdown table: rows BM25 and the model (and dense rows when run), columns the datasets and the
    BEIR average (over the paper's BEIR datasets present), nDCG@10 x 100, the paper's figure and our
    difference beside ours where the paper has one; notes say what was skipped or dropped."""
    row_of = paper_row(model_name)
    systems = [s for s in (*SYSTEMS, *DENSE_SYSTEMS) if any(s in finished[d.label]["results"] for d in datasets)]
    names = {"bm25": "BM25", "bm25>>e2rank": f"BM25 >> {Path(str(model_name).rstrip('/')).name}",
             "dense": "dense", "dense>>e2rank": "dense >> E2Rank"}
    paper_rows = {"bm25": "BM25", "bm25>>e2rank": row_of}
    beir = [d for d in datasets if d.column in BEIR_COLUMNS]
    lines = ["| system | " + " | ".join(d.label for d in datasets) + f" | BEIR avg ({len(beir)} of 8) |",
             "|---" * (len(datasets) + 2) + "|"]
    for system in systems:
        figures = PAPER_FIGURES.get(paper_rows.get(system))

        def paper(d):
            return None if figures is None or d.column is None else figures[PAPER_COLUMNS.index(d.column)]

        def ours(d):
            value = finished[d.label]["results"].get(system, {}).get("nDCG@10")
            return None if value is None else 100 * value
        cells = [_cell(ours(d), paper(d)) for d in datasets]
        mean = (sum(ours(d) for d in beir) / len(beir)) if beir and all(ours(d) is not None for d in beir) else None
        mean_paper = sum(paper(d) for d in beir) / len(beir) if beir and figures is not None else None
        lines.append(f"| {names[system]} | " + " | ".join(cells) + f" | {_cell(mean, mean_paper)} |")
    notes = ["nDCG@10 x 100; in brackets the paper's figure (pyterrier_e2rank specification §8) and our difference. "
             "All measures in results.json."]
    for d in datasets:
        dropped = finished[d.label]["record"]["first_stage"].get("dropped")
        if dropped and any(dropped.values()):
            notes.append(f"{d.label}: run-file lines dropped (--skip-missing): {dropped['queries']} queries and "
                         f"{dropped['documents']} documents the dataset lacks.")
    notes += [f"skipped {' '.join(why.split())}" for why in unavailable.values()]  # why names the dataset
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main(args) -> int:
    datasets = list(PAPER_SUITE if args.suite == "paper" else ()) + list(args.dataset or [])
    if not datasets:
        raise ValueError("give --dataset (repeatable) or --suite paper")
    labels = [resolve_dataset(d).label for d in datasets if d.removeprefix("irds:") not in _LOCAL_ONLY]
    runs = parse_runs(args.run or [], labels)
    main_process = is_main_process()
    model = E2Rank(args.model, device=process_device(args.device), batch_size=args.batch_size,
                   doc_max_words=args.doc_max_words, cache_doc_vectors=True, verbose=main_process,
                   **arguments.backend_options(args))
    reproduce(model, datasets, args.output, runs=runs, index_dir=args.index_dir, top_k=args.top_k,
              num_input_docs=args.num_input_docs, rerank_task=args.rerank_task, query_task=args.query_task,
              dense=args.dense, num_queries=args.num_queries, skip_missing=args.skip_missing,
              overwrite=args.overwrite, verbose=main_process)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="the paper's evaluation: BM25 top 100 reranked by E2Rank on a suite "
                                                "of datasets, one table with the paper's figures")
    p.add_argument("--model", required=True, help="model directory, hub id or embedded name")
    p.add_argument("--dataset", action="append",
                   help="irds:<id> (or the bare id), a BEIR folder, or a corpus file; repeatable")
    p.add_argument("--suite", choices=["paper"], help="the paper's ten datasets (DL19, DL20 and eight of BEIR)")
    p.add_argument("--output", required=True, help="directory for results.md, results.json, run_record.json")
    p.add_argument("--run", action="append", metavar="DATASET=PATH",
                   help="a pinned TREC run file as first stage for DATASET (as given to --dataset)")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop run-file queries and documents the dataset lacks (counted in the notes), not an error")
    p.add_argument("--dense", action="store_true", help="add dense retrieval rows (builds or reuses the dense index)")
    p.add_argument("--index-dir", default="indexes",
                   help="where BM25 (and dense) indexes are built or reused (default: indexes/ in the current "
                        "directory)")
    p.add_argument("--top-k", type=arguments.Checked(positive_int), default=100, help="candidates reranked per query")
    p.add_argument("--num-input-docs", type=arguments.Checked(positive_int), default=20, help="documents in the prompt")
    p.add_argument("--rerank-task", default=DEFAULT_RERANK_TASK, help="the listwise prompt's task sentence")
    p.add_argument("--query-task", default="dataset",
                   help="retrieval instruction of the dense rows: 'dataset' (the authors' per dataset), "
                        "'auto' (the model's default) or a sentence")
    p.add_argument("--doc-max-words", type=arguments.Checked(positive_int), default=DOC_MAX_WORDS,
                   help="documents are cut to this many words")
    p.add_argument("--num-queries", type=arguments.Checked(positive_int),
                   help="only the first N topics of each dataset")
    arguments.add_model_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming what --output holds")
    p.set_defaults(func=main)
