"""E2Rank for PyTerrier: one embedding model for dense retrieval and listwise PRF reranking."""
from .core.index import E2RankIndex
from .core.model import DEFAULT_MODEL, E2Rank
from .core.stats import EncodeStats
from .core.prompt import ListwisePrompt
from .core.provenance import IndexModelMismatch
from .core.text import DEFAULT_QUERY_TASK, DEFAULT_RERANK_TASK

__version__ = "0.3.2"  # the one place the version is written (setup.cfg reads it)
__all__ = ["E2Rank", "E2RankIndex", "IndexModelMismatch", "EncodeStats", "ListwisePrompt",
           "DEFAULT_MODEL", "DEFAULT_RERANK_TASK", "DEFAULT_QUERY_TASK"]
