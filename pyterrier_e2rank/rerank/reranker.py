"""The E2Rank listwise PRF reranker: ``E2RankPromptEncoder`` >> ``CandidateVectors`` >> ``DotProduct``."""
import dataclasses
from typing import Optional

import numpy as np
import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..checks import RANKED, positive_int
from .prompt import ListwisePrompt
from .prompt_encoder import E2RankPromptEncoder, in_current_order, query_groups
from ..model.stats import EncodeStats, add_stats
from .vectors import CandidateVectors, DotProduct, VectorReranker


class E2RankReranker(VectorReranker):
    """R frame (``qid, query, docno``, ``text`` unless ``index`` keeps it, and ``rank`` or ``score``) -> same rows,
    new ``score``/``rank``; ``stats`` counts this reranker's own forward passes. With ``window`` (and ``stride``,
    default ``window // 2``), sliding windows run back to front and scores become ``n - final position``."""
    SETTINGS = ("prompt_encoder", "vec_loader", "window", "stride")
    one_of = RANKED

    def __init__(self, model, prompt: ListwisePrompt, *, index=None, window: Optional[int] = None,
                 stride: Optional[int] = None, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text", cache=None):
        positive_int(window, "window", allow_none=True)
        if window is not None:
            stride = max(1, window // 2) if stride is None else positive_int(stride, "stride", maximum=window)
            prompt = dataclasses.replace(prompt, num_input_docs=window)
        elif stride is not None:
            raise ValueError("stride is only meaningful with window")
        self.model = model
        self.vec_loader = CandidateVectors(model, index=index, text_field=text_field, batch_size=batch_size,
                                           verbose=verbose)
        self.prompt_encoder = E2RankPromptEncoder(model, prompt, batch_size=batch_size, verbose=verbose,
                                                  text_field=text_field, cache=cache, index=self.vec_loader.index)
        self.includes = tuple(self.prompt_encoder.renderer.includes)
        self.dot_product = DotProduct()
        self.window = window
        self.stride = stride
        self.stats = EncodeStats()

    @property
    def prompt(self) -> ListwisePrompt:
        return self.prompt_encoder.prompt

    def __repr__(self):
        args = [f"num_input_docs={self.prompt.num_input_docs}"]
        if self.index is not None:
            args.append(f"index={self.index!r}")
        if self.window is not None:
            args += [f"window={self.window}", f"stride={self.stride}"]
        if self.prompt.prompt_variant != "eval":
            args.append(f"prompt_variant={self.prompt.prompt_variant!r}")
        if self.prompt_encoder.cache is not None:
            args.append(f"cache={str(self.prompt_encoder.cache)!r}")
        return f"{self.model!r}.reranker({', '.join(args)})"

    def _scored(self, inp: pd.DataFrame) -> pd.DataFrame:
        with self.model.counting() as work:
            frame = self.vec_loader(in_current_order(inp, self))
            if self.window is None:
                pseudo_queries = self.prompt_encoder(provenance.without(frame, "doc_vec"))
                frame = frame.merge(pseudo_queries[["qid", "query_vec", "query_vec_model"]], on="qid", how="left")
                out = provenance.without(self.dot_product(frame), "query_vec")
            else:
                frame["score"] = self._sliding_windows(frame)
                out = pt.model.add_ranks(frame)
        add_stats(self, work)
        return out.sort_values(["_query_order", "rank"]).drop(columns=["_query_order"]).reset_index(drop=True)

    def _sliding_windows(self, frame: pd.DataFrame) -> np.ndarray:
        """Back-to-front windows; the same window step of all queries is encoded as one batch."""
        groups = query_groups(frame)
        vectors = np.stack(frame["doc_vec"].to_numpy())
        renderer = self.prompt_encoder.renderer
        frame = renderer.with_text(frame)
        rankings = [list(rows) for rows in groups]
        spans = [(max(0, len(rows) - self.window), len(rows)) for rows in groups]
        active = list(range(len(groups)))
        while active:
            prompts = pd.DataFrame({"prompt": [renderer.render(frame, rankings[q][spans[q][0]:spans[q][1]])
                                               for q in active]})
            pseudo_queries = np.stack(self.prompt_encoder.vec_encoder(prompts)["query_vec"].to_numpy())
            still_active = []
            for q, pseudo_query in zip(active, pseudo_queries):
                start, end = spans[q]
                window_rows = rankings[q][start:end]
                order = np.argsort(-(vectors[window_rows] @ pseudo_query), kind="stable")
                rankings[q][start:end] = [window_rows[i] for i in order]
                if start > 0:
                    spans[q] = (max(0, start - self.stride), end - self.stride)
                    still_active.append(q)
            active = still_active
        scores = np.empty(len(frame), dtype=np.float64)
        for ranking in rankings:
            scores[ranking] = len(ranking) - np.arange(len(ranking))
        return scores
