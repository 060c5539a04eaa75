"""E2Rank for PyTerrier: one embedding model for dense retrieval and listwise PRF reranking.

Every name the documentation teaches is importable from here (``from pyterrier_e2rank import E2Rank, dataset``);
each is imported on first use, so ``import pyterrier_e2rank`` (and its light modules, such as ``io``) does not
import torch."""
import importlib

from .deprecation import install_moved_modules

#: The module each exported name is imported from, on first use (PEP 562).
_EXPORTS = {
    "bm25": ["pisa_bm25", "terrier_bm25"],
    "data": ["DocumentText", "bright_dataset", "corpus_id", "corpus_iter", "dataset"],
    "index.artifact": ["E2RankIndex"],
    "model.e2rank": ["DEFAULT_MODEL", "E2Rank"],
    "model.encoders": ["E2RankDocEncoder", "E2RankQueryEncoder"],
    "model.loading": ["pick_model"],
    "mteb_adapter": ["E2RankMTEB", "mteb_instruction", "mteb_task"],
    "model.provenance": ["IndexModelMismatch"],
    "model.stats": ["EncodeStats"],
    "model.text": ["DEFAULT_QUERY_TASK", "DEFAULT_RERANK_TASK", "format_query", "join_title", "truncate_words"],
    "pyserini": ["E2RankPyseriniQueryEncoder", "HitReranker", "search_batch", "write_faiss_index"],
    "rerank.influence": ["feedback_influence", "rank_biased_overlap"],
    "rerank.prompt": ["ListwisePrompt", "count_tokens", "token_ids"],
    "rerank.prompt_cache": ["PromptVectorCache"],
    "rerank.prompt_encoder": ["E2RankPromptEncoder", "PromptRenderer", "PromptVectorEncoder"],
    "rerank.reranker": ["E2RankReranker"],
    "rerank.scorer": ["E2RankScorer"],
    "rerank.vectors": ["CandidateVectors", "DotProduct"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

install_moved_modules()

__version__ = "0.4.0"  # the one place the version is written (setup.cfg reads it)
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
