"""vs_generative: E2Rank PRF reranking (stored vectors, one prompt per query) against a generative
sliding-window reranker on the same Qwen3 backbone shape, per query, in one run."""
import time

import numpy as np

from pyterrier_e2rank import E2Rank

from .common import bm25_candidates, qwen3_shaped
from .generative_baseline import GenerativeSlidingWindow


def run(workdir, *, num_layers: int, num_queries: int, top_k: int = 100, max_words: int = 60) -> dict:
    candidates = bm25_candidates(num_queries, top_k, workdir, max_words=max_words)
    model = E2Rank(str(qwen3_shaped(workdir / f"qwen3-{num_layers}l", num_layers)), batch_size=8)
    index = model.indexer(workdir / "dense.qwen3", overwrite=True).index(
        candidates.drop_duplicates("docno")[["docno", "text"]].to_dict("records"))
    e2rank = model.reranker(index=index)
    generative = GenerativeSlidingWindow(qwen3_shaped(workdir / f"qwen3-{num_layers}l-lm", num_layers, causal_lm=True))
    times = {"e2rank": [], "generative": []}
    for _, query in candidates.groupby("qid", sort=False):
        started = time.perf_counter()
        e2rank(query)
        times["e2rank"].append(time.perf_counter() - started)
        started = time.perf_counter()
        generative.rerank(query["query"].iat[0], query["text"].tolist())
        times["generative"].append(time.perf_counter() - started)
    per_query = {k: float(np.mean(v)) for k, v in times.items()}
    return {
        "backbone": f"Qwen3, E2Rank-0.6B shape with {num_layers} layers (random weights)",
        "queries": num_queries, "candidates_per_query": top_k, "passage_words": max_words,
        "seconds_per_query_e2rank": per_query["e2rank"],
        "seconds_per_query_generative": per_query["generative"],
        "ratio": per_query["generative"] / per_query["e2rank"],
        "per_query_e2rank": {"forward_passes": e2rank.stats.forward_passes / num_queries,
                             "tokens": e2rank.stats.tokens / num_queries},
        "per_query_generative": {"forward_passes": generative.forward_passes / num_queries,
                                 "prompt_tokens": generative.prompt_tokens / num_queries,
                                 "generated_tokens": generative.generated_tokens / num_queries},
    }
