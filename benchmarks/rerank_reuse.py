"""rerank_reuse: reranking BM25 top-100 with stored vectors vs re-encoding the candidates per query
(as the authors' script does). Same rankings are checked; per-query times, their ratio, and counts."""
import time

import numpy as np

from pyterrier_e2rank import E2Rank

from .common import bm25_candidates


def run(workdir, *, model_path: str, num_queries: int, top_k: int = 100, label: str = "") -> dict:
    model = E2Rank(model_path, batch_size=16)
    candidates = bm25_candidates(num_queries, top_k, workdir)
    index = model.indexer(workdir / f"dense.{label}", mode="overwrite").index(
        candidates.drop_duplicates("docno")[["docno", "text"]].to_dict("records"))
    stored, fresh = model.reranker(index=index), model.reranker()
    times = {"index_vectors": [], "re_encode": []}
    same = True
    for _, query in candidates.groupby("qid", sort=False):  # one query at a time, as a user's request
        started = time.perf_counter()
        a = stored(query)
        times["index_vectors"].append(time.perf_counter() - started)
        started = time.perf_counter()
        b = fresh(query)
        times["re_encode"].append(time.perf_counter() - started)
        same &= a["docno"].tolist() == b["docno"].tolist() and np.allclose(a["score"], b["score"], atol=1e-4)
    per_query = {k: float(np.mean(v)) for k, v in times.items()}
    return {
        "backbone": label, "queries": num_queries, "candidates_per_query": top_k, "same_rankings": bool(same),
        "seconds_per_query_index": per_query["index_vectors"],
        "seconds_per_query_reencode": per_query["re_encode"],
        "ratio": per_query["re_encode"] / per_query["index_vectors"],
        "per_query_index": {"forward_passes": stored.stats.forward_passes / num_queries,
                            "texts": stored.stats.texts / num_queries, "tokens": stored.stats.tokens / num_queries},
        "per_query_reencode": {"forward_passes": fresh.stats.forward_passes / num_queries,
                               "texts": fresh.stats.texts / num_queries, "tokens": fresh.stats.tokens / num_queries},
    }
