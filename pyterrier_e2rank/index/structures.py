"""FAISS structures derived from an index's vectors: built once, stored in the index (``E2RankIndex.derived``),
and searched by ``FaissAnnRetriever``; the plumbing that the ANN (``ann``) and compressed (``quantized``)
searches share."""
import copy
from pathlib import Path
from typing import Optional

import numpy as np
import pyterrier as pt

from ..checks import positive_int
from ..equality import EqualBySettings
from ..io import CorruptArtifact
from .retriever import VectorSearch

BLOCK = 65536  # vectors added per call while building: bounded memory on any corpus size
QUERY_BATCH = 64  # queries searched at once: bounds the memory of the candidates rescored


def faiss_module():
    """The ``faiss`` module; ImportError saying what to install."""
    try:
        import faiss
    except ImportError:
        raise ImportError("ANN search needs FAISS: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


class FaissAnnRetriever(EqualBySettings, VectorSearch):
    """Q frame with ``query_vec`` -> the top ``num_results`` documents (``docno``, ``score``, ``rank``, best first)
    of the FAISS structure ``name`` of the index, made by ``build()`` on first use; ``rescore``: that many
    candidates ranked again by the exact dot product with the stored vectors."""

    binary = False  # the structure is a FAISS binary index

    def __init__(self, index, name: str, build, *, method: str, num_results: int, n_probe: Optional[int] = None,
                 ef_search: Optional[int] = None, rescore: Optional[int] = None, gpu: Optional[bool] = None):
        self.index = index
        self.name = name
        self.method = method
        self.num_results = positive_int(num_results, "num_results")
        self.n_probe, self.ef_search, self.rescore = n_probe, ef_search, rescore
        faiss = faiss_module()
        if gpu and faiss.get_num_gpus() == 0:
            raise ValueError("gpu=True, but FAISS sees no GPU (faiss-gpu not installed, or no device)")
        self.gpu = faiss.get_num_gpus() > 0 if gpu is None else bool(gpu)
        key = ("e2rank_ann", name, self.gpu)
        if key not in index._cache:  # stored once, built from the index's vectors (``E2RankIndex.derived``)
            structure = index.derived(name, lambda out: write(build(), out, binary=self.binary),
                                      load=lambda path: read(index, path, binary=self.binary))
            index._cache[key] = faiss.index_cpu_to_all_gpus(structure) if self.gpu else structure
        self.structure = index._cache[key]

    @property
    def path(self) -> Path:
        """Where the structure is stored."""
        return self.index.structure_path(self.name)

    def _options(self):
        return tuple((k, v) for k, v in (("n_probe", self.n_probe), ("ef_search", self.ef_search),
                                          ("rescore", self.rescore), ("num_results", self.num_results))
                     if v is not None)

    def __repr__(self):
        options = ", ".join(f"{k}={v}" for k, v in self._options())
        return f"{self.index!r}.{self.method}({self.name!r}, {options})"

    def _settings(self) -> tuple:
        return (self.index, self.name, self._options(), self.gpu)

    def fuse_rank_cutoff(self, k: int) -> Optional[pt.Transformer]:
        """``retriever % k`` asks for fewer results instead of cutting them afterwards."""
        if k >= self.num_results:
            return None
        fused = copy.copy(self)  # the same structure
        fused.num_results = k
        return fused

    def search(self, query_vectors: np.ndarray):
        """Top-k (scores, row ids; -1 for none) for each query, best first."""
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        k = min(self.rescore or self.num_results, self.index.meta["doc_count"])
        parts = [self._search_batch(query_vectors[i:i + QUERY_BATCH], k)
                 for i in range(0, len(query_vectors), QUERY_BATCH)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_batch(self, queries: np.ndarray, k: int):
        faiss = faiss_module()
        if self.gpu:
            if self.n_probe is not None:
                faiss.GpuParameterSpace().set_index_parameter(self.structure, "nprobe", self.n_probe)
            scores, rows = self.structure.search(queries, k)
        else:
            params = (faiss.SearchParametersIVF(nprobe=self.n_probe) if self.n_probe is not None else
                      faiss.SearchParametersHNSW(efSearch=self.ef_search) if self.ef_search is not None else None)
            scores, rows = self.structure.search(queries, k, params=params)
        if self.rescore is not None:
            scores, rows = self._rescore(queries, rows)
        return scores, rows

    def _rescore(self, queries: np.ndarray, rows: np.ndarray):
        """Exact scores of the candidates from the stored vectors (read in row order), best ``num_results``."""
        vectors = self.index.payload(return_docnos=False)[0]
        flat = rows.ravel()
        valid = np.flatnonzero(flat >= 0)
        order = valid[np.argsort(flat[valid], kind="stable")]
        candidates = np.zeros((flat.size, queries.shape[1]), dtype=np.float32)
        candidates[order] = vectors[flat[order]]
        scores = np.einsum("qkd,qd->qk", candidates.reshape(*rows.shape, -1), queries)
        scores[rows < 0] = -np.inf
        k = min(self.num_results, rows.shape[1])
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, rows = np.take_along_axis(scores, best, axis=1), np.take_along_axis(rows, best, axis=1)
        rows[~np.isfinite(scores)] = -1
        return scores, rows


def in_range(value, name: str, minimum: int, maximum: int) -> int:
    """``value`` as an int from ``minimum`` to ``maximum``; else a ValueError naming ``name``."""
    value = positive_int(value, name, minimum=minimum)
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum} here, got {value!r}")
    return value


def write(structure, out, flags: int = 0, *, binary: bool = False):
    """``structure``, written to the binary file ``out`` (``None``: kept in memory only)."""
    if out is not None:
        faiss = faiss_module()
        if binary:
            faiss.write_index_binary(structure, faiss.PyCallbackIOWriter(out.write))
        else:
            faiss.write_index(structure, faiss.PyCallbackIOWriter(out.write), flags)
    return structure


def read(index, path: Path, *, binary: bool = False):
    """The FAISS structure stored at ``path``; CorruptArtifact naming it if FAISS cannot read it."""
    faiss = faiss_module()
    try:
        return faiss.read_index_binary(str(path)) if binary else faiss.read_index(str(path))
    except RuntimeError as e:
        raise CorruptArtifact(f"{index.structure_path(path.name)} is not a{' binary' if binary else ''} FAISS "
                              f"structure FAISS can read ({str(e).splitlines()[0]}); delete it to rebuild it") from None


def sample(index, count: int) -> np.ndarray:
    """``count`` vectors drawn without replacement (seeded), read in row order from the memory map."""
    vectors = index.payload(return_docnos=False)[0]
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=count, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def add_all(index, structure, encode=None) -> None:
    """Every vector of the index added to ``structure`` in blocks (``encode``: each block transformed first)."""
    vectors = index.payload(return_docnos=False)[0]
    for start in range(0, len(vectors), BLOCK):
        block = np.ascontiguousarray(vectors[start:start + BLOCK], dtype=np.float32)
        structure.add(block if encode is None else encode(block))
