"""What each feedback document contributes to E2Rank's pseudo-query: leave it out of the prompt and watch."""
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

from ..checks import RANKED, require_text, validate_frame
from ..deprecation import keyword_only_since
from .prompt_encoder import in_current_order, query_groups

#: The columns ``feedback_influence`` returns, in order.
INFLUENCE_COLUMNS = ("qid", "docno", "prompt_position", "pseudo_query_shift", "kendall_tau", "rbo",
                     "rank", "rank_without", "rank_change")


@keyword_only_since("num_input_docs", "index")
def feedback_influence(model, frame: pd.DataFrame, index=None, *, num_input_docs: Optional[int] = None,
                       rbo_p: float = 0.9, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                       text_field: str = "text", **prompt_settings) -> pd.DataFrame:
    """Leave-one-out influence of each of the top ``k = min(num_input_docs, n)`` candidates of each query's
    listwise prompt: the prompt without it is compared with the full one (pt_docs/retrieval-and-reranking.rst).

    Args:
        model: an ``E2Rank``.
        frame: an R frame as the reranker takes (``qid, query, docno, text`` and ``rank`` or ``score``).
        index, num_input_docs, batch_size, verbose, text_field, prompt_settings: as ``model.reranker``.
        rbo_p: RBO's persistence, in (0, 1).

    Returns:
        One row per (query, prompt document), the columns ``INFLUENCE_COLUMNS``; queries in input order,
        documents by ``prompt_position`` (1-based, the ``[i]`` of the prompt).

    Raises:
        ValueError: a ``window`` setting, ``rbo_p`` outside (0, 1), and every frame the reranker refuses;
            KeyError: a missing column.
    """
    if "window" in prompt_settings or "stride" in prompt_settings:
        raise ValueError("feedback_influence compares one prompt per query: sliding windows (window, stride) "
                         "have several")
    if not 0 < rbo_p < 1:
        raise ValueError(f"rbo_p must be in (0, 1), got {rbo_p!r}")
    reranker = model.reranker(index, num_input_docs=num_input_docs, batch_size=batch_size, verbose=verbose,
                              text_field=text_field, **prompt_settings)
    renderer, prompt = reranker.prompt_encoder.renderer, reranker.prompt
    validate_frame(frame, reranker, includes=renderer.includes, queries=True, one_of=RANKED)
    if len(frame) == 0:
        return pd.DataFrame(columns=list(INFLUENCE_COLUMNS))
    ordered = renderer.with_text(reranker.vec_loader(in_current_order(frame, reranker)))
    prompts = []
    for rows in query_groups(ordered):
        top = rows[:prompt.num_input_docs]
        prompts.append(renderer.render(ordered, rows))  # checks the query and the prompt documents' text
        query = ordered["query"].iat[rows[0]]
        texts = require_text(ordered.iloc[top], text_field, key="docno")
        prompts += [prompt.render(model.tokenizer, query, texts[:i] + texts[i + 1:]) for i in range(len(top))]
    vectors = np.stack(reranker.prompt_encoder.vec_encoder(pd.DataFrame({"prompt": prompts}))["query_vec"].to_numpy())
    documents = np.stack(ordered["doc_vec"].to_numpy()).astype(np.float32)
    out, start = [], 0
    for rows in query_groups(ordered):
        top = rows[:prompt.num_input_docs]
        full, left_out = vectors[start], vectors[start + 1:start + 1 + len(top)]
        start += 1 + len(top)
        shifts = 1.0 - left_out @ full / (np.linalg.norm(left_out, axis=1) * np.linalg.norm(full))
        scores = documents[rows] @ full
        rank = rankdata(-scores, method="ordinal") - 1  # ties in the given order, as pt.model.add_ranks
        for i, vector in enumerate(left_out):
            scores_without = documents[rows] @ vector
            rank_without = rankdata(-scores_without, method="ordinal") - 1
            out.append({"qid": ordered["qid"].iat[top[i]], "docno": ordered["docno"].iat[top[i]],
                        "prompt_position": i + 1, "pseudo_query_shift": float(shifts[i]),
                        "kendall_tau": float(kendalltau(scores, scores_without).statistic) if len(rows) > 1
                        else float("nan"),
                        "rbo": rank_biased_overlap(np.argsort(rank).tolist(), np.argsort(rank_without).tolist(),
                                                   p=rbo_p),
                        "rank": int(rank[i]), "rank_without": int(rank_without[i]),
                        "rank_change": int(rank_without[i] - rank[i])})
    return pd.DataFrame(out, columns=list(INFLUENCE_COLUMNS))


def rank_biased_overlap(first: Sequence, second: Sequence, *, p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap (Webber, Moffat and Zobel 2010, eq. 32) of two rankings of the same
    length without repeats (best first): 1 for identical rankings, 0 for disjoint ones."""
    if len(first) != len(second):
        raise ValueError(f"rankings of different lengths ({len(first)} and {len(second)})")
    if len(first) == 0:
        return 1.0
    seen_first, seen_second, shared, total = set(), set(), 0, 0.0
    for depth, (a, b) in enumerate(zip(first, second), start=1):
        shared += (a == b) + (a in seen_second) + (b in seen_first)
        seen_first.add(a)
        seen_second.add(b)
        total += shared / depth * p ** depth
    return float(shared / depth * p ** depth + (1 - p) / p * total)

