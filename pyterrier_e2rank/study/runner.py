"""``e2rank study`` (pt_docs/study.rst): the reviewers' questions, one dataset at a time. Each finished step is
stored under ``output/steps/<dataset folder>/`` and read back when the study starts again; ``report`` writes the
tables and figures. It writes or removes only ``FILES`` in ``output``."""
import contextlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import pandas as pd
import pyterrier as pt
from pyterrier_dr import AveragePrf, VectorPrf

from ..bm25 import pisa_bm25
from ..checks import positive_int
from ..cli.experiment import dense_index_for, index_name, query_task_for
from ..cli.paper import SuiteDataset, resolve_dataset
from ..cli.runs import evaluate_run, parse_measure, read_run, write_run
from ..cli.suite import _check_mark, _open, _pinned_run
from ..data import DocumentText, corpus_id
from ..io import atomic_file, file_sha256, refuse_output_as_input, writer_lock
from ..model.e2rank import E2Rank
from . import report
from .prf import PrfReranker

FILES = ("settings.json", "results.json", "report.md", "steps", "figures")
#: Feedback documents of the dense PRF baselines.
PRF_K = (3, 10)
PROMPT_DOCS = (0, 1, 2, 5, 10, 20, 30, 50)
DEPTHS = (20, 50, 100, 200)
BUILT_IN = ("bm25", "dense")


def _step(path: Path, compute: Callable[[], object]):
    """The JSON value stored at ``path`` by an earlier run, else ``compute()``, stored atomically."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    with atomic_file(path) as out:
        json.dump(value, out, indent=1)
    return value


def _records(frame: pd.DataFrame) -> list:
    return json.loads(frame.to_json(orient="records"))


@contextlib.contextmanager
def _instructed(models, source: str):
    """The models with the dataset's retrieval instruction (as ``e2rank reproduce``'s dense rows) in the block."""
    before = [model.query_task for model in models]
    for model in models:
        model.query_task = query_task_for("dataset", model.query_task, source)
    try:
        yield
    finally:
        for model, task in zip(models, before):
            model.query_task = task


class Study:
    """One run of ``study``: its settings, and each dataset's steps."""

    def __init__(self, models, output: Path, *, first_stages, index_dir, top_k, num_input_docs, num_queries,
                 measures, prompt_docs, depths, cross_encoder, generative, timing_queries, verbose):
        self.models, self.output, self.first_stages = models, output, first_stages
        self.index_dir, self.top_k, self.num_input_docs = Path(index_dir), top_k, num_input_docs
        self.num_queries, self.measures, self.verbose = num_queries, measures, verbose
        self.prompt_docs, self.depths = tuple(prompt_docs), tuple(depths)
        self.cross_encoder, self.generative, self.timing_queries = cross_encoder, generative, timing_queries
        self.depth = max([top_k, *self.depths])  # candidates kept of each first stage
        names = [Path(str(m.model_name_or_path).rstrip("/")).name for m in models]
        self.suffixes = [""] + [f"@{name}" if name != names[0] else "@model2" for name in names[1:]]
        self.run_digests = {name: file_sha256(path) for name, path in first_stages.items()}

    def settings(self) -> dict:
        """What the results depend on besides the datasets: a resumed study's must be the same."""
        return {"models": [m.fingerprint() for m in self.models], "dtypes": [str(m.dtype) for m in self.models],
                "top_k": self.top_k, "num_input_docs": self.num_input_docs, "num_queries": self.num_queries,
                "measures": self.measures, "prompt_docs": self.prompt_docs, "depths": self.depths, "prf_k": PRF_K,
                "cross_encoder": self.cross_encoder, "generative": self.generative,
                "timing_queries": self.timing_queries, "first_stages": self.run_digests}

    def header(self) -> dict:
        return {"models": [str(m.model_name_or_path) for m in self.models], "suffixes": self.suffixes,
                "top_k": self.top_k, "num_input_docs": self.num_input_docs, "measures": self.measures,
                "prf": [f"{kind}-prf-k{k}" for kind in ("average", "vector") for k in PRF_K]}

    def prepare(self, datasets: Sequence[SuiteDataset], overwrite: bool) -> None:
        """Refuses ``output`` holding ``FILES`` without a study's mark, and unless ``overwrite`` (which removes what
        an earlier study wrote) other settings or a dataset folder of another dataset; then writes the marks."""
        marks = {d: self.output / "steps" / d.folder / "made-from.json" for d in datasets}
        _check_mark(self.output / "settings.json", self.settings(), FILES, overwrite, f"{self.output} (a study)",
                    "e2rank study")
        for dataset, mark in marks.items():
            _check_mark(mark, {"dataset": dataset.origin}, (), overwrite, f"{mark}: {dataset.label}", "e2rank study")
        for name in reversed(FILES if overwrite else ()):  # the mark last
            path = self.output / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        with atomic_file(self.output / "settings.json") as out:
            json.dump(self.settings(), out, indent=2, default=str)
        for dataset, mark in marks.items():
            if not mark.exists():
                mark.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(mark) as out:
                    json.dump({"dataset": dataset.origin}, out)

    def run(self, dataset: SuiteDataset) -> dict:
        """One dataset's ``results`` (``{system: {measure: value}}``), ``seconds`` per query of each reranker,
        the ``grid`` and ``timing`` records and the ``first_stages``; finished steps are read back."""
        from .sensitivity import prompt_depth_grid
        from .timing import wall_clock
        folder = self.output / "steps" / dataset.folder
        ds, all_topics, topics, qrels = _open(dataset, self.num_queries)
        topics = topics[["qid", "query"]]
        with _instructed(self.models, dataset.source):
            indexes = [dense_index_for(model, ds, str(self.index_dir), verbose=self.verbose) for model in self.models]
            candidates = {}
            for name in (*BUILT_IN, *self.first_stages):
                run = self.first_stage(name, ds, all_topics, topics, indexes[0], folder)
                candidates[name] = DocumentText(ds)(run.merge(topics, on="qid"))
            results, seconds = {}, {}
            for name, deep in candidates.items():
                top = deep[deep["rank"] < self.top_k]
                results[name] = evaluate_run(top, qrels, self.measures)
                for slot, (model, index) in enumerate(zip(self.models, indexes)):
                    done = _step(folder / f"rerank-{index_name(name)}-model{slot + 1}.json",
                                 lambda: self.rerank(model, index, slot, top, qrels))
                    for system, value in done.items():
                        results[f"{name}>>{system}"] = value["measures"]
                        seconds[f"{name}>>{system}"] = value["seconds_per_query"]
            bm25 = candidates["bm25"]
            timed = topics.head(self.timing_queries)
            grid = _step(folder / "grid.json", lambda: _records(prompt_depth_grid(
                self.models[0], topics, bm25, qrels, index=indexes[0], prompt_docs=self.prompt_docs,
                depths=self.depths, verbose=self.verbose)))
            timing = _step(folder / "timing.json", lambda: _records(wall_clock(
                self.models[0], timed, bm25[(bm25["rank"] < self.top_k) & bm25["qid"].isin(timed["qid"])],
                index=indexes[0],
                cross_encoder=self.cross_encoder, generative=self.generative, verbose=self.verbose)))
        return {"results": results, "seconds": seconds, "grid": grid, "timing": timing,
                "first_stages": list(candidates), "queries": int(topics["qid"].nunique())}

    def first_stage(self, name: str, ds, all_topics, topics, index, folder: Path) -> pd.DataFrame:
        """The top ``depth`` of ``topics`` by the first stage ``name`` (PISA BM25, the first model's dense
        retrieval or a run file), written once to the dataset's folder and read back."""
        path = folder / f"first-stage-{index_name(name)}.run"
        if not path.exists():
            if name == "bm25":
                bm25_index = self.index_dir / index_name(corpus_id(ds)) / "bm25.pisa"  # as e2rank reproduce
                run = pisa_bm25(str(bm25_index), ds, num_results=self.depth, rebuild_stale=True,
                                verbose=self.verbose)(topics)
            elif name == "dense":
                run = self.models[0].retriever(index, num_results=self.depth, verbose=self.verbose)(topics)
            else:
                run, _ = _pinned_run(self.first_stages[name], ds, all_topics, skip_missing=False)
                run = run[run["qid"].isin(topics["qid"]) & (run["rank"] < self.depth)]
            write_run(run[["qid", "docno", "score", "rank"]], path, tag=re.sub(r"\W", "_", name))
        return read_run(path)

    def rerank(self, model: E2Rank, index, slot: int, candidates: pd.DataFrame, qrels: pd.DataFrame) -> dict:
        """``{system: {"measures", "seconds_per_query"}}`` of the model's rerankers of ``candidates``: the plain
        embedding rerank and E2Rank's, and for the first model the dense PRF baselines."""
        rerankers = {"rerank-embedding": model.scorer(index, verbose=self.verbose),
                     "rerank-e2rank": model.reranker(index=index, num_input_docs=self.num_input_docs,
                                                     verbose=self.verbose)}
        for kind, prf in (("average", AveragePrf), ("vector", VectorPrf)) if slot == 0 else ():
            for k in PRF_K:
                rerankers[f"{kind}-prf-k{k}"] = PrfReranker(model, prf(k=k), index=index, verbose=self.verbose)
        done, queries = {}, max(1, candidates["qid"].nunique())
        for system, reranker in pt.tqdm(rerankers.items(), desc="rerankers", disable=not self.verbose):
            started = time.perf_counter()
            run = reranker(candidates)
            done[system + self.suffixes[slot]] = {"measures": evaluate_run(run, qrels, self.measures),
                                                  "seconds_per_query": (time.perf_counter() - started) / queries}
        return done


def study(models, datasets: Sequence[str], output, *, first_stages: Optional[Dict[str, str]] = None,
          index_dir="indexes", top_k: int = 100, num_input_docs: int = 20, num_queries: Optional[int] = None,
          measures: Sequence[str] = ("nDCG@10",), prompt_docs: Sequence[int] = PROMPT_DOCS,
          depths: Sequence[int] = DEPTHS, cross_encoder: Optional[str] = None, generative: Optional[str] = None,
          timing_queries: Optional[int] = None, overwrite: bool = False, verbose: bool = True,
          model_options: Optional[dict] = None) -> dict:
    """Runs the study (pt_docs/study.rst) on ``datasets``, writes ``output`` (``results.json``, ``report.md``,
    ``figures/``, ``steps/``) and returns ``{dataset: {system: {measure: value}}}``.

    Args:
        models: a model (name, path or ``E2Rank``), or two: the second one untrained for the listwise prompt.
        datasets: ir_datasets ids, BEIR folders or corpus files.
        first_stages: ``{name: TREC run file}`` beside ``bm25`` and ``dense`` (one dataset only).
        prompt_docs, depths: the grid's prompt documents and rerank depths.
        cross_encoder, generative: checkpoints timed beside E2Rank (``None``: not timed).
        timing_queries: time the first N queries only (``None``: all).
        overwrite: discard what an earlier study wrote to ``output`` instead of resuming it.

    Raises, before anything is written: ``ValueError`` for a bad argument, measure, dataset or run file, or
    ``output`` begun with other settings or holding an input; ``FileExistsError`` for the study's names in a
    folder it did not write; ``ArtifactLocked``."""
    output, first_stages = Path(output), dict(first_stages or {})
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if not 1 <= len(models) <= 2:
        raise ValueError(f"models: give one model, or two (the second not trained for the listwise prompt), "
                         f"got {len(models)}")
    for name, path in first_stages.items():
        if name in BUILT_IN or not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"--first-stage {name}={path}: the name must be letters, digits, '_.-' and not one "
                             f"of {BUILT_IN} (built in)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--first-stage {name}={path}: no such file {path}")
    if first_stages and len(set(datasets)) > 1:
        raise ValueError("--first-stage: a run file is of one dataset; give one --dataset with it")
    for name, value in (("top_k", top_k), ("num_input_docs", num_input_docs), *(("depths", d) for d in depths)):
        positive_int(value, name)
    positive_int(timing_queries, "timing_queries", allow_none=True)
    for k in prompt_docs:
        positive_int(k, "prompt_docs", minimum=0)
    measures = [str(parse_measure(m)) for m in measures]
    for name in FILES:  # what the study replaces or adds to is none of its inputs
        refuse_output_as_input(output / name, index_dir=index_dir, **{f"--dataset {d}": d for d in datasets},
                               **{f"--first-stage {k}": v for k, v in first_stages.items()},
                               **{f"--model {m}": m for m in models if isinstance(m, str)})
    checked = [resolve_dataset(source) for source in dict.fromkeys(datasets)]
    models = [m if isinstance(m, E2Rank) else E2Rank(m, **(model_options or {}), verbose=verbose) for m in models]
    runner = Study(models, output, first_stages=first_stages, index_dir=index_dir, top_k=top_k,
                   num_input_docs=num_input_docs, num_queries=num_queries, measures=measures, prompt_docs=prompt_docs,
                   depths=depths, cross_encoder=cross_encoder, generative=generative, timing_queries=timing_queries,
                   verbose=verbose)
    output.mkdir(parents=True, exist_ok=True)
    with writer_lock(output):
        runner.prepare(checked, overwrite)
        finished = {}
        for dataset in checked:
            finished[dataset.label] = runner.run(dataset)
            report.write(output, runner.header(), checked, finished)
    return {label: done["results"] for label, done in finished.items()}
