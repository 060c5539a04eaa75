"""The paper's one idea as a transformer: a ranked list becomes a query vector.

``E2RankPromptEncoder``: R frame -> Q frame (``qid, query, query_vec``), the ``query_vec`` being the
embedding of the listwise prompt written from the query and its top candidates. It is two stages:

- ``PromptRenderer``: R frame -> Q frame with the rendered ``prompt`` (one row per query);
- ``PromptVectorEncoder``: ``prompt`` -> ``query_vec``, each distinct prompt once, all in batches.

The second is a plain function of the prompt text, so it is what may be cached (pyterrier-caching's
``KeyValueCache`` keyed by ``prompt``; ``cache=`` does it, one cache directory per model). A listwise
score itself depends on the other candidates and must never be cached per (query, docno).
"""
import hashlib
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd
import pyterrier as pt

from . import provenance
from .equality import EqualBySettings
from .checks import is_text, require_text
from .prompt import ListwisePrompt


class PromptRenderer(EqualBySettings, pt.Transformer):
    """R frame (``qid, query, docno, text`` and ``rank`` or ``score``) -> Q frame ``qid, query, prompt``.

    The top ``prompt.num_input_docs`` candidates of each query, in their current order, enter its
    prompt. With a ``rank`` column, each query's ranks must be exactly 0..n-1: a list with its top
    missing (a per-document cache such as ``ScorerCache`` passing on only its misses) is refused."""

    def __init__(self, model, prompt: ListwisePrompt, *, text_field: str = "text"):
        self.model = model
        self.prompt = prompt
        self.text_field = text_field

    def __repr__(self):
        return f"PromptRenderer({self.model!r}, {self.prompt!r}, text_field={self.text_field!r})"

    def _settings(self) -> tuple:
        return (self.model, self.prompt, self.text_field)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.result_frame(inp, extra_columns=["query", self.text_field], context=self)
        if len(inp) == 0:
            return pd.DataFrame({"qid": pd.Series(dtype=object), "query": pd.Series(dtype=str),
                                 "prompt": pd.Series(dtype=str)})
        frame = in_current_order(inp, self)
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


class PromptVectorEncoder(EqualBySettings, pt.Transformer):
    """Adds ``query_vec``, the embedding of each row's ``prompt`` (no ``<|endoftext|>``, as in the paper),
    tagged ``prompt`` with the model (``query_vec_model``, see ``provenance``)."""

    def __init__(self, model, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None):
        self.model = model
        self.batch_size = batch_size
        self.verbose = model.verbose if verbose is None else verbose

    def __repr__(self):
        return f"{self.model!r}.prompt_vec_encoder(batch_size={self.batch_size})"

    def _settings(self) -> tuple:
        return (self.model, self.batch_size)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["prompt"], context=self)
        codes, prompts = pd.factorize(inp["prompt"])
        vectors = self.model.encode_prompts(list(prompts), batch_size=self.batch_size, verbose=self.verbose) \
            if len(prompts) else np.empty((0, self.model.dim), np.float32)
        return tag_prompt_vectors(inp.assign(query_vec=list(vectors[codes])), self.model)


class E2RankPromptEncoder(EqualBySettings, pt.Transformer):
    """R frame -> Q frame ``qid, query, query_vec, query_vec_model``: E2Rank's pseudo-query (tagged with the
    model, see ``provenance``), ready for any dense stage of the same model (``>> index.retriever()`` and
    ``>> model.retriever(index)`` are PRF re-retrieval; with the candidates' vectors it is the reranker).

    ``cache``: a directory for pyterrier-caching's ``KeyValueCache`` of prompt vectors (keyed by the
    rendered prompt, in a subdirectory per model fingerprint), so a prompt is encoded once ever."""

    def __init__(self, model, prompt: ListwisePrompt, *, batch_size: Optional[int] = None,
                 verbose: Optional[bool] = None, text_field: str = "text", cache=None):
        self.model = model
        self.prompt = prompt
        self.renderer = PromptRenderer(model, prompt, text_field=text_field)
        self.vec_encoder = PromptVectorEncoder(model, batch_size=batch_size, verbose=verbose)
        self.cache = cache
        if cache is not None:
            from pyterrier_caching import KeyValueCache
            self.vec_encoder = KeyValueCache(prompt_cache_dir(cache, model), self.vec_encoder, key="prompt",
                                             value="query_vec")

    def __repr__(self):
        cache = f", cache={str(self.cache)!r}" if self.cache is not None else ""
        return f"{self.model!r}.prompt_encoder({self.prompt!r}{cache})"

    def _settings(self) -> tuple:
        return (self.renderer, self.vec_encoder.__class__, self.cache)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        return self.encode(self.renderer(inp)).drop(columns=["prompt"])

    def encode(self, prompts: pd.DataFrame) -> pd.DataFrame:
        """A frame with a ``prompt`` column -> + ``query_vec`` (through the cache, if any) and its tag
        ``query_vec_model`` (``provenance``)."""
        encoded = prompts.assign(query_vec=pd.Series(dtype=object)) if len(prompts) == 0 else self.vec_encoder(prompts)
        return tag_prompt_vectors(encoded, self.model)


def tag_prompt_vectors(frame: pd.DataFrame, model) -> pd.DataFrame:
    """``frame`` with the tag of its pseudo-queries (``provenance``): made by ``model`` from the row's
    ``query`` (a frame of prompts alone: from its prompt)."""
    sources = frame["query"] if "query" in frame.columns else frame["prompt"]
    return provenance.tagged(frame, "query_vec", model.fingerprint(), [provenance.prompt_recipe(q) for q in sources])


def prompt_cache_dir(cache, model) -> Path:
    """``cache/<model fingerprint digest>``: a prompt's vector is only valid for the model that made it."""
    key = hashlib.sha256(repr(sorted(model.fingerprint().items())).encode()).hexdigest()[:16]
    return Path(cache) / f"prompts-{key}"


def in_current_order(inp: pd.DataFrame, context) -> pd.DataFrame:
    """Rows grouped by query (first-seen order), each query's candidates by ``rank`` (else ``score``),
    with ``_query_order``; a ``rank`` column must hold 0..n-1 for every query."""
    order_by = "rank" if "rank" in inp.columns else "score"
    if order_by not in inp.columns:
        raise KeyError(f"{context!r} needs a 'rank' or 'score' column to know the candidates' order; "
                       f"got {list(inp.columns)}")
    frame = inp.reset_index(drop=True)
    frame["_query_order"] = pd.factorize(frame["qid"])[0]
    frame = frame.sort_values(["_query_order", order_by], ascending=[True, order_by == "rank"],
                              kind="stable").reset_index(drop=True)
    if order_by == "rank":
        expected = frame.groupby("_query_order", sort=False).cumcount().to_numpy()
        wrong = np.flatnonzero(frame["rank"].to_numpy() != expected)
        if len(wrong):
            qid = frame["qid"].iat[wrong[0]]
            ranks = frame.loc[frame["qid"] == qid, "rank"].tolist()
            raise ValueError(
                f"the candidates of query {qid!r} are not a whole ranked list (ranks {ranks[:8]}..., expected "
                f"0..{len(ranks) - 1}): a listwise prompt needs each query's top candidates. A per-document cache "
                f"(pyterrier-caching's ScorerCache) passes on only its misses and cannot serve a listwise reranker; "
                f"cache the prompt vectors instead (reranker(cache=...)). If rows were dropped on purpose, "
                f"recompute ranks first (pt.model.add_ranks)")
    return frame


def query_groups(frame: pd.DataFrame) -> List[np.ndarray]:
    """Row positions of each query (contiguous, since the frame is sorted by query)."""
    codes = frame["_query_order"].to_numpy()
    return np.split(np.arange(len(frame)), np.flatnonzero(np.diff(codes)) + 1)
