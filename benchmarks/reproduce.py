"""reproduce: the rerank-only suite of ``e2rank reproduce`` on SciFact against ``e2rank experiment``, which
encodes the whole corpus into a dense index before it reranks. Texts encoded are counted by the model
(``EncodeStats``); rerank-only should encode the distinct BM25 candidates and one prompt per query. The
PISA index both read is built first, outside the timings."""
import json
import time

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli.experiment import index_name, run_experiment
from pyterrier_e2rank.cli.reproduce import reproduce
from pyterrier_e2rank.cli.runs import read_run
from pyterrier_e2rank.bm25 import pisa_bm25
from pyterrier_e2rank.data import corpus_id

SCIFACT = "irds:beir/scifact/test"


def run(workdir, *, model_path: str, num_queries: int, label: str = "") -> dict:
    indexes = workdir / "reproduce-indexes"
    pisa_bm25(str(indexes / index_name(corpus_id(SCIFACT)) / "bm25.pisa"), SCIFACT)  # where both look for it
    model = E2Rank(model_path, batch_size=16, cache_doc_vectors=True)
    started = time.perf_counter()
    reproduce(model, [SCIFACT], workdir / "reproduce", index_dir=indexes, num_queries=num_queries, overwrite=True,
              verbose=False)
    reproduce_s = time.perf_counter() - started
    record = json.loads((workdir / "reproduce" / "run_record.json").read_text())["datasets"][SCIFACT]
    candidates = read_run(workdir / "reproduce" / "datasets" / index_name(SCIFACT) / "first-stage.run")

    baseline = E2Rank(model_path, batch_size=16)
    started = time.perf_counter()
    run_experiment(SCIFACT, baseline, index_dir=str(indexes), num_queries=num_queries, verbose=False)
    experiment_s = time.perf_counter() - started
    return {"backbone": label or model_path, "queries": record["queries"],
            "distinct_candidates": int(candidates["docno"].nunique()), "texts_encoded": record["texts_encoded"],
            "experiment_texts_encoded": baseline.stats.texts, "seconds": reproduce_s,
            "experiment_seconds": experiment_s,            "wall_ratio_vs_experiment": reproduce_s / experiment_s}
