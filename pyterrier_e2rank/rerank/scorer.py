"""The plain embedding reranker (no listwise prompt): ``query_encoder >> CandidateVectors >> DotProduct``."""
from typing import Optional

import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..checks import validate_frame
from ..model.encoders import E2RankQueryEncoder, ModelTransformer
from .vectors import CandidateVectors, DotProduct


class E2RankScorer(ModelTransformer):
    """R frame (``qid, query, docno`` and ``text`` unless vectors are stored) -> same rows, new score/rank."""
    SETTINGS = ("query_encoder", "vec_loader")

    def __init__(self, model, *, index=None, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text"):
        self.model = model
        self.query_encoder = E2RankQueryEncoder(model, batch_size=batch_size, verbose=verbose)
        self.vec_loader = CandidateVectors(model, index=index, text_field=text_field, batch_size=batch_size,
                                           verbose=verbose)

    @property
    def index(self):
        return self.vec_loader.index

    def __repr__(self):
        return f"{self.model!r}.scorer(index={self.index!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        validate_frame(inp, self, includes=["qid", "docno", "query"], queries=True)
        if len(inp) == 0:
            return inp.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        had_vectors = "doc_vec" in inp.columns
        frame = self.vec_loader(self.query_encoder(inp.reset_index(drop=True)))
        out = provenance.without(DotProduct()(frame), "query_vec")
        return out if had_vectors else provenance.without(out, "doc_vec")
