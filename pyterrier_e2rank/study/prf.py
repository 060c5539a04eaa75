"""Dense pseudo-relevance feedback baselines as rerankers: pyterrier_dr's ``AveragePrf`` / ``VectorPrf`` query
vector of the top candidates, every candidate rescored by its dot product with it (pt_docs/study.rst)."""
from typing import Optional

import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..rerank.vectors import CandidateVectors, DotProduct


class PrfReranker(pt.Transformer):
    """R frame (``qid, query, docno, rank``; ``text`` without ``index``) -> same rows, ``score``/``rank`` new: the
    instructed query vector and the candidates' vectors (stored in ``index``, else encoded) through ``prf`` (a
    pyterrier_dr ``AveragePrf`` or ``VectorPrf``: reads the top ``prf.k`` by rank), then ``DotProduct``."""

    def __init__(self, model, prf: pt.Transformer, *, index=None, batch_size: Optional[int] = None,
                 verbose: Optional[bool] = None):
        self.model, self.prf = model, prf
        self.vectors = model.query_encoder(batch_size=batch_size, verbose=verbose) >> CandidateVectors(
            model, index=index, batch_size=batch_size, verbose=verbose)

    def __repr__(self):
        return f"PrfReranker({self.model!r}, {self.prf!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp, extra_columns=["query", "rank"])
        if len(inp) == 0:
            return inp.assign(score=pd.Series(dtype=float))
        frame = self.vectors(inp.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True))
        queries = self.prf(frame)[["qid", "query_vec", provenance.tag_column("query_vec")]]
        frame = frame.drop(columns=["query_vec", provenance.tag_column("query_vec")]).merge(queries, on="qid")
        return provenance.without(DotProduct()(frame), "query_vec", "doc_vec")
