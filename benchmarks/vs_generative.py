"""vs_generative: E2Rank PRF reranking against a generative sliding-window reranker on the same Qwen3
backbone shape, per query, in one run: with stored vectors (one prompt per query, ``ratio``) and
re-encoding the 100 candidates as the authors' script does (``ratio_reencode``, the paper's setting)."""
import time

import numpy as np

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.study.generative import GenerativeSlidingWindow
from pyterrier_e2rank.testing import qwen3_shaped

from .common import QWEN3_TOKENIZER, bm25_candidates


def run(workdir, *, num_layers: int, num_queries: int, top_k: int = 100, max_words: int = 60) -> dict:
    candidates = bm25_candidates(num_queries, top_k, workdir, max_words=max_words)
    model = E2Rank(str(qwen3_shaped(workdir / f"qwen3-{num_layers}l", QWEN3_TOKENIZER, num_layers)), batch_size=8)
    index = model.indexer(workdir / "dense.qwen3", overwrite=True).index(
        candidates.drop_duplicates("docno")[["docno", "text"]].to_dict("records"))
    e2rank, e2rank_reencode = model.reranker(index=index), model.reranker()
    generative = GenerativeSlidingWindow(qwen3_shaped(workdir / f"qwen3-{num_layers}l-lm", QWEN3_TOKENIZER, num_layers,
                                                     causal_lm=True))
    times = {"e2rank": [], "e2rank_reencode": [], "generative": []}
    for _, query in candidates.groupby("qid", sort=False):
        for name, reranker in [("e2rank", e2rank), ("e2rank_reencode", e2rank_reencode)]:
            started = time.perf_counter()
            reranker(query)
            times[name].append(time.perf_counter() - started)
        started = time.perf_counter()
        generative.rerank(query["query"].iat[0], query["text"].tolist())
        times["generative"].append(time.perf_counter() - started)
    per_query = {k: float(np.mean(v)) for k, v in times.items()}
    return {
        "backbone": f"Qwen3, E2Rank-0.6B shape with {num_layers} layers (random weights)",
        "queries": num_queries, "candidates_per_query": top_k, "passage_words": max_words,
        "seconds_per_query_e2rank": per_query["e2rank"],
        "seconds_per_query_e2rank_reencode": per_query["e2rank_reencode"],
        "seconds_per_query_generative": per_query["generative"],
        "ratio": per_query["generative"] / per_query["e2rank"],
        "ratio_reencode": per_query["generative"] / per_query["e2rank_reencode"],
        "per_query_e2rank": {"forward_passes": e2rank.stats.forward_passes / num_queries,
                             "tokens": e2rank.stats.tokens / num_queries},
        "per_query_e2rank_reencode": {"forward_passes": e2rank_reencode.stats.forward_passes / num_queries,
                                      "tokens": e2rank_reencode.stats.tokens / num_queries},
        "per_query_generative": {"forward_passes": generative.forward_passes / num_queries,
                                 "prompt_tokens": generative.prompt_tokens / num_queries,
                                 "generated_tokens": generative.generated_tokens / num_queries},
    }
