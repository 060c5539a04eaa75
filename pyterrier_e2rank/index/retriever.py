"""The transformers an ``E2RankIndex`` hands out: ours (``IndexStage``: exact search, ``VectorSearch`` for every
dense search of ours) and pyterrier-dr's, wrapped in ``FlexStage``, the one place its results are fixed. Each
refuses another model's ``query_vec`` before it runs."""
import copy
from typing import Optional

import numpy as np
import pandas as pd
import pyterrier as pt
from pyterrier_dr.flex.np_retr import NumpyScorer

from ..model import provenance
from ..equality import EqualBySettings
from ..checks import positive_int, stack_vectors, validate_frame


class IndexStage(pt.Transformer):
    """A transformer an ``E2RankIndex`` hands out: ``transform`` refuses a ``query_vec`` another model than the
    index's made (``IndexModelMismatch``), or made from another ``query`` than the row holds (``ValueError``;
    untagged vectors pass), then runs ``serve``."""

    index = None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        if "query_vec" in inp.columns:
            named = inp if "qid" in inp.columns else inp.assign(qid=[f"row {i}" for i in range(len(inp))])
            provenance.check_frame(named, "query_vec", self.index.fingerprint, f"the index at {self.index.path}",
                                   key="qid", text="query", fix="encode the queries with the index's model, or "
                                                                "search an index of the queries' model")
        return self.serve(inp)


class VectorSearch(IndexStage):
    """Q frame with ``query_vec`` -> the top ``num_results`` documents (without ``query_vec``), from
    ``self.search(vectors) -> (scores, rows)`` (rows of the index, best first; -1 where a structure found fewer)."""

    def fuse_rank_cutoff(self, k: int) -> Optional[pt.Transformer]:
        """``search % k`` asks for fewer results instead of cutting them afterwards."""
        if k >= self.num_results:
            return None
        fused = copy.copy(self)  # the same index and structure
        fused.num_results = k
        return fused

    def serve(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query_vec"], context=self)
        validate_frame(inp, self, includes=["qid", "query_vec"])
        repeated = inp["qid"][inp["qid"].duplicated()].unique().tolist()
        if repeated:  # each row would be answered: every document of the query listed once per row
            raise ValueError(f"{self!r}: {len(repeated)} qid(s) are on more than one row of the query frame "
                             f"({repeated[:5]}); a query frame has one row per query: drop the repeated rows "
                             f"(topics.drop_duplicates('qid'))")
        queries = inp.reset_index(drop=True)
        if len(queries) == 0:
            return provenance.without(queries, "query_vec").assign(
                docno=pd.Series(dtype=str), score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        query_vectors = stack_vectors(queries["query_vec"], queries["qid"].tolist(), self.index.dim,
                                      "query_vec of qid")
        scores, rows = self.search(query_vectors)
        keep = rows >= 0
        counts = keep.sum(axis=1)
        out = provenance.without(queries, "query_vec").loc[np.repeat(np.arange(len(queries)), counts)]
        out = out.reset_index(drop=True)
        out["docno"] = self.index.docnos().fwd[rows[keep]]
        out["score"] = scores[keep].astype(np.float64)
        out["rank"] = np.concatenate([np.arange(c) for c in counts])
        return out


class E2RankRetriever(EqualBySettings, VectorSearch):
    """Q frame with ``query_vec`` -> top ``num_results`` documents by dot product, best first."""

    def __init__(self, index, *, num_results: int = 1000, verbose: bool = False, block_size: int = 65536):
        self.index = index
        self.num_results = positive_int(num_results, "num_results")
        self.verbose = verbose
        self.block_size = positive_int(block_size, "block_size")

    def __repr__(self):
        return f"{self.index!r}.retriever(num_results={self.num_results})"

    def _settings(self) -> tuple:
        return (self.index, self.num_results, self.block_size)

    def search(self, query_vectors: np.ndarray):
        """Top-k (scores, row ids) for each query, best first, over all vectors."""
        vectors = self.index.payload(return_docnos=False)[0]
        k = min(self.num_results, len(vectors))
        best_scores = np.full((len(query_vectors), 0), -np.inf, dtype=np.float32)
        best_rows = np.zeros((len(query_vectors), 0), dtype=np.int64)
        starts = range(0, len(vectors), self.block_size)
        if self.verbose:
            starts = pt.tqdm(starts, desc="dense search", unit="block")
        for start in starts:
            scores = query_vectors @ np.asarray(vectors[start:start + self.block_size]).T
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + scores.shape[1]),
                                                                   scores.shape)], axis=1)
            if best_scores.shape[1] > k:
                part = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                best_scores = np.take_along_axis(best_scores, part, axis=1)
                best_rows = np.take_along_axis(best_rows, part, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_rows, order, axis=1)


class FlexStage(EqualBySettings, IndexStage):
    """A transformer of pyterrier-dr's that an ``E2RankIndex`` hands out (FAISS, NumPy and PyTorch retrievers
    and scorers, GAR, LADR, MMR), another model's ``query_vec`` refused; its results one ``docno`` str,
    ``docid``/``rank`` int and ``score`` float per cell, and no tag without its vector."""

    def __init__(self, index, transformer: pt.Transformer):
        self.index = index
        self.transformer = transformer

    def __getattr__(self, name):  # the transformer's own attributes (faiss_index, num_results, score...)
        if name in ("index", "transformer") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.transformer, name)

    def __repr__(self):
        return repr(self.transformer)

    def _settings(self) -> tuple:
        return (self.index, self.transformer)

    def fuse_rank_cutoff(self, k: int):
        fused = self.transformer.fuse_rank_cutoff(k) if hasattr(self.transformer, "fuse_rank_cutoff") else None
        return None if fused is None else FlexStage(self.index, fused)

    def schematic(self, *, input_columns=None) -> dict:
        """Drawn with the label of the transformer it serves."""
        label = pt.schematic.transformer_schematic(self.transformer, input_columns=None).get("label")
        return {"label": label or type(self.transformer).__name__}

    def serve(self, inp: pd.DataFrame) -> pd.DataFrame:
        if isinstance(self.transformer, NumpyScorer):  # (and TorchScorer) groups by a qid it does not ask for,
            validate_frame(inp, self, includes=["qid", "query_vec", "docno"])  # (docid: E2RankIndex._load_docids)
            if len(inp) == 0:  # and fails on a frame without rows
                return inp.drop(columns=["score", "rank"], errors="ignore").assign(
                    score=pd.Series(dtype=np.float64), rank=pd.Series(dtype=np.int64))
        out = provenance.without(self.transformer(inp))
        for column, kind in (("docno", str), ("docid", np.int64), ("rank", np.int64), ("score", np.float64)):
            if column in out.columns:
                values = out[column].tolist()
                if any(isinstance(v, np.ndarray) for v in values):
                    values = [np.asarray(v).item() for v in values]  # an array of another size raises here
                out[column] = pd.Series(values, index=out.index, dtype=object).astype(kind)
        return out
