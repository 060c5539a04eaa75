"""int8 and binary copies of the vectors (``pyterrier_e2rank.index.ann``) on a small clustered index
(4,000 x 32): close to exact search, exact once rescored, 4x and 32x smaller than float32, stored for their
vectors only, bad parameters and another model's queries refused."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.testing import build_clustered_index, clustered
from pyterrier_e2rank.model import provenance
from pyterrier_e2rank.index.artifact import E2RankIndex
from pyterrier_e2rank.model.provenance import IndexModelMismatch
from pyterrier_e2rank.io import CorruptArtifact

pytest.importorskip("faiss")

DIM, COUNT = 32, 4000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    index, centres = build_clustered_index(tmp_path_factory.mktemp("quantized") / "index", num_docs=COUNT, dim=DIM,
                                           num_centres=40, chunk=1500)
    queries = clustered(np.random.default_rng(1), 20, DIM, centres)
    frame = pd.DataFrame({"qid": [f"q{i}" for i in range(20)], "query": "", "query_vec": list(queries)})
    return index, frame


def _overlap(a: pd.DataFrame, b: pd.DataFrame) -> float:
    a, b = (x.groupby("qid")["docno"].apply(set) for x in (a, b))
    return float(np.mean([len(a[q] & b[q]) / len(b[q]) for q in b.index]))


@pytest.mark.parametrize("method, codes_recall", [("int8_retriever", 0.95), ("binary_retriever", 0.2)])
def test_codes_rank_close_to_exact_and_rescoring_makes_it_exact(corpus, method, codes_recall):
    index, frame = corpus
    exact = index.retriever(num_results=10)(frame)
    codes = getattr(index, method)(num_results=10)
    out = codes(frame)
    assert list(out.columns) == ["qid", "query", "docno", "score", "rank"] and len(out) == 10 * len(frame)
    assert _overlap(out, exact) >= codes_recall
    rescored = getattr(index, method)(num_results=10, rescore=COUNT)(frame)  # every document a candidate
    assert rescored["docno"].tolist() == exact["docno"].tolist()
    np.testing.assert_allclose(rescored["score"], exact["score"], atol=1e-5)
    assert codes == getattr(index, method)(num_results=10) and codes != getattr(index, method)(num_results=10,
                                                                                            rescore=100)
    assert f"{method}(" in repr(codes) and "rescore=100" in repr(getattr(index, method)(num_results=10, rescore=100))
    assert (codes % 5)(frame)["rank"].max() == 4


def test_binary_scores_are_sign_agreements(corpus):
    index, frame = corpus
    out = index.binary_retriever(num_results=5)(frame.iloc[:1])
    signs = np.sign(index.vectors(out["docno"].tolist())) @ np.sign(frame["query_vec"][0])
    np.testing.assert_array_equal(out["score"].to_numpy(), signs)  # dim - 2 * hamming


def test_memory_is_a_quarter_and_a_32nd_of_float32(corpus):
    index, _ = corpus
    float32 = os.path.getsize(index.path / "vecs.f4")
    int8 = os.path.getsize(index.int8_retriever().path)
    binary = os.path.getsize(index.binary_retriever().path)
    assert float32 / 4 <= int8 <= float32 / 4 + 4096  # the codes and the per-dimension ranges
    assert float32 / 32 <= binary <= float32 / 32 + 4096


def test_structures_are_stored_for_their_vectors_only(corpus, tmp_path):
    index, frame = corpus
    assert {"sq8_train-4000.faiss", "binary.faiss"} <= set(index.structures())
    other, _ = build_clustered_index(tmp_path / "other", num_docs=COUNT, dim=DIM, num_centres=40, seed=5)
    for stored in (index.int8_retriever().path, index.binary_retriever().path):  # another index's, copied in
        shutil.copy(stored, other.path / stored.name)
    assert E2RankIndex(other.path).structures() == []
    exact = other.retriever(num_results=10)(frame)
    for method in ("int8_retriever", "binary_retriever"):
        rescored = getattr(E2RankIndex(other.path), method)(num_results=10, rescore=COUNT)(frame)
        assert rescored["docno"].tolist() == exact["docno"].tolist()
    assert E2RankIndex(other.path).structures() == ["binary.faiss", "sq8_train-4000.faiss"]
    E2RankIndex(other.path).binary_retriever().path.write_bytes(b"not faiss")
    with pytest.raises(CorruptArtifact, match="binary.faiss is not a binary FAISS structure"):
        E2RankIndex(other.path).binary_retriever()


@pytest.mark.parametrize("method, options, name", [
    ("int8_retriever", dict(num_results=10, rescore=5), "rescore"),
    ("binary_retriever", dict(num_results=10, rescore=5), "rescore"),
    ("int8_retriever", dict(train_sample=COUNT + 1), "train_sample"),
    ("binary_retriever", dict(num_results=0), "num_results"),
])
def test_bad_parameters_are_refused_by_name(corpus, method, options, name):
    with pytest.raises(ValueError, match=name):
        getattr(corpus[0], method)(**options)


@pytest.mark.parametrize("method", ["int8_retriever", "binary_retriever"])
def test_queries_of_another_model_are_refused(corpus, method):
    index, frame = corpus
    foreign = provenance.tagged(frame, "query_vec", {"model": "another", "dim": DIM, "pooling": "cls"}, "query:")
    with pytest.raises(IndexModelMismatch, match="another"):
        getattr(index, method)(num_results=10)(foreign)
