"""Every transformer an ``E2RankIndex`` hands out keeps its guarantees (issue "Nothing lost at the seams",
class 4): each search, scorer and loader, FlexIndex's and ours, refuses another model's ``query_vec`` as
``index.retriever()`` does and serves the index's own; FlexIndex's public methods are each served or listed
as handing out no transformer, so a method a later pyterrier-dr adds is not missed."""
import inspect

import numpy as np
import pandas as pd
import pytest
from pyterrier_dr import FlexIndex

from pyterrier_e2rank.testing import build_clustered_index
from pyterrier_e2rank import IndexModelMismatch
from pyterrier_e2rank.model import provenance
from pyterrier_e2rank.index.artifact import NOT_TRANSFORMERS, E2RankIndex, serve_methods

pytest.importorskip("faiss")
pytestmark = pytest.mark.filterwarnings("ignore:IVF-PQ trained on")

DIM = 32
OTHER = {"model": "another-model", "dim": DIM, "weights": "other"}

#: How each served method is called here, and the frame it takes: queries (Q) or ranked candidates (R).
SERVED = {
    "retriever": (dict(num_results=10), "Q"),
    "np_retriever": (dict(num_results=10, drop_query_vec=True), "Q"),
    "torch_retriever": (dict(num_results=10), "Q"),
    "faiss_flat_retriever": ({}, "Q"),
    "faiss_hnsw_retriever": (dict(neighbours=8, num_results=10), "Q"),
    "faiss_ivf_retriever": (dict(n_list=4, num_results=10), "Q"),
    "faiss_ivfpq_retriever": (dict(n_list=4, m=4, nbits=4, num_results=10), "Q"),
    "faiss_hnsw_fp16_retriever": (dict(neighbours=8, num_results=10), "Q"),
    "faiss_flat_fp16_retriever": (dict(num_results=10), "Q"),
    "int8_retriever": (dict(num_results=10), "Q"),
    "binary_retriever": (dict(num_results=10, rescore=50), "Q"),
    "gar": (dict(k=8, num_results=10), "R"),
    "ladr": (dict(k=8, num_results=10, drop_query_vec=True), "R"),
    "pre_ladr": (dict(k=8, num_results=10), "R"),
    "ladr_proactive": (dict(k=8, num_results=10), "R"),
    "ada_ladr": (dict(k=8, num_results=10), "R"),
    "ladr_adaptive": (dict(k=8, num_results=10), "R"),
    "scorer": ({}, "R"),
    "np_scorer": ({}, "R"),
    "torch_scorer": ({}, "R"),
    "vec_loader": ({}, "R"),
    "np_vec_loader": ({}, "R"),
    "mmr": ({}, "R"),
}
#: Served methods that refuse to hand out a transformer (their structures cannot be checked).
REFUSED = ("scann_retriever", "voyager_retriever", "flatnav_retriever", "kannolo_hnsw_retriever")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return build_clustered_index(tmp_path_factory.mktemp("searches") / "index", num_docs=400, dim=DIM,
                                 num_centres=8)[0]


def queries(index, fingerprint) -> pd.DataFrame:
    """Three queries whose vectors are tagged as made by the model of ``fingerprint`` from their text."""
    texts = ["alpha", "beta", "gamma"]
    near = index.vectors(["0", "150", "300"]) + np.random.default_rng(1).normal(0, 0.1, (3, DIM)).astype(np.float32)
    frame = pd.DataFrame({"qid": ["q1", "q2", "q3"], "query": texts, "query_vec": list(near)})
    return provenance.tagged(frame, "query_vec", fingerprint, [f"query-0:{provenance.text_digest(t)}" for t in texts])


def frame_for(index, kind: str, fingerprint) -> pd.DataFrame:
    """The queries (``Q``), or each query's top 20 by exact search with its vector (``R``)."""
    frame = queries(index, fingerprint)
    if kind == "Q":
        return frame
    own = queries(index, index.fingerprint)
    ranked = index.retriever(num_results=20)(own)
    return ranked.merge(frame[["qid", "query_vec", "query_vec_model"]], on="qid")


def served_names():
    return {n for n in dir(E2RankIndex) if getattr(getattr(E2RankIndex, n, None), "served", False)}


@pytest.mark.parametrize("method", sorted(SERVED))
def test_each_transformer_of_the_index_refuses_another_models_query_vectors(index, method):
    options, kind = SERVED[method]
    transformer = getattr(index, method)(**options)
    with pytest.raises(IndexModelMismatch, match=r"made by model 'another-model'.*of model 'synthetic-clustered'"):
        transformer(frame_for(index, kind, OTHER))
    own = transformer(frame_for(index, kind, index.fingerprint))
    assert len(own) > 0 and own["qid"].nunique() == 3
    for column in ("query_vec", "doc_vec"):  # no tag without its vector (drop_query_vec, mmr's drop_doc_vec)
        assert column in own.columns or f"{column}_model" not in own.columns


def test_the_index_as_a_transformer_refuses_another_models_query_vectors(index):
    for kind in ("Q", "R"):
        with pytest.raises(IndexModelMismatch, match="another-model"):
            index(frame_for(index, kind, OTHER))
        assert len(index(frame_for(index, kind, index.fingerprint))) > 0


@pytest.mark.parametrize("method", REFUSED)
def test_searches_over_unchecked_structures_are_refused_naming_what_to_use(index, method):
    with pytest.raises(NotImplementedError, match="faiss_hnsw_retriever.*plain pyterrier_dr.FlexIndex"):
        getattr(index, method)()


def test_every_public_method_is_served_or_listed_as_handing_out_no_transformer():
    """A method a later pyterrier-dr adds to FlexIndex is served (wrapped) unless listed in
    ``NOT_TRANSFORMERS``; either way this test fails until it is added to ``SERVED`` here (and so tested
    above) or to ``NOT_TRANSFORMERS``."""
    public = {n for n in dir(E2RankIndex) if not n.startswith("_")
              and inspect.isfunction(inspect.getattr_static(E2RankIndex, n))}
    assert served_names() == set(SERVED) | set(REFUSED)
    assert served_names().isdisjoint(NOT_TRANSFORMERS)
    assert public - served_names() == NOT_TRANSFORMERS
    for name in public - NOT_TRANSFORMERS:  # each served method is the wrapped original, signature kept
        assert inspect.signature(getattr(E2RankIndex, name)) == inspect.signature(
            inspect.unwrap(getattr(E2RankIndex, name)))


def test_a_search_a_later_pyterrier_dr_adds_is_served(index):
    later = serve_methods(type("LaterIndex", (E2RankIndex,), {
        "new_retriever": lambda self, **options: FlexIndex.np_retriever(self, **options)}))
    with pytest.raises(IndexModelMismatch, match="another-model"):
        later(index.index_path).new_retriever(num_results=5)(queries(index, OTHER))
    assert len(later(index.index_path).new_retriever(num_results=5)(queries(index, index.fingerprint))) == 15


def test_ladr_scores_only_with_a_scorer_of_this_index(index, tmp_path):
    other, _ = build_clustered_index(tmp_path / "other", num_docs=400, dim=DIM, num_centres=8, seed=3)
    candidates = frame_for(index, "R", index.fingerprint)
    for method in ("ladr", "ada_ladr"):
        with pytest.raises(ValueError, match=rf"{method}\(\) was given .*not a transformer of this index"):
            getattr(index, method)(8, dense_scorer=other.scorer())
        assert len(getattr(index, method)(8, dense_scorer=index.torch_scorer(), num_results=5)(candidates)) == 15


def test_the_corpus_iterator_tags_the_index_vectors(index):
    records = list(index.get_corpus_iter(stop_idx=3, verbose=False))
    assert [r["docno"] for r in records] == ["0", "1", "2"]
    expected = provenance.make_tag(index.fingerprint, provenance.STORED)
    assert [provenance.record_tag(r, "doc_vec") for r in records] == [expected] * 3
