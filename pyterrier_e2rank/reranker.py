"""The E2Rank listwise PRF reranker: the prompt's embedding re-scores every candidate by cosine."""
import dataclasses
from typing import List, Optional

import numpy as np
import pandas as pd
import pyterrier as pt

from .checks import positive_int, require_text, stack_vectors
from .index import E2RankIndex
from .model import EncodeStats
from .prompt import ListwisePrompt


class E2RankReranker(pt.Transformer):
    """R frame (``qid, query, docno, text`` and ``rank`` or ``score``) -> same rows, new ``score``/``rank``.

    The top ``prompt.num_input_docs`` candidates (current order) form the listwise prompt; its
    embedding is dotted with each candidate's vector. Vectors come from a ``doc_vec`` column, else
    from ``index`` by ``docno``, else are encoded from ``text``. Prompts of all queries in a frame are
    encoded in batches, so with an index a query costs one forward sequence (see ``stats``).

    With ``window`` (and ``stride``, default ``window // 2``), RankGPT-style sliding windows run back to
    front; each window is reordered by its own prompt, and scores become ``n - final position``.
    """

    def __init__(self, model, prompt: ListwisePrompt, *, index=None, window: Optional[int] = None,
                 stride: Optional[int] = None, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text"):
        if index is not None:
            index = index if isinstance(index, E2RankIndex) else E2RankIndex(index)
            index.check_model(model)
        positive_int(window, "window", allow_none=True)
        positive_int(stride, "stride", allow_none=True)
        if window is not None:
            stride = max(1, window // 2) if stride is None else stride
            if stride > window:
                raise ValueError(f"need stride <= window, got window={window}, stride={stride}")
            prompt = dataclasses.replace(prompt, num_input_docs=window)
        elif stride is not None:
            raise ValueError("stride is only meaningful with window")
        self.model = model
        self.prompt = prompt
        self.index = index
        self.window = window
        self.stride = stride
        self.batch_size = batch_size
        self.verbose = model.verbose if verbose is None else verbose
        self.text_field = text_field
        self.stats = EncodeStats()

    def __repr__(self):
        args = [f"num_input_docs={self.prompt.num_input_docs}"]
        if self.index is not None:
            args.append(f"index={self.index!r}")
        if self.window is not None:
            args += [f"window={self.window}", f"stride={self.stride}"]
        if self.prompt.variant != "eval":
            args.append(f"prompt_variant={self.prompt.variant!r}")
        return f"{self.model!r}.reranker({', '.join(args)})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp, extra_columns=["query", self.text_field], context=self)
        order_by = "rank" if "rank" in inp.columns else "score"
        if order_by not in inp.columns:
            raise KeyError(f"{self!r} needs a 'rank' or 'score' column to know the candidates' order; "
                           f"got {list(inp.columns)}")
        if len(inp) == 0:
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        before = self.model.stats
        frame = _in_current_order(inp, order_by)
        groups = _query_groups(frame)
        queries = [frame["query"].iat[rows[0]] for rows in groups]
        for rows, query in zip(groups, queries):
            if not isinstance(query, str) or not query.strip():
                raise ValueError(f"query {frame['qid'].iat[rows[0]]!r} has an empty or missing query text: {query!r}")
        vectors = candidate_vectors(self.model, frame, self.index, self.text_field, self.batch_size, self.verbose)
        texts = frame[self.text_field].tolist()
        if self.window is None:
            frame["score"] = self._one_pass(frame, groups, queries, texts, vectors)
        else:
            frame["score"] = self._sliding_windows(frame, groups, queries, texts, vectors)
        self.stats += self.model.stats - before
        return pt.model.add_ranks(frame).sort_values(["_query_order", "rank"]).drop(columns=["_query_order"]) \
            .reset_index(drop=True)

    def _one_pass(self, frame, groups, queries, texts, vectors) -> np.ndarray:
        prompts = [self.prompt.render(self.model.tokenizer, query,
                                      self._prompt_texts(frame, rows[:self.prompt.num_input_docs], texts))
                   for rows, query in zip(groups, queries)]
        pseudo_queries = self.model.encode_prompts(prompts, batch_size=self.batch_size, verbose=self.verbose)
        scores = np.empty(len(frame), dtype=np.float64)
        for rows, pseudo_query in zip(groups, pseudo_queries):
            scores[rows] = vectors[rows] @ pseudo_query
        return scores

    def _sliding_windows(self, frame, groups, queries, texts, vectors) -> np.ndarray:
        """Back-to-front windows; the same window step of all queries is encoded as one batch."""
        rankings = [list(rows) for rows in groups]
        spans = [(max(0, len(rows) - self.window), len(rows)) for rows in groups]
        active = list(range(len(groups)))
        while active:
            prompts = []
            for q in active:
                start, end = spans[q]
                window_rows = rankings[q][start:end]
                prompts.append(self.prompt.render(self.model.tokenizer, queries[q],
                                                  self._prompt_texts(frame, window_rows, texts)))
            pseudo_queries = self.model.encode_prompts(prompts, batch_size=self.batch_size, verbose=False)
            still_active = []
            for q, pseudo_query in zip(active, pseudo_queries):
                start, end = spans[q]
                window_rows = rankings[q][start:end]
                order = np.argsort(-(vectors[window_rows] @ pseudo_query), kind="stable")
                rankings[q][start:end] = [window_rows[i] for i in order]
                if start > 0:
                    spans[q] = (max(0, start - self.stride), end - self.stride)
                    still_active.append(q)
            active = still_active
        scores = np.empty(len(frame), dtype=np.float64)
        for ranking in rankings:
            scores[ranking] = len(ranking) - np.arange(len(ranking))
        return scores

    def _prompt_texts(self, frame, rows, texts) -> List[str]:
        chosen = [texts[i] for i in rows]
        bad = [frame["docno"].iat[i] for i, t in zip(rows, chosen) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"documents {bad[:5]} of query {frame['qid'].iat[rows[0]]!r} enter the listwise "
                             f"prompt but have no {self.text_field!r}")
        return chosen

def candidate_vectors(model, frame: pd.DataFrame, index: Optional[E2RankIndex], text_field: str,
                      batch_size: Optional[int], verbose: bool) -> np.ndarray:
    """Each row's document vector: its ``doc_vec``, else the index's by ``docno``, else encoded from text
    (each distinct docno once)."""
    if "doc_vec" in frame.columns:
        return stack_vectors(frame["doc_vec"], frame["docno"].tolist(), model.dim,
                             "doc_vec (drop the column to use the index or the text) of docno")
    if index is not None:
        return index.vectors(frame["docno"].astype(str).tolist())
    unique = frame.drop_duplicates("docno")
    encoded = model.encode_docs(require_text(unique, text_field, key="docno"), batch_size=batch_size,
                                verbose=verbose)
    row_of = {docno: i for i, docno in enumerate(unique["docno"])}
    return encoded[[row_of[d] for d in frame["docno"]]]


def _in_current_order(inp: pd.DataFrame, order_by: str) -> pd.DataFrame:
    frame = inp.reset_index(drop=True)
    frame["_query_order"] = pd.factorize(frame["qid"])[0]
    return frame.sort_values(["_query_order", order_by], ascending=[True, order_by == "rank"],
                             kind="stable").reset_index(drop=True)


def _query_groups(frame: pd.DataFrame) -> List[np.ndarray]:
    """Row positions of each query (contiguous, since the frame is sorted by query)."""
    codes = frame["_query_order"].to_numpy()
    return np.split(np.arange(len(frame)), np.flatnonzero(np.diff(codes)) + 1)
