"""text_store: the documents' text an index keeps (``text.utf8`` + ``text.offsets``), on SciFact (5,183 documents,
title and abstract joined, as ``e2rank index`` embeds them), in an index built by ``model.indexer`` with MiniLM.
Size: the store's bytes per document against the raw UTF-8 text (and the vectors). Lookup: seconds per query to
add the text of the query's top 100 (the retriever's) with ``index.text_loader()``, against the dataset's own
document store (``DocumentText``, ir_datasets), each after one warm-up query.

    python -m benchmarks.text_store --output benchmarks/results/text-store-scifact-<date>.json
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402


def run(workdir, *, model_path: str = "all-minilm-l6-v2", dataset_id: str = "irds:beir/scifact/test",
        num_queries: int = 100, top_k: int = 100) -> dict:
    import pyterrier as pt
    from pyterrier_e2rank import E2Rank
    from pyterrier_e2rank.data import DocumentText, corpus_iter
    model = E2Rank(model_path)
    dataset = pt.get_dataset(dataset_id)
    docs = list(corpus_iter(dataset))
    started = time.perf_counter()
    index = model.indexer(Path(workdir) / "scifact-text", mode="overwrite", verbose=False).index(docs)
    build_s = time.perf_counter() - started
    raw = sum(len(d["text"].encode("utf-8")) for d in docs)
    size = {name: os.path.getsize(Path(index.path) / name) for name in ("text.utf8", "text.offsets", "vecs.f4")}
    candidates = model.retriever(index, num_results=top_k)(dataset.get_topics().head(num_queries))
    per_query = [frame[["qid", "query", "docno", "score", "rank"]] for _, frame in candidates.groupby("qid")]
    times = {}
    for name, loader in (("index_text_loader", index.text_loader()), ("ir_datasets_DocumentText",
                                                                      DocumentText(dataset))):
        loader(per_query[0])  # warm-up: page cache, lazy opening
        seconds = []
        for frame in per_query:
            started = time.perf_counter()
            loaded = loader(frame)
            seconds.append(time.perf_counter() - started)
            assert len(loaded) == len(frame) and loaded["text"].notna().all()
        times[name] = {"mean_s": float(np.mean(seconds)), "median_s": float(np.median(seconds)),
                       "max_s": float(np.max(seconds))}
    n = len(docs)
    return {
        "dataset": dataset_id, "model": model_path, "documents": n, "queries": len(per_query),
        "candidates_per_query": top_k, "index_build_s": build_s,
        "bytes_per_doc": {"raw_text": raw / n, "store": (size["text.utf8"] + size["text.offsets"]) / n,
                          "store_text": size["text.utf8"] / n, "store_offsets": size["text.offsets"] / n,
                          "vectors": size["vecs.f4"] / n},
        "store_over_raw": (size["text.utf8"] + size["text.offsets"]) / raw,
        "lookup_seconds_per_query": times,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-text-store"))
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args(argv)
    data = {"machine": machine(), "text_store": run(args.workdir, model_path=args.model, num_queries=args.queries)}
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data["text_store"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
