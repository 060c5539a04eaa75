"""Query and document encoders (frames in, the same frames with ``query_vec``/``doc_vec`` and their tags out), and
``ModelTransformer``, the base of every transformer of one E2Rank model."""
from typing import Optional

import pandas as pd
import pyterrier as pt

from . import provenance
from ..equality import EqualBySettings
from ..checks import require_text, validate_frame, without_empty_queries


class ModelTransformer(EqualBySettings, pt.Transformer):
    """A transformer of one E2Rank ``model``: equal to another of its class with an equal model and equal
    ``SETTINGS`` (attribute names), and shown as the model's ``FACTORY`` call that makes it (else the class's)."""
    FACTORY: Optional[str] = None
    SETTINGS = ("batch_size",)

    def __init__(self, model, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None):
        self.model = model
        self.batch_size = batch_size
        self.verbose = verbose

    def __repr__(self):
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.SETTINGS)
        if self.FACTORY is None:
            return f"{type(self).__name__}({self.model!r}, {settings})"
        return f"{self.model!r}.{self.FACTORY}({settings})"

    def _settings(self) -> tuple:
        return (self.model, *(getattr(self, name) for name in self.SETTINGS))


class E2RankQueryEncoder(ModelTransformer):
    """Adds ``query_vec`` (instructed, normalised) and its tag ``query_vec_model`` to a Q or R frame (each
    distinct query encoded once). Empty queries are dropped with one warning. A ``query_vec`` this model made
    from the row's query (or a pseudo-query of it) is passed on; another raises ``IndexModelMismatch``
    (another model) or ``ValueError`` (unknown origin, another instruction or text)."""
    FACTORY = "query_encoder"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        validate_frame(inp, self, includes=["qid", "query"], queries=True)
        fingerprint, queries = self.model.fingerprint(), inp["query"].tolist()
        if provenance.carried(inp, "query_vec", fingerprint, lambda i, recipe: recipe in (
                provenance.query_recipe(self.model, queries[i]), provenance.prompt_recipe(queries[i])), self, key="qid",
                              fix="drop it (and 'query_vec_model') to encode the query text with this model, or "
                                  "search with it by index.retriever() on an index of the model that made it"):
            return inp
        inp = without_empty_queries(inp, self)
        unique = inp.drop_duplicates("qid")
        vectors = self.model.encode_queries(require_text(unique, "query", key="qid"), batch_size=self.batch_size,
                                            verbose=self.verbose)
        encoded = inp.assign(query_vec=list(vectors[pd.Index(unique["qid"]).get_indexer(inp["qid"])]))
        return provenance.tagged(encoded, "query_vec", fingerprint,
                                 [provenance.query_recipe(self.model, query) for query in encoded["query"]])


class E2RankDocEncoder(ModelTransformer):
    """Adds ``doc_vec`` and its tag ``doc_vec_model`` to a document frame; a ``doc_vec`` it carries is passed on
    if this model made it, else refused as by ``E2RankQueryEncoder``."""
    FACTORY = "doc_encoder"
    SETTINGS = ("batch_size", "text_field")

    def __init__(self, model, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text"):
        super().__init__(model, batch_size=batch_size, verbose=verbose)
        self.text_field = text_field

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
