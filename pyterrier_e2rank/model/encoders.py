"""Query and document encoders: frames in, the same frames with ``query_vec``/``doc_vec`` out, each vector
tagged with the model that made it (``query_vec_model``/``doc_vec_model``: see ``provenance``)."""
from typing import Optional

import pandas as pd
import pyterrier as pt

from . import provenance
from ..equality import EqualBySettings
from ..checks import require_text, validate_frame, without_empty_queries


class E2RankQueryEncoder(EqualBySettings, pt.Transformer):
    """Adds ``query_vec`` (instructed, normalised; ``[dim]`` float32 per row) and its tag ``query_vec_model``
    to a query frame, or to a result frame (each distinct query encoded once), so
    ``bm25 >> model.query_encoder() >> index.gar(...)`` works.

    Rows whose query is empty or missing are dropped with one warning naming their qids (as PyTerrier's
    own retrievers do), so ``model.retriever(index)`` gives them no results. A ``query_vec`` the frame
    already carries is never replaced: one this model made (its own, or a pseudo-query of
    ``prompt_encoder()``: ``model.prompt_encoder() >> model.retriever(index)`` is PRF re-retrieval) is
    passed on; one of another model raises ``IndexModelMismatch``, one of unknown origin or made with
    another instruction a ``ValueError``, each naming the column and the fix."""

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
        fingerprint, queries = self.model.fingerprint(), inp["query"].tolist()
        if provenance.carried(inp, "query_vec", fingerprint, lambda i, recipe: recipe in (
                provenance.query_recipe(self.model, queries[i]), provenance.prompt_recipe(queries[i])), self, key="qid",
                              fix="drop it (and 'query_vec_model') to encode the query text with this model, or "
                                  "search with it by index.retriever() on an index of the model that made it"):
            return inp
        inp = without_empty_queries(inp, self)
        codes, _ = pd.factorize(inp["qid"])
        first = pd.Series(range(len(inp))).groupby(codes).first().to_numpy() if len(inp) else []
        queries = require_text(inp.iloc[first], "query", key="qid")
        vectors = self.model.encode_queries(queries, batch_size=self.batch_size, verbose=self.verbose)
        encoded = inp.assign(query_vec=list(vectors[codes]) if len(inp) else [])
        return provenance.tagged(encoded, "query_vec", fingerprint,
                                 [provenance.query_recipe(self.model, query) for query in encoded["query"]])


class E2RankDocEncoder(EqualBySettings, pt.Transformer):
    """Adds ``doc_vec`` (normalised, text cut to the model's word limit; ``[dim]`` float32 per row) and its
    tag ``doc_vec_model`` to a document frame. A ``doc_vec`` the frame already carries is passed on if this
    model made it, else refused (``IndexModelMismatch`` for another model's, ``ValueError`` for one of
    unknown origin), never replaced."""

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
        fingerprint, texts = self.model.fingerprint(), inp[self.text_field].tolist()
        if provenance.carried(inp, "doc_vec", fingerprint, lambda i, recipe: recipe in (
                provenance.doc_recipe(texts[i]), provenance.STORED), self, key="docno",
                fix="drop it (and 'doc_vec_model') to encode the text"):
            return inp
        texts = require_text(inp, self.text_field, key="docno")
        vectors = self.model.encode_docs(texts, batch_size=self.batch_size, verbose=self.verbose)
        return provenance.tagged(inp.assign(doc_vec=list(vectors)), "doc_vec", fingerprint,
                                 [provenance.doc_recipe(text) for text in texts])
