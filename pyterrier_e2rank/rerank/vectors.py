"""The vector stages every reranker is made of: the candidates' vectors and their dot product with the query's."""
from typing import Optional

import numpy as np
import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..checks import require_text, stack_vectors, validate_frame
from ..equality import EqualBySettings
from ..index.artifact import as_index
from ..model.encoders import ModelTransformer


class CandidateVectors(ModelTransformer):
    """Adds ``doc_vec`` and its tag to an R frame: kept if present (if of ``model``, or untagged), else the index's
    by ``docno``, else encoded from ``text_field`` (each distinct docno once)."""
    SETTINGS = ("index", "text_field")

    def __init__(self, model, *, index=None, text_field: str = "text", batch_size: Optional[int] = None,
                 verbose: Optional[bool] = None):
        super().__init__(model, batch_size=batch_size, verbose=verbose)
        self.index = None if index is None else as_index(index)
        if self.index is not None:
            self.index.check_model(model)
        self.text_field = text_field

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        encoded = "doc_vec" not in inp.columns and self.index is None
        validate_frame(inp, self, includes=["docno"], texts=self.text_field if encoded else None)
        docnos = inp["docno"].tolist()
        if "doc_vec" in inp.columns:
            stack_vectors(inp["doc_vec"], docnos, self.model.dim,
                          "doc_vec (drop the column to use the index or the text) of docno")
            provenance.check_frame(inp, "doc_vec", self.model.fingerprint(), f"{self!r}", key="docno",
                                   text=self.text_field,
                                   fix="drop the column (and 'doc_vec_model') to use the index or the text")
            return inp
        if self.index is not None:
            return self.index.vec_loader()(inp)
        unique = inp.drop_duplicates("docno")
        encoded = self.model.encode_docs(require_text(unique, self.text_field, key="docno"),
                                         batch_size=self.batch_size, verbose=self.verbose)
        codes = pd.Index(unique["docno"]).get_indexer(inp["docno"])
        return provenance.tagged(inp.assign(doc_vec=list(encoded[codes])), "doc_vec", self.model.fingerprint(),
                                 [provenance.doc_recipe(text) for text in inp[self.text_field]])


class VectorReranker(ModelTransformer):
    """A reranker: R frame with the columns ``includes`` -> the same rows, ``score``/``rank`` new, from
    ``_scored`` of the frame; ``doc_vec`` is kept only where the input had it. ``vec_loader``: its candidates;
    ``one_of``: column sets of which the frame needs one besides (``checks.validate_frame``)."""
    includes = ("qid", "docno", "query")
    one_of = ((),)

    @property
    def index(self):
        return self.vec_loader.index

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        validate_frame(inp, self, includes=self.includes, queries=True, one_of=self.one_of)
        if len(inp) == 0:
            return unscored(inp)
        out = self._scored(inp)
        return out if "doc_vec" in inp.columns else provenance.without(out, "doc_vec")


class DotProduct(EqualBySettings, pt.Transformer):
    """R frame with ``query_vec`` and ``doc_vec`` -> ``score`` = their dot product, ``rank`` by it; vectors
    tagged by two models raise ``IndexModelMismatch``."""

    def __repr__(self):
        return "DotProduct()"

    def _settings(self) -> tuple:
        return ()

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        validate_frame(inp, self, includes=["qid", "docno", "query_vec", "doc_vec"])
        provenance.check_one_space(inp, ["query_vec", "doc_vec"], key="qid")
        if len(inp) == 0:
            return unscored(inp)
        names = inp["docno"].tolist()
        dim = len(inp["doc_vec"].iat[0])
        documents = stack_vectors(inp["doc_vec"], names, dim, "doc_vec of docno")
        queries = stack_vectors(inp["query_vec"], inp["qid"].tolist(), dim, "query_vec of qid")
        return pt.model.add_ranks(inp.assign(score=np.einsum("nd,nd->n", documents, queries).astype(np.float64)))


def unscored(inp: pd.DataFrame) -> pd.DataFrame:
    """A frame without rows, with ``score`` and ``rank`` where a scored one has them (``pt.model.add_ranks``)."""
    return pt.model.add_ranks(inp.assign(score=pd.Series(dtype=np.float64)))
