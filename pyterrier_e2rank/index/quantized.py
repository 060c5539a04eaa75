"""Compressed copies of an index's vectors, searched exhaustively, with optional exact rescoring: int8
(``sq8_train-{n}.faiss``, 4x less than float32) and sign bits (``binary.faiss``, 32x less), both on CPU."""
from typing import Optional

import numpy as np

from ..checks import positive_int
from .structures import FaissAnnRetriever, add_all, faiss_module, in_range, sample

#: The vectors a scalar quantizer's ranges are taken from, at most (all of a smaller index).
INT8_TRAIN_SAMPLE = 100_000


def int8_retriever(index, *, num_results: int = 1000, rescore: Optional[int] = None,
                   train_sample: Optional[int] = None) -> FaissAnnRetriever:
    """Exhaustive search over int8 codes of the vectors, their per-dimension ranges taken from ``train_sample``
    vectors (default all, at most ``INT8_TRAIN_SAMPLE``); ``rescore``: that many candidates (>= ``num_results``)
    rescored exactly from the stored vectors. Raises ValueError naming a bad argument."""
    faiss = faiss_module()
    count = index.meta["doc_count"]
    num_results = positive_int(num_results, "num_results")
    rescore = positive_int(rescore, "rescore", minimum=num_results, allow_none=True)
    train_sample = in_range(min(count, INT8_TRAIN_SAMPLE) if train_sample is None else train_sample,
                            "train_sample", 1, count)

    def build():
        structure = faiss.IndexScalarQuantizer(index.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        structure.train(sample(index, train_sample))
        add_all(index, structure)
        return structure
    return FaissAnnRetriever(index, f"sq8_train-{train_sample}.faiss", build, method="int8_retriever",
                             num_results=num_results, rescore=rescore, gpu=False)


def binary_retriever(index, *, num_results: int = 1000, rescore: Optional[int] = None) -> "BinaryRetriever":
    """Exhaustive Hamming search over sign bits of the vectors, scored ``dim - 2 * hamming``; ``rescore``: that
    many candidates (>= ``num_results``) rescored exactly from the stored vectors. Raises ValueError naming a
    bad argument."""
    faiss = faiss_module()
    num_results = positive_int(num_results, "num_results")
    rescore = positive_int(rescore, "rescore", minimum=num_results, allow_none=True)

    def build():
        structure = faiss.IndexBinaryFlat(-(-index.dim // 8) * 8)
        add_all(index, structure, sign_codes)
        return structure
    return BinaryRetriever(index, "binary.faiss", build, method="binary_retriever", num_results=num_results,
                           rescore=rescore, gpu=False)


def sign_codes(vectors: np.ndarray) -> np.ndarray:
    """``(n, dim)`` float vectors -> ``(n, ceil(dim / 8))`` uint8: bit i is set where dimension i is > 0."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


class BinaryRetriever(FaissAnnRetriever):
    """Hamming search over sign bits (FAISS ``IndexBinaryFlat``), stored as ``binary.faiss``."""

    binary = True

    def _search_batch(self, queries: np.ndarray, k: int):
        distances, rows = self.structure.search(sign_codes(queries), k)
        scores = (self.index.dim - 2 * distances).astype(np.float32)
        if self.rescore is not None:
            scores, rows = self._rescore(queries, rows)
        return scores, rows
