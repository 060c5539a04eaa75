"""Compressed copies of an index's vectors, searched exhaustively, with optional exact rescoring.

Two formats, each a structure derived from the vectors and stored inside the index like the ANN ones
(``E2RankIndex.derived``: named by its parameters, beside a record of the vectors it was built from,
refused when they are not the index's, removed by an overwrite or an append):

- **int8** (``int8_retriever``, ``sq8_train-{n}.faiss``): FAISS's ``IndexScalarQuantizer`` ``QT_8bit``,
  each dimension mapped to 256 levels between its minimum and maximum over ``train_sample`` vectors
  (sentence-transformers' calibration ranges, per dimension); one byte per dimension: 4x less than float32.
- **binary** (``binary_retriever``, ``binary.faiss``): one bit per dimension, its sign (> 0, as
  sentence-transformers' ``quantize_embeddings(precision="binary")``), searched by Hamming distance
  (FAISS ``IndexBinaryFlat``); 32x less than float32. A code's score is ``dim - 2 * hamming``: the dot
  product of the query's and the document's +-1 sign vectors.

``rescore=k'`` takes the best ``k'`` (>= ``num_results``) documents by their codes and ranks them by the
exact dot product with the float32 vectors, read from the memory-mapped ``vecs.f4`` (only those rows:
the page cache, not RAM, holds the rest), as sentence-transformers' ``semantic_search_faiss`` rescores
(there from the quantized documents, here from the stored ones). The codes alone rank approximately
(binary much more than int8); the rescored scores are the exact ones. Both run on CPU. Exact search
(``index.retriever()``) stays the default.
"""
from pathlib import Path
from typing import Optional

import numpy as np

from .ann import _BLOCK, FaissAnnRetriever, _add_all, _faiss, _in_range, _sample, _structure, checked_size
from ..checks import positive_int
from ..io import CorruptArtifact

#: The vectors a scalar quantizer's ranges are taken from, at most (all of a smaller index).
INT8_TRAIN_SAMPLE = 100_000


def int8_retriever(index, *, num_results: int = 1000, rescore: Optional[int] = None,
                   train_sample: Optional[int] = None) -> FaissAnnRetriever:
    """Exhaustive search over int8 codes of the vectors (``dim`` bytes each), their per-dimension ranges
    taken from ``train_sample`` vectors (default all, at most ``INT8_TRAIN_SAMPLE``; a sample misses some
    extremes, which are clipped); ``rescore``: that many candidates (>= ``num_results``) rescored exactly
    from the stored vectors (``None``: the codes' scores). Bad values raise ValueError naming the argument."""
    faiss = _faiss()
    count = index.meta["doc_count"]
    num_results = positive_int(num_results, "num_results")
    rescore = positive_int(rescore, "rescore", minimum=num_results, allow_none=True)
    train_sample = _in_range(min(count, INT8_TRAIN_SAMPLE) if train_sample is None else train_sample,
                             "train_sample", 1, count)

    def build():
        structure = faiss.IndexScalarQuantizer(index.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        structure.train(_sample(index, train_sample))
        _add_all(index, structure)
        return structure
    return FaissAnnRetriever(index, f"sq8_train-{train_sample}.faiss", build, method="int8_retriever",
                             num_results=num_results, rescore=rescore, gpu=False)


def binary_retriever(index, *, num_results: int = 1000, rescore: Optional[int] = None) -> "BinaryRetriever":
    """Exhaustive Hamming search over sign bits of the vectors (``ceil(dim / 8)`` bytes each); ``rescore``:
    that many candidates (>= ``num_results``) rescored exactly from the stored vectors (``None``: the codes'
    scores, ``dim - 2 * hamming``, with many ties). Bad values raise ValueError naming the argument."""
    faiss = _faiss()
    num_results = positive_int(num_results, "num_results")
    rescore = positive_int(rescore, "rescore", minimum=num_results, allow_none=True)

    def build():
        structure = faiss.IndexBinaryFlat(_bits(index.dim))
        vectors = index.payload(return_docnos=False)[0]
        for start in range(0, len(vectors), _BLOCK):
            structure.add(sign_codes(vectors[start:start + _BLOCK]))
        return structure
    return BinaryRetriever(index, "binary.faiss", build, method="binary_retriever", num_results=num_results,
                           rescore=rescore, gpu=False)


def sign_codes(vectors: np.ndarray) -> np.ndarray:
    """``(n, dim)`` float vectors -> ``(n, ceil(dim / 8))`` uint8: bit i is set where dimension i is > 0
    (padded with zero bits to a whole byte)."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def _bits(dim: int) -> int:
    return -(-dim // 8) * 8


class BinaryRetriever(FaissAnnRetriever):
    """Hamming search over sign bits (FAISS ``IndexBinaryFlat``), stored as ``binary.faiss``."""

    def _load_structure(self):
        return _structure(self.index, self.name, self._build, gpu=False, write=_write_binary,
                          read=_read_binary)

    def _search_batch(self, queries: np.ndarray, k: int):
        distances, rows = self.structure.search(sign_codes(queries), k)
        scores = (self.index.dim - 2 * distances).astype(np.float32)
        if self.rescore is not None:
            scores, rows = self._rescore(queries, rows)
        return scores, rows


def _write_binary(structure, out):
    if out is not None:
        faiss = _faiss()
        faiss.write_index_binary(structure, faiss.PyCallbackIOWriter(out.write))
    return structure


def _read_binary(index, path):
    """The binary FAISS structure at ``path``, checked to hold the index's count and dimension."""
    faiss = _faiss()
    try:
        structure = faiss.read_index_binary(str(path))
    except RuntimeError as e:
        raise CorruptArtifact(f"{Path(index.path) / path.name} is not a binary FAISS structure FAISS can read "
                              f"({str(e).splitlines()[0]}); delete it to rebuild it") from None
    return checked_size(index, path, structure, _bits(index.dim))
