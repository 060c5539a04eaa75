"""The ANN retrievers of ``pyterrier_e2rank.index.ann`` on a small clustered index (4,000 x 32): well-formed
results close to exact search, structures stored once and reused, float16 at half the size, bad
parameters refused by name, and an overwrite of the index removing them."""
import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.testing import build_clustered_index, clustered
from pyterrier_e2rank.index.indexer import IndexWriter

pytest.importorskip("faiss")
pytestmark = pytest.mark.filterwarnings("ignore:IVF-PQ trained on")  # the small corpus here; tested below

DIM = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    index, centres = build_clustered_index(tmp_path_factory.mktemp("ann") / "index", num_docs=4000, dim=DIM,
                                           num_centres=40, chunk=1500)
    queries = clustered(np.random.default_rng(1), 20, DIM, centres)
    frame = pd.DataFrame({"qid": [f"q{i}" for i in range(20)], "query": "", "query_vec": list(queries)})
    return index, frame


def _recall(ann: pd.DataFrame, exact: pd.DataFrame, k: int) -> float:
    a = ann[ann["rank"] < k].groupby("qid")["docno"].apply(set)
    e = exact[exact["rank"] < k].groupby("qid")["docno"].apply(set)
    return float(np.mean([len(a[q] & e[q]) / k for q in e.index]))


RETRIEVERS = {  # name -> (options, recall@10 vs exact at least)
    "faiss_ivfpq_retriever": (dict(n_list=16, m=8, n_probe=8, rescore=200), 0.95),
    "faiss_hnsw_fp16_retriever": (dict(ef_search=64), 0.95),
    "faiss_flat_fp16_retriever": ({}, 0.99),
}


@pytest.mark.parametrize("method", sorted(RETRIEVERS))
def test_results_are_well_formed_and_close_to_exact(corpus, method):
    index, frame = corpus
    options, goal = RETRIEVERS[method]
    retriever = getattr(index, method)(num_results=50, **options)
    out = retriever(frame)
    exact = index.retriever(num_results=50)(frame)
    assert list(out.columns) == ["qid", "query", "docno", "score", "rank"]
    assert len(out) == 50 * len(frame)
    for _, group in out.groupby("qid"):
        assert group["rank"].tolist() == list(range(50))
        assert (np.diff(group["score"].to_numpy()) <= 1e-6).all()
    assert _recall(out, exact, 10) >= goal
    assert retriever == getattr(index, method)(num_results=50, **options)
    assert hash(retriever) == hash(getattr(index, method)(num_results=50, **options))
    assert retriever != getattr(index, method)(num_results=10, **options)
    assert method in repr(retriever)
    assert (retriever % 10)(frame)["rank"].max() == 9
    empty = retriever(frame.iloc[:0])
    assert list(empty.columns) == ["qid", "query", "docno", "score", "rank"] and empty.empty


def test_rescore_ranks_pq_candidates_exactly(corpus):
    index, frame = corpus
    rescored = index.faiss_ivfpq_retriever(n_list=16, m=4, n_probe=16, rescore=4000, num_results=10)(frame)
    exact = index.retriever(num_results=10)(frame)  # every document a candidate: the exact ranking
    assert rescored["docno"].tolist() == exact["docno"].tolist()
    np.testing.assert_allclose(rescored["score"], exact["score"], atol=1e-5)
    pq = index.faiss_ivfpq_retriever(n_list=16, m=4, n_probe=16, num_results=10)(frame)
    assert not np.allclose(pq["score"], exact["score"], atol=1e-5)  # PQ scores alone are approximate


def test_structures_are_stored_named_by_parameters_and_reused(corpus):
    index, frame = corpus
    from pyterrier_e2rank.index.artifact import E2RankIndex
    retriever = index.faiss_ivfpq_retriever(n_list=16, m=8, nbits=6, n_probe=4)
    assert retriever.path.name.endswith("-ivfpq_nlist-16_m-8_nbits-6_train-2496.faiss") and retriever.path.is_file()
    assert "ivfpq_nlist-16_m-8_nbits-6_train-2496.faiss" in index.structures()
    stamp = os.stat(retriever.path).st_mtime_ns
    fresh = E2RankIndex(index.index_path)  # another process: nothing cached in memory
    again = fresh.faiss_ivfpq_retriever(n_list=16, m=8, nbits=6, n_probe=4)
    assert os.stat(again.path).st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again(frame), retriever(frame))
    assert not [p for p in os.listdir(index.index_path) if p.endswith((".tmp", ".lock"))]


def test_too_few_training_vectors_give_one_warning_not_one_per_sub_quantizer(tmp_path, capfd):
    index, _ = build_clustered_index(tmp_path / "index", num_docs=3000, dim=DIM, num_centres=10)
    advice = "trained on 3,000 vectors where FAISS advises 9,984 .* exact search or HNSW"
    with pytest.warns(UserWarning, match=advice) as caught:
        index.faiss_ivfpq_retriever(n_list=16, m=8, nbits=8)
    assert len([w for w in caught if "IVF-PQ" in str(w.message)]) == 1
    assert "WARNING clustering" not in capfd.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.faiss_ivfpq_retriever(n_list=16, m=8, nbits=6)  # 2,496 advised: no warning


def test_fp16_halves_the_size_and_keeps_scores(corpus):
    index, frame = corpus
    fp16 = index.faiss_flat_fp16_retriever(num_results=100)
    size, float32 = os.path.getsize(fp16.path), os.path.getsize(index.index_path / "vecs.f4")
    assert size <= 0.5 * float32 * 1.01
    merged = fp16(frame).merge(index.retriever(num_results=100)(frame), on=["qid", "docno"], suffixes=("", "_exact"))
    assert len(merged) >= 0.99 * 100 * len(frame)
    assert (merged["score"] - merged["score_exact"]).abs().max() < 2e-3  # unit vectors: fp16 has 11 bits


@pytest.mark.parametrize("method, options, name", [
    ("faiss_ivfpq_retriever", dict(m=5), "m"),
    ("faiss_ivfpq_retriever", dict(nbits=0), "nbits"),
    ("faiss_ivfpq_retriever", dict(nbits=17), "nbits"),
    ("faiss_ivfpq_retriever", dict(n_list=16, n_probe=17), "n_probe"),
    ("faiss_ivfpq_retriever", dict(n_list=5000), "n_list"),
    ("faiss_ivfpq_retriever", dict(num_results=100, rescore=50), "rescore"),
    ("faiss_ivfpq_retriever", dict(train_sample=10), "train_sample"),
    ("faiss_hnsw_fp16_retriever", dict(ef_search=0), "ef_search"),
    ("faiss_hnsw_fp16_retriever", dict(neighbours=1.5), "neighbours"),
    ("faiss_flat_fp16_retriever", dict(num_results=0), "num_results"),
    ("faiss_flat_fp16_retriever", dict(num_results=True), "num_results"),
])
def test_bad_parameters_are_refused_by_name(corpus, method, options, name):
    index, _ = corpus
    with pytest.raises(ValueError, match=name):
        getattr(index, method)(**options)
    with pytest.raises(TypeError):
        getattr(index, method)(5)  # keyword-only


def test_a_structure_of_other_vectors_is_never_found(tmp_path, corpus):
    """Same count and dimension, other vectors, their structures copied in: the index finds only its own."""
    first, _ = build_clustered_index(tmp_path / "first", num_docs=600, dim=DIM, num_centres=5, seed=0)
    second, _ = build_clustered_index(tmp_path / "second", num_docs=600, dim=DIM, num_centres=5, seed=1)
    stored = first.faiss_flat_fp16_retriever().path
    shutil.copy(stored, second.index_path / stored.name)
    assert first.structures() == ["flat_fp16.faiss"] and second.structures() == []
    frame = corpus[1]
    fp16 = second.faiss_flat_fp16_retriever(num_results=10)(frame)
    exact = second.retriever(num_results=10)(frame)
    assert _recall(fp16, exact, 10) >= 0.99 and second.structures() == ["flat_fp16.faiss"]


def test_overwriting_the_index_removes_its_ann_structures(tmp_path):
    index, _ = build_clustered_index(tmp_path / "index", num_docs=800, dim=DIM, num_centres=5)
    paths = [index.faiss_flat_fp16_retriever().path, index.faiss_ivfpq_retriever(n_list=4, nbits=4).path,
             index.faiss_hnsw_fp16_retriever().path]
    (paths[0].parent / f".{paths[0].name}.lock").touch()  # what a killed build leaves behind
    (paths[0].parent / f".{paths[0].name}.x1y2.tmp").touch()
    (index.index_path / f".{paths[0].name}.lock").touch()  # and a killed build of 0.3, beside the vectors
    with IndexWriter(index.index_path, DIM, {"model": "synthetic-clustered", "dim": DIM}, overwrite=True) as writer:
        writer.add(["a", "b"], np.eye(2, DIM, dtype=np.float32))
        writer.finish()
    assert sorted(os.listdir(index.index_path)) == ["docnos.npids", "pt_meta.json", "vecs.f4"]


def test_every_approximate_search_of_the_index_is_defined_in_ann():
    """One place: each of FlexIndex's ANN retrievers and corpus graphs that an ``E2RankIndex`` serves (checked)
    or refuses, and each of ours, is a method of ``ann.AnnSearch`` (which the index serves: ``serve_methods``),
    not a shim elsewhere."""
    import inspect
    import re
    from pyterrier_dr import FlexIndex
    from pyterrier_e2rank.index.ann import AnnSearch
    from pyterrier_e2rank.index.artifact import E2RankIndex
    approximate = {n for n in dir(FlexIndex) if re.match(r"(faiss|scann|voyager|flatnav|kannolo)_|corpus_graph$", n)}
    approximate |= {n for n in dir(E2RankIndex) if n.startswith("faiss_")}
    assert {"faiss_hnsw_retriever", "faiss_ivfpq_retriever", "corpus_graph", "scann_retriever"} <= approximate
    defined_in = {n: inspect.unwrap(getattr(E2RankIndex, n)).__qualname__.split(".")[0] for n in sorted(approximate)}
    assert {n: c for n, c in defined_in.items() if c != AnnSearch.__name__} == {}
