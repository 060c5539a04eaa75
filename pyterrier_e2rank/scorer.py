"""The plain embedding reranker: cosine between the query vector and each candidate's vector.

E2Rank without the listwise prompt, i.e. dense retrieval restricted to the candidates; the baseline
the PRF reranker must beat.
"""
from typing import Optional

import numpy as np
import pandas as pd
import pyterrier as pt

from .index import E2RankIndex
from .checks import require_text
from .reranker import candidate_vectors


class E2RankScorer(pt.Transformer):
    """R frame (``qid, query, docno`` and ``text`` unless vectors are stored) -> same rows, new score/rank."""

    def __init__(self, model, *, index=None, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text"):
        if index is not None:
            index = index if isinstance(index, E2RankIndex) else E2RankIndex(index)
            index.check_model(model)
        self.model = model
        self.index = index
        self.batch_size = batch_size
        self.verbose = model.verbose if verbose is None else verbose
        self.text_field = text_field

    def __repr__(self):
        return f"{self.model!r}.scorer(index={self.index!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp, extra_columns=["query"], context=self)
        if len(inp) == 0:
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        frame = inp.reset_index(drop=True)
        documents = candidate_vectors(self.model, frame, self.index, self.text_field, self.batch_size, self.verbose)
        query_rows, qids = pd.factorize(frame["qid"])  # any mix of int and str qids; first-seen order
        first_rows = [int(np.argmax(query_rows == q)) for q in range(len(qids))]
        queries = self.model.encode_queries(require_text(frame.iloc[first_rows], "query", key="qid"),
                                            batch_size=self.batch_size, verbose=self.verbose)
        frame["score"] = np.einsum("nd,nd->n", documents, queries[query_rows]).astype(np.float64)
        return pt.model.add_ranks(frame)
