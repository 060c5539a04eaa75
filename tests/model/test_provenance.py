"""Vectors know the model (and text) they were made from, and are checked wherever they are used
(issue "No silent wrong result", class 1); empty queries get no rows and a warning in every first stage
(issue "Every failure named in one line", item 3)."""
import re
import warnings

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch
from ir_measures import nDCG

from pyterrier_e2rank import E2Rank, IndexModelMismatch
from pyterrier_e2rank.bm25 import pisa_bm25
from pyterrier_e2rank.rerank.vectors import DotProduct
from fixtures.docs import TOPIC_DOCS, TOPIC_QUERIES

DOCS, QUERIES = TOPIC_DOCS, TOPIC_QUERIES


@pytest.fixture(scope="module")
def index(tiny_qwen, tmp_path_factory):
    return tiny_qwen.indexer(tmp_path_factory.mktemp("provenance") / "dense").index(DOCS.to_dict("records"))


@pytest.fixture(scope="module")
def tuned(tiny_qwen_dir, tiny_qwen, tmp_path_factory):
    """A fine-tuned copy of the index's model: one weight moved by one float32 ulp."""
    from transformers import AutoModel
    backbone = AutoModel.from_pretrained(tiny_qwen_dir)
    with torch.no_grad():
        weight = backbone.layers[1].mlp.down_proj.weight
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(1.0))
    directory = tmp_path_factory.mktemp("tuned") / "tuned"
    backbone.save_pretrained(directory)
    tiny_qwen.tokenizer.save_pretrained(directory)
    return E2Rank(str(directory), batch_size=4)


@pytest.fixture(scope="module")
def candidates(tiny_qwen, index):
    return tiny_qwen.retriever(index, num_results=10)(QUERIES).merge(DOCS, on="docno")


def naming_both(tuned, tiny_qwen) -> str:
    return f"{re.escape(repr(tuned.model_name_or_path))}.*{re.escape(repr(tiny_qwen.model_name_or_path))}"


# ---- the pseudo-query reaches the search ---------------------------------------------------------

def test_prompt_encoder_then_model_retriever_is_prf_re_retrieval(tiny_qwen, index, candidates):
    composed = (tiny_qwen.prompt_encoder(num_input_docs=5) >> tiny_qwen.retriever(index, num_results=10))(candidates)
    direct = (tiny_qwen.prompt_encoder(num_input_docs=5) >> index.retriever(num_results=10))(candidates)
    plain = tiny_qwen.retriever(index, num_results=10)(QUERIES)
    pd.testing.assert_frame_equal(composed, direct)
    assert not np.allclose(composed["score"].to_numpy(), plain["score"].to_numpy())


def test_a_query_rewritten_after_encoding_is_not_searched_with_its_old_vector(tiny_qwen, index, candidates):
    rewrite = pt.apply.query(lambda row: row["query"] + " cells")
    with pytest.raises(ValueError, match="'query_vec'.*another text"):
        (tiny_qwen.query_encoder() >> rewrite >> tiny_qwen.retriever(index))(QUERIES)
    with pytest.raises(ValueError, match=r"query_vec of qid \['1', '2', '3'\].*another 'query'"):
        (tiny_qwen.query_encoder() >> rewrite >> index.retriever())(QUERIES)
    with pytest.raises(ValueError, match="doc_vec of docno.*another 'text'"):
        tiny_qwen.scorer()(tiny_qwen.doc_encoder()(candidates).assign(text=candidates["text"] + " cells"))
    untagged = tiny_qwen.query_encoder()(QUERIES).drop(columns=["query_vec_model"])
    with pytest.raises(ValueError, match="'query_vec'.*unknown origin"):
        tiny_qwen.retriever(index)(untagged)
    with pytest.raises(ValueError, match="'doc_vec'.*unknown origin"):
        tiny_qwen.doc_encoder()(DOCS.head(3).assign(doc_vec=[np.zeros(tiny_qwen.dim)] * 3))


def test_a_query_vector_of_another_instruction_is_not_passed_on(tiny_qwen_dir, tiny_qwen, index):
    other = E2Rank(str(tiny_qwen_dir), batch_size=4, query_task="Find a passage on the topic")
    with pytest.raises(ValueError, match="'query_vec'.*other settings"):
        (other.query_encoder() >> tiny_qwen.retriever(index))(QUERIES)
    again = (tiny_qwen.query_encoder() >> tiny_qwen.retriever(index, num_results=5))(QUERIES)
    pd.testing.assert_frame_equal(again, tiny_qwen.retriever(index, num_results=5)(QUERIES))


# ---- another model's vectors never meet this model's -----------------------------------------------

def test_fine_tuned_copys_query_vectors_are_refused_on_the_base_index(tiny_qwen, tuned, index, candidates):
    both = naming_both(tuned, tiny_qwen)
    with pytest.raises(IndexModelMismatch, match=both):
        (tuned.prompt_encoder(num_input_docs=5) >> index.retriever())(candidates)
    with pytest.raises(IndexModelMismatch, match=both):
        (tuned.query_encoder() >> index.retriever())(QUERIES)
    with pytest.raises(IndexModelMismatch, match=both):
        (tuned.query_encoder() >> index.faiss_flat_fp16_retriever(num_results=5))(QUERIES)
    with pytest.raises(IndexModelMismatch, match=both):  # pyterrier-dr's searches too (tests/index/test_index_searches.py)
        (tuned.query_encoder() >> index.faiss_hnsw_retriever(num_results=5))(QUERIES)
    with pytest.raises(IndexModelMismatch, match=both):
        (tuned.prompt_encoder(num_input_docs=5) >> tiny_qwen.retriever(index))(candidates)
    own = (tiny_qwen.query_encoder() >> index.faiss_flat_fp16_retriever(num_results=5))(QUERIES)
    assert own.groupby("qid").size().eq(5).all()


def test_cached_pseudo_queries_carry_their_model(tiny_qwen, tuned, index, candidates, tmp_path):
    for _ in range(2):  # a miss, then a hit served by the cache
        pseudo = tuned.prompt_encoder(num_input_docs=5, cache=tmp_path / "cache")(candidates)
        assert pseudo["query_vec_model"].str.startswith(repr(tuned.model_name_or_path)[1:-1]).all()
        with pytest.raises(IndexModelMismatch, match=naming_both(tuned, tiny_qwen)):
            index.retriever()(pseudo)


def test_another_models_doc_vectors_are_not_indexed_under_this_model(tiny_qwen, tuned, index, tmp_path):
    both = naming_both(tuned, tiny_qwen)
    with pytest.raises(IndexModelMismatch, match=both):
        (tuned.doc_encoder() >> tiny_qwen.indexer(tmp_path / "piped")).index(DOCS.to_dict("records"))
    with pytest.raises(IndexModelMismatch, match=both):
        tiny_qwen.indexer(tmp_path / "frame").index(tuned.doc_encoder()(DOCS))
    with pytest.raises(IndexModelMismatch, match=naming_both(tiny_qwen, tuned)):  # the index's vectors, tagged
        tuned.indexer(tmp_path / "copied").index(index.get_corpus_iter(verbose=False))
    assert not any((tmp_path / name).exists() for name in ("piped", "frame", "copied"))
    own = (tiny_qwen.doc_encoder() >> tiny_qwen.indexer(tmp_path / "own")).index(DOCS.to_dict("records"))
    untagged = tiny_qwen.doc_encoder()(DOCS).drop(columns=["doc_vec_model"])  # the user's own vectors
    users = tiny_qwen.indexer(tmp_path / "users").index(untagged)
    np.testing.assert_array_equal(users.np_vecs(), own.np_vecs())


def test_query_and_doc_vectors_of_two_models_are_never_scored(tiny_qwen, tuned, index, candidates):
    both = f"two models.*({naming_both(tuned, tiny_qwen)}|{naming_both(tiny_qwen, tuned)})"
    with pytest.raises(IndexModelMismatch, match=both):
        DotProduct()(tuned.query_encoder()(index.vec_loader()(candidates)))
    with pytest.raises(IndexModelMismatch, match=naming_both(tuned, tiny_qwen)):  # the loader refuses them first
        DotProduct()(index.vec_loader()(tuned.query_encoder()(candidates)))
    with pytest.raises(IndexModelMismatch, match=naming_both(tuned, tiny_qwen)):
        tiny_qwen.reranker(num_input_docs=5, index=index)(tuned.doc_encoder()(candidates))
    with pytest.raises(IndexModelMismatch, match=naming_both(tuned, tiny_qwen)):
        tiny_qwen.scorer(index=index)(tuned.query_encoder()(candidates))
    own = DotProduct()(index.vec_loader()(tiny_qwen.query_encoder()(candidates)))
    assert own["doc_vec_model"].str.endswith(" doc").all()


def test_the_vec_loader_tags_its_vectors_and_never_replaces_a_column(tiny_qwen, tuned, index, candidates):
    loaded = index.vec_loader()(candidates)
    assert loaded["doc_vec_model"].nunique() == 1
    pd.testing.assert_frame_equal(index.vec_loader()(loaded), loaded)  # its own vectors pass on
    with pytest.raises(IndexModelMismatch, match=naming_both(tuned, tiny_qwen)):
        index.vec_loader()(tuned.doc_encoder()(candidates))
    with pytest.raises(ValueError, match="'doc_vec'.*never replaced"):
        index.vec_loader()(loaded.drop(columns=["doc_vec_model"]))


def test_untagged_vectors_are_the_users_own_but_never_mixed_with_another_models(tiny_qwen, tuned, index):
    encoded = tiny_qwen.query_encoder()(QUERIES)
    users = encoded.drop(columns=["query_vec_model"])
    pd.testing.assert_frame_equal(index.retriever(num_results=5)(users), index.retriever(num_results=5)(encoded))
    foreign = tuned.query_encoder()(QUERIES).iloc[:1]
    with pytest.raises(IndexModelMismatch, match=naming_both(tuned, tiny_qwen)):
        index.retriever()(pd.concat([users.iloc[1:], foreign]))
    with pytest.raises(IndexModelMismatch, match="mixes vectors of two models"):
        index.retriever()(pd.concat([encoded.iloc[1:], foreign]))


# ---- empty queries in every first stage ---------------------------------------------------------------

class TinyCorpus:
    def get_corpus_iter(self, verbose=False):
        return DOCS.to_dict("records")


@pytest.fixture(scope="module")
def pisa(tmp_path_factory):
    return pisa_bm25(str(tmp_path_factory.mktemp("pisa") / "bm25"), TinyCorpus(), num_results=10)


TOPICS = pd.DataFrame({"qid": ["1", "2", "3", "4"], "query": ["gene therapy", "", "brain dose", "   "]})


@pytest.mark.parametrize("stage", ["dense", "query_encoder", "exact", "faiss", "pisa"])
def test_empty_queries_get_a_warning_and_no_rows(tiny_qwen, index, pisa, stage):
    first_stage = {"dense": lambda: tiny_qwen.retriever(index, num_results=10),
                   "query_encoder": lambda: tiny_qwen.query_encoder(),
                   "exact": lambda: tiny_qwen.query_encoder() >> index.retriever(num_results=10),
                   "faiss": lambda: tiny_qwen.query_encoder() >> index.faiss_flat_fp16_retriever(num_results=10),
                   "pisa": lambda: pisa}[stage]()
    with pytest.warns(UserWarning, match=r"2 empty queries \(qid \['2', '4'\]\)"):
        out = first_stage(TOPICS)
    assert set(out["qid"]) == {"1", "3"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first_stage(TOPICS.iloc[[0, 2]])  # no empty query, no warning


def test_one_empty_topic_does_not_end_an_experiment(tiny_qwen, index, pisa):
    qrels = pd.DataFrame({"qid": ["1", "2", "3", "4"], "docno": ["d1", "d2", "d3", "d4"], "label": [1, 1, 1, 1]})
    with pytest.warns(UserWarning, match="empty quer"):
        table = pt.Experiment([tiny_qwen.retriever(index, num_results=10), pisa], TOPICS, qrels, [nDCG @ 10],
                              names=["dense", "pisa"], perquery=True)
    assert set(table["name"]) == {"dense", "pisa"}
    assert (table[table["qid"].isin(["2", "4"])]["value"] == 0).all()  # judged, with no results
