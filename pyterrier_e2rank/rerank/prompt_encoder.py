"""The paper's one idea as a transformer: a ranked list becomes a query vector. ``E2RankPromptEncoder`` is
``PromptRenderer`` (R frame -> one rendered ``prompt`` per query) >> ``PromptVectorEncoder`` (``prompt`` ->
``query_vec``), the second a function of the prompt's text alone, so cacheable (``prompt_cache``)."""
import sys
from typing import List, Optional

import numpy as np
import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..checks import RANKED, is_text, require_text, validate_frame
from ..deprecation import renamed_argument
from ..index.artifact import as_index
from ..model.encoders import ModelTransformer
from .prompt import ListwisePrompt
from .prompt_cache import PromptVectorCache


class PromptRenderer(ModelTransformer):
    """R frame (``qid, query, docno, text`` and ``rank`` or ``score``) -> Q frame ``qid, query, prompt``: the
    top ``prompt.num_input_docs`` candidates of each query, in their current order (``in_current_order``); a
    frame without ``text`` takes it from ``index`` (``with_text``)."""
    SETTINGS = ("prompt", "text_field", "index")

    def __init__(self, model, prompt: ListwisePrompt, *, text_field: str = "text", index=None):
        self.model = model
        self.prompt = prompt
        self.text_field = text_field
        self.index = None if index is None else as_index(index)

    @property
    def includes(self) -> List[str]:
        """The columns a frame must have."""
        return ["qid", "docno", "query"] + ([self.text_field] if self.index is None else [])

    def with_text(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with its ``text_field`` column as given, else the index's texts of its docnos; a ValueError
        (``E2RankIndex.text_field``) when the index keeps none."""
        if self.text_field in frame.columns or self.index is None:
            return frame
        try:
            texts = self.index.texts(frame["docno"].tolist())
        except ValueError as e:
            raise ValueError(f"the listwise prompt needs the documents' text: the frame has no {self.text_field!r} "
                             f"column, and {e}") from None
        return frame.assign(**{self.text_field: pd.Series(texts, index=frame.index, dtype=object)})

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        validate_frame(inp, self, includes=self.includes, queries=True, one_of=RANKED)
        if len(inp) == 0:
            return pd.DataFrame({"qid": pd.Series(dtype=object), "query": pd.Series(dtype=str),
                                 "prompt": pd.Series(dtype=str)})
        frame = self.with_text(in_current_order(inp, self))
        groups = query_groups(frame)
        prompts = [self.render(frame, rows) for rows in groups]
        first = [rows[0] for rows in groups]
        return pd.DataFrame({"qid": frame["qid"].iloc[first].tolist(), "query": frame["query"].iloc[first].tolist(),
                             "prompt": prompts})

    def render(self, frame: pd.DataFrame, rows) -> str:
        """The prompt of one query from the rows ``rows`` (current order) of ``frame``."""
        qid = frame["qid"].iat[rows[0]]
        query = frame["query"].iat[rows[0]]
        if not is_text(query):
            raise ValueError(f"query {qid!r} has an empty or missing query text: {query!r}")
        top = frame.iloc[rows[:self.prompt.num_input_docs]]
        try:
            texts = require_text(top, self.text_field, key="docno")
        except ValueError as e:
            raise ValueError(f"query {qid!r}: documents entering the listwise prompt need text: {e}") from None
        return self.prompt.render(self.model.tokenizer, query, texts)


class PromptVectorEncoder(ModelTransformer):
    """Adds ``query_vec``, the embedding of each row's ``prompt``, and its tag ``query_vec_model``."""

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["prompt"], context=self)
        codes, prompts = pd.factorize(inp["prompt"])
        vectors = self.model.encode_prompts(list(prompts), batch_size=self.batch_size, verbose=self.verbose)
        return provenance.prompt_vectors_tagged(inp.assign(query_vec=list(vectors[codes])), self.model)


class E2RankPromptEncoder(ModelTransformer):
    """R frame -> Q frame ``qid, query, query_vec, query_vec_model``: E2Rank's pseudo-query (``>> index.retriever()``
    is PRF re-retrieval); ``cache``: a directory for a ``prompt_cache.PromptVectorCache``; ``index``: where
    the text of a frame without it is found."""
    SETTINGS = ("renderer", "cache")  # the vector encoder is a cache exactly when ``cache`` is given

    def __init__(self, model, prompt: ListwisePrompt, *, batch_size: Optional[int] = None,
                 verbose: Optional[bool] = None, text_field: str = "text", cache=None, index=None):
        self.model = model
        self.prompt = prompt
        self.renderer = PromptRenderer(model, prompt, text_field=text_field, index=index)
        self.vec_encoder = PromptVectorEncoder(model, batch_size=batch_size, verbose=verbose)
        self.cache = cache
        if cache is not None:
            self.vec_encoder = PromptVectorCache(cache, self.vec_encoder)

    def __repr__(self):
        index = f", index={self.renderer.index!r}" if self.renderer.index is not None else ""
        cache = f", cache={str(self.cache)!r}" if self.cache is not None else ""
        return f"{self.model!r}.prompt_encoder({self.prompt!r}{index}{cache})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        return self.vec_encoder(self.renderer(inp)).drop(columns=["prompt"])

    def encode(self, prompts: pd.DataFrame) -> pd.DataFrame:
        """Deprecated (0.4.0): ``prompt_encoder.vec_encoder(prompts)``, a ``prompt`` frame -> + ``query_vec``."""
        renamed_argument("E2RankPromptEncoder.encode(prompts)", "E2RankPromptEncoder.vec_encoder(prompts)")
        return self.vec_encoder(prompts)


def in_current_order(inp: pd.DataFrame, context) -> pd.DataFrame:
    """Rows grouped by query (first-seen order, ``_query_order``), each query's candidates by ``rank`` (else
    ``score``; one of them checked by ``validate_frame(..., one_of=RANKED)``). Raises ``ValueError`` for ranks that
    are not consecutive from any start, or non-finite keys."""
    refuse_score_cache(context)
    order_by = "rank" if "rank" in inp.columns else "score"
    keys = pd.to_numeric(inp[order_by], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(keys).all():
        row = int(np.flatnonzero(~np.isfinite(keys))[0])
        raise ValueError(f"the {order_by} of docno {inp['docno'].iat[row]!r} for qid {inp['qid'].iat[row]!r} is "
                         f"{inp[order_by].iat[row]!r}, not a finite number: the candidates' order is unknown")
    frame = inp.reset_index(drop=True)
    frame["_query_order"] = pd.factorize(frame["qid"])[0]
    frame = frame.sort_values(["_query_order", order_by], ascending=[True, order_by == "rank"],
                              kind="stable").reset_index(drop=True)
    if order_by == "rank":
        by_query = frame.groupby("_query_order", sort=False)["rank"]
        expected = by_query.transform("first").to_numpy() + by_query.cumcount().to_numpy()
        wrong = np.flatnonzero(frame["rank"].to_numpy() != expected)
        if len(wrong):
            qid = frame["qid"].iat[wrong[0]]
            ranks = frame.loc[frame["qid"] == qid, "rank"].tolist()
            raise ValueError(
                f"the candidates of query {qid!r} are not a whole ranked list (ranks {ranks[:8]}"
                f"{'...' if len(ranks) > 8 else ''}, not consecutive): a listwise prompt needs each query's top "
                f"candidates in order. If rows were dropped on purpose, recompute ranks first (pt.model.add_ranks)")
    return frame


def refuse_score_cache(context) -> None:
    """Raise ``ValueError`` when called, at any depth, by a per-(query, docno) score cache of pyterrier-caching:
    a listwise score depends on the other candidates."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        kind = type(owner)
        if kind.__module__.startswith("pyterrier_caching") and "ScorerCache" in kind.__name__:
            raise ValueError(
                f"{context!r} is listwise and cannot be served by {kind.__name__} (a per-document score cache "
                f"passes on only its misses and mixes scores from different candidate lists); cache the prompt "
                f"vectors instead: model.reranker(cache=...)")
        frame = frame.f_back


def query_groups(frame: pd.DataFrame) -> List[np.ndarray]:
    """Row positions of each query (contiguous, since the frame is sorted by query)."""
    codes = frame["_query_order"].to_numpy()
    return np.split(np.arange(len(frame)), np.flatnonzero(np.diff(codes)) + 1)
