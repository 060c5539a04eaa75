"""The plain embedding reranker (no listwise prompt): ``query_encoder >> CandidateVectors >> DotProduct``."""
from typing import Optional

import pandas as pd

from ..model import provenance
from ..model.encoders import E2RankQueryEncoder
from .vectors import CandidateVectors, DotProduct, VectorReranker


class E2RankScorer(VectorReranker):
    """R frame (``qid, query, docno`` and ``text`` unless vectors are stored) -> same rows, new score/rank."""
    SETTINGS = ("query_encoder", "vec_loader")

    def __init__(self, model, *, index=None, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text"):
        self.model = model
        self.query_encoder = E2RankQueryEncoder(model, batch_size=batch_size, verbose=verbose)
        self.vec_loader = CandidateVectors(model, index=index, text_field=text_field, batch_size=batch_size,
                                           verbose=verbose)
        if index is None:  # the candidates' vectors come from the frame, or are encoded from its text
            self.one_of = ((text_field,), ("doc_vec",))

    def __repr__(self):
        return f"{self.model!r}.scorer(index={self.index!r})"

    def _scored(self, inp: pd.DataFrame) -> pd.DataFrame:
        frame = self.vec_loader(self.query_encoder(inp.reset_index(drop=True)))
        return provenance.without(DotProduct()(frame), "query_vec")
