"""Query and document encoders: frames in, the same frames with ``query_vec``/``doc_vec`` out."""
from typing import Optional

import pandas as pd
import pyterrier as pt

from .equality import EqualBySettings
from .checks import require_text, validate_frame


class E2RankQueryEncoder(EqualBySettings, pt.Transformer):
    """Adds ``query_vec`` (instructed, normalised) to a query frame, or to a result frame (each distinct
    query encoded once), so ``bm25 >> model.query_encoder() >> index.gar(...)`` works."""

    def __init__(self, model, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None):
        self.model = model
        self.batch_size = batch_size
        self.verbose = verbose

    def __repr__(self):
        return f"{self.model!r}.query_encoder(batch_size={self.batch_size}, verbose={self.verbose})"

    def _settings(self) -> tuple:
        return (self.model, self.batch_size)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        validate_frame(inp, self, includes=["qid", "query"], queries=True)
        codes, _ = pd.factorize(inp["qid"])
        first = pd.Series(range(len(inp))).groupby(codes).first().to_numpy() if len(inp) else []
        queries = require_text(inp.iloc[first], "query", key="qid")
        vectors = self.model.encode_queries(queries, batch_size=self.batch_size, verbose=self.verbose)
        return inp.assign(query_vec=list(vectors[codes]) if len(inp) else [])


class E2RankDocEncoder(EqualBySettings, pt.Transformer):
    """Adds ``doc_vec`` (normalised, text cut to the model's word limit) to a document frame."""

    def __init__(self, model, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text"):
        self.model = model
        self.batch_size = batch_size
        self.verbose = verbose
        self.text_field = text_field

    def __repr__(self):
        return (f"{self.model!r}.doc_encoder(batch_size={self.batch_size}, verbose={self.verbose}, "
                f"text_field={self.text_field!r})")

    def _settings(self) -> tuple:
        return (self.model, self.batch_size, self.text_field)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        validate_frame(inp, self, includes=["docno", self.text_field])
        out = inp.copy()
        texts = require_text(out, self.text_field, key="docno")
        vectors = self.model.encode_docs(texts, batch_size=self.batch_size, verbose=self.verbose)
        out["doc_vec"] = list(vectors)
        return out
