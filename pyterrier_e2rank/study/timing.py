"""The study's question e): wall-clock seconds per query of E2Rank with stored vectors and re-encoding, a
cross-encoder and a generative sliding-window reranker, on the same queries, candidates and device
(pt_docs/study.rst)."""
import time
from typing import Callable, Dict

import numpy as np
import pandas as pd
import pyterrier as pt
import torch

from ..checks import require_text
from .sensitivity import ranked_candidates

COLUMNS = ["system", "seconds_per_query", "queries", "device"]


def wall_clock(model, topics: pd.DataFrame, candidates: pd.DataFrame, *, index, cross_encoder=None, generative=None,
               device=None, verbose: bool = False) -> pd.DataFrame:
    """Each system reranks every candidate of one query at a time, after one warm-up query: ``e2rank-stored-vectors``
    (``model.reranker(index=index)``), ``e2rank-re-encoding`` (``model.reranker()``, the candidates' texts encoded
    each time; the model's document-vector cache is cleared before each query), ``cross-encoder`` and
    ``generative-sliding-window`` (``generative.GenerativeSlidingWindow``).

    Args:
        model: an ``E2Rank`` on ``device``.
        topics: ``qid, query`` (for candidates without ``query``).
        candidates: ``qid, docno, rank, text``.
        index: the ``E2RankIndex`` (or path) of the candidates' vectors.
        cross_encoder: a sentence-transformers ``CrossEncoder`` checkpoint (name or folder); ``None`` skips it.
        generative: a causal LM checkpoint for the sliding windows; ``None`` skips it.
        device: where every system runs; default the model's (CUDA when present, else CPU).

    Returns:
        One row per system: ``system, seconds_per_query`` (the mean), ``queries, device``.

    Raises:
        ValueError: a ``device`` of another type than the model's, or candidates without text.
    """
    device = model.device if device is None else torch.device(device)
    if device.type != model.device.type:
        raise ValueError(f"device={str(device)!r} but the model is on {str(model.device)!r}: every system runs on "
                         f"one device; load the model with E2Rank(..., device={str(device)!r})")
    frame = ranked_candidates(topics, candidates)
    pt.validate.columns(frame, includes=["text"])
    require_text(frame, "text", key="docno")
    if len(frame) == 0:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in COLUMNS})
    stored, encoding = model.reranker(index=index), model.reranker()
    systems: Dict[str, Callable[[pd.DataFrame], object]] = {
        "e2rank-stored-vectors": stored, "e2rank-re-encoding": lambda query: (model.clear_doc_cache(), encoding(query))}
    if cross_encoder is not None:
        from sentence_transformers import CrossEncoder
        pairs = CrossEncoder(str(cross_encoder), device=str(device))
        systems["cross-encoder"] = lambda query: pairs.predict(list(zip(query["query"], query["text"])))
    if generative is not None:
        from .generative import GenerativeSlidingWindow
        windows = GenerativeSlidingWindow(generative, device=str(device))
        systems["generative-sliding-window"] = lambda query: windows.rerank(query["query"].iat[0],
                                                                           query["text"].tolist())
    queries = [group for _, group in frame.groupby("qid", sort=False)]
    rows = []
    for name, rerank in systems.items():
        rerank(queries[0])  # warm-up
        seconds = []
        for query in pt.tqdm(queries, desc=name, unit="query", disable=not verbose):
            started = time.perf_counter()
            rerank(query)
            seconds.append(time.perf_counter() - started)
        rows.append({"system": name, "seconds_per_query": float(np.mean(seconds)), "queries": len(queries),
                     "device": str(device)})
    return pd.DataFrame(rows, columns=COLUMNS)
