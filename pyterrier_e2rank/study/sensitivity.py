"""The study's question b): E2Rank's nDCG@10 and time per query by the number of prompt documents k and the
rerank depth (pt_docs/study.rst)."""
import time
from typing import Sequence

import pandas as pd
import pyterrier as pt

from ..checks import positive_int
from ..cli.runs import evaluate_run

COLUMNS = ["k", "depth", "nDCG@10", "seconds_per_query", "candidates_per_query"]


def ranked_candidates(topics: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """``candidates`` (``qid, docno, rank``, and ``text``) sorted by query and rank, with the query text of
    ``topics`` (``qid, query``) where they have none. Raises ``KeyError`` naming missing columns, ``ValueError``
    naming a candidate qid that is not one of the topics."""
    pt.validate.columns(candidates, includes=["qid", "docno", "rank"])
    pt.validate.columns(topics, includes=["qid", "query"])
    missing = sorted(set(candidates["qid"]) - set(topics["qid"]))
    if missing:
        raise ValueError(f"{len(missing)} candidate qid(s) have no topic: {missing[:5]}")
    if "query" not in candidates.columns:
        candidates = candidates.merge(topics[["qid", "query"]], on="qid", how="left")
    return candidates.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)


def prompt_depth_grid(model, topics: pd.DataFrame, candidates: pd.DataFrame, qrels: pd.DataFrame, *, index,
                      prompt_docs: Sequence[int] = (0, 1, 2, 5, 10, 20, 30, 50),
                      depths: Sequence[int] = (20, 50, 100, 200), verbose: bool = False) -> pd.DataFrame:
    """E2Rank's reranker (``model.reranker(num_input_docs=k, index=index)``) on the top ``depth`` candidates of
    each query, for every ``k`` of ``prompt_docs`` (0: the prompt with the query alone) and ``depth`` of ``depths``.
    Each distinct prompt is encoded once: k > depth is the prompt of ``depth`` documents, and its time is counted
    in every cell that uses it.

    Args:
        model: an ``E2Rank``.
        topics: ``qid, query``: the queries evaluated (the qrels of others are left out).
        candidates: the first stage, ``qid, docno, rank`` (from 0) and ``text``.
        qrels: ``qid, docno, label`` (or ir-measures' ``query_id, doc_id, relevance``).
        index: the ``E2RankIndex`` (or path) of the candidates' vectors.

    Returns:
        One row per (k, depth): ``k, depth, nDCG@10, seconds_per_query`` and ``candidates_per_query`` (the mean
        number reranked: below ``depth`` where the first stage has fewer).
    """
    prompt_docs = [positive_int(k, "prompt_docs", minimum=0) for k in prompt_docs]
    depths = [positive_int(depth, "depths") for depth in depths]
    frame = ranked_candidates(topics, candidates)
    if len(frame) == 0 or not prompt_docs or not depths:
        return pd.DataFrame({column: pd.Series(dtype=float) for column in COLUMNS})
    qrels = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    qrels = qrels[qrels["query_id"].astype(str).isin(topics["qid"].astype(str))]  # as pt.Experiment
    rerankers = {k: model.reranker(index=index, num_input_docs=k, verbose=verbose) for k in prompt_docs}
    rerankers[max(prompt_docs)](frame[frame["qid"] == frame["qid"].iat[0]])  # warm-up
    num_queries = frame["qid"].nunique()
    pseudo_queries, rows = {}, []
    cells = [(depth, k) for depth in depths for k in prompt_docs]
    for depth, k in pt.tqdm(cells, desc="k x depth", unit="cell", disable=not verbose):
        top = frame.groupby("qid", sort=False).head(depth)
        reranker = rerankers[k]
        if min(k, depth) not in pseudo_queries:  # the prompt of min(k, depth, candidates) documents
            started = time.perf_counter()
            encoded = reranker.prompt_encoder(top)[["qid", "query_vec", "query_vec_model"]]
            pseudo_queries[min(k, depth)] = encoded, time.perf_counter() - started
        encoded, seconds = pseudo_queries[min(k, depth)]
        started = time.perf_counter()
        run = reranker.dot_product(reranker.vec_loader(top).merge(encoded, on="qid"))
        seconds += time.perf_counter() - started
        rows.append({"k": k, "depth": depth, "nDCG@10": evaluate_run(run, qrels, ["nDCG@10"])["nDCG@10"],
                     "seconds_per_query": seconds / num_queries,
                     "candidates_per_query": len(top) / num_queries})
    return pd.DataFrame(rows, columns=COLUMNS)
