"""E2Rank for PyTerrier: one embedding model for dense retrieval and listwise PRF reranking.

Every name the documentation teaches is importable from here (``from pyterrier_e2rank import E2Rank, dataset``)."""
from .bm25 import pisa_bm25, terrier_bm25
from .data import DocumentText, corpus_id, corpus_iter, dataset
from .deprecation import install_moved_modules
from .index.artifact import E2RankIndex
from .model.e2rank import DEFAULT_MODEL, E2Rank
from .model.loading import pick_model
from .model.provenance import IndexModelMismatch
from .model.stats import EncodeStats
from .model.text import DEFAULT_QUERY_TASK, DEFAULT_RERANK_TASK
from .rerank.influence import feedback_influence
from .rerank.prompt import ListwisePrompt

install_moved_modules()

__version__ = "0.4.0"  # the one place the version is written (setup.cfg reads it)
__all__ = ["E2Rank", "E2RankIndex", "IndexModelMismatch", "EncodeStats", "ListwisePrompt", "DEFAULT_MODEL",
           "DEFAULT_RERANK_TASK", "DEFAULT_QUERY_TASK", "pick_model", "feedback_influence", "dataset", "DocumentText",
           "corpus_id", "corpus_iter", "pisa_bm25", "terrier_bm25"]
