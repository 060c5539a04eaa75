"""E2Rank for PyTerrier: one embedding model for dense retrieval and listwise PRF reranking.

Every name the documentation teaches is importable from here (``from pyterrier_e2rank import E2Rank, dataset``)."""
from .bm25 import pisa_bm25, terrier_bm25
from .data import DocumentText, corpus_id, corpus_iter, dataset
from .deprecation import install_moved_modules
from .index.artifact import E2RankIndex
from .model.e2rank import DEFAULT_MODEL, E2Rank
from .model.encoders import E2RankDocEncoder, E2RankQueryEncoder
from .model.loading import pick_model
from .model.provenance import IndexModelMismatch
from .model.stats import EncodeStats
from .model.text import DEFAULT_QUERY_TASK, DEFAULT_RERANK_TASK, format_query, join_title, truncate_words
from .pyserini import E2RankPyseriniQueryEncoder, HitReranker, search_batch, write_faiss_index
from .rerank.influence import feedback_influence, rank_biased_overlap
from .rerank.prompt import ListwisePrompt, count_tokens, token_ids
from .rerank.prompt_cache import PromptVectorCache
from .rerank.prompt_encoder import E2RankPromptEncoder, PromptRenderer, PromptVectorEncoder
from .rerank.reranker import E2RankReranker
from .rerank.scorer import E2RankScorer
from .rerank.vectors import CandidateVectors, DotProduct

install_moved_modules()

__version__ = "0.4.0"  # the one place the version is written (setup.cfg reads it)
__all__ = ["E2Rank", "E2RankIndex", "IndexModelMismatch", "EncodeStats", "ListwisePrompt", "DEFAULT_MODEL",
           "DEFAULT_RERANK_TASK", "DEFAULT_QUERY_TASK", "pick_model", "feedback_influence", "dataset", "DocumentText",
           "corpus_id", "corpus_iter", "pisa_bm25", "terrier_bm25", "E2RankQueryEncoder", "E2RankDocEncoder",
           "format_query", "join_title", "truncate_words", "E2RankPyseriniQueryEncoder", "HitReranker",
           "search_batch", "write_faiss_index", "rank_biased_overlap", "count_tokens", "token_ids",
           "PromptVectorCache", "E2RankPromptEncoder", "PromptRenderer", "PromptVectorEncoder", "E2RankReranker",
           "E2RankScorer", "CandidateVectors", "DotProduct"]
