"""The dense index, retrieval, and reranking with stored vectors (one forward pass per query)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank import E2Rank, IndexModelMismatch

from fixtures.docs import make_docs

DOCS = pd.DataFrame({"docno": [f"d{i}" for i in range(40)], "text": make_docs(40, seed=3)})
QUERIES = pd.DataFrame({"qid": ["1", "2", "3"], "query": ["gene therapy for cancer", "virus immune response",
                                                          "brain blood dose"]})


@pytest.fixture(scope="module")
def index(tiny_qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "dense"
    return tiny_qwen.indexer(path).index(DOCS.to_dict("records"))


def test_index_stores_the_doc_encoder_vectors(tiny_qwen, index):
    assert len(index) == 40 and index.dim == tiny_qwen.dim
    expected = np.stack(tiny_qwen.doc_encoder()(DOCS)["doc_vec"])
    np.testing.assert_allclose(index.vectors(DOCS["docno"].tolist()[::-1]), expected[::-1], atol=1e-6)


def test_retriever_is_exact_search(tiny_qwen, index):
    res = tiny_qwen.retriever(index, num_results=5)(QUERIES)
    query_vecs = tiny_qwen.encode_queries(QUERIES["query"].tolist())
    doc_vecs = tiny_qwen.encode_docs(DOCS["text"].tolist())
    for qid, qvec in zip(QUERIES["qid"], query_vecs):
        got = res[res["qid"] == qid]
        best = np.argsort(-(doc_vecs @ qvec), kind="stable")[:5]
        assert got["docno"].tolist() == DOCS["docno"].iloc[best].tolist()
        assert got["rank"].tolist() == list(range(5))
        np.testing.assert_allclose(got["score"], (doc_vecs @ qvec)[best], atol=1e-5)


def test_small_blocks_give_the_same_top_k(tiny_qwen, index):
    from pyterrier_e2rank.index.retriever import E2RankRetriever
    query_vecs = tiny_qwen.encode_queries(QUERIES["query"].tolist())
    whole = E2RankRetriever(index, num_results=7).search(query_vecs)
    blocked = E2RankRetriever(index, num_results=7, block_size=6).search(query_vecs)
    np.testing.assert_array_equal(whole[1], blocked[1])


def test_rank_cutoff_fuses_into_the_retriever(tiny_qwen, index):
    """``% 3`` becomes a retriever asked for 3 results (no cutoff left after it), with the same top 3."""
    from pyterrier_e2rank.index.retriever import E2RankRetriever
    pipeline = tiny_qwen.retriever(index, num_results=20) % 3
    compiled = pipeline.compile()
    stages = compiled._transformers
    assert [type(t).__name__ for t in stages] == ["E2RankQueryEncoder", "E2RankRetriever"]
    assert isinstance(stages[-1], E2RankRetriever) and stages[-1].num_results == 3
    out = compiled(QUERIES)
    full = tiny_qwen.retriever(index, num_results=20)(QUERIES)
    assert out.groupby("qid").size().tolist() == [3, 3, 3]
    pd.testing.assert_frame_equal(out.reset_index(drop=True), full[full["rank"] < 3].reset_index(drop=True))


def test_reranking_with_index_equals_fresh_encoding_with_one_pass_per_query(tiny_qwen, index):
    candidates = (tiny_qwen.retriever(index, num_results=30))(QUERIES).merge(DOCS, on="docno")
    fresh = tiny_qwen.reranker(batch_size=1)
    stored = tiny_qwen.reranker(index=index, batch_size=1)
    a, b = fresh(candidates), stored(candidates)
    pd.testing.assert_frame_equal(a[["qid", "docno", "rank"]], b[["qid", "docno", "rank"]])
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-5)
    assert stored.stats.forward_passes == len(QUERIES) and stored.stats.texts == len(QUERIES)
    assert fresh.stats.texts > len(QUERIES)
    with_vec = tiny_qwen.doc_encoder()(candidates)
    np.testing.assert_allclose(tiny_qwen.reranker()(with_vec)["score"], a["score"], atol=1e-5)


def test_reranker_keeps_rows_and_unknown_columns(tiny_qwen, index):
    candidates = tiny_qwen.retriever(index, num_results=10)(QUERIES).merge(DOCS, on="docno")
    candidates["my_feature"] = np.arange(len(candidates))
    out = tiny_qwen.reranker(index=index)(candidates)
    assert len(out) == len(candidates) and "my_feature" in out.columns
    merged = out.merge(candidates[["qid", "docno", "my_feature"]], on=["qid", "docno"], suffixes=("", "_in"))
    assert (merged["my_feature"] == merged["my_feature_in"]).all()
    assert out.groupby("qid")["rank"].apply(list).map(lambda r: r == list(range(10))).all()


def test_sliding_window_reorders_back_to_front(tiny_qwen, index):
    candidates = tiny_qwen.retriever(index, num_results=30)(QUERIES).merge(DOCS, on="docno")
    reranker = tiny_qwen.reranker(index=index, window=20, stride=10)
    out = reranker(candidates)
    assert reranker.stats.texts == 2 * len(QUERIES)  # windows [10, 30) then [0, 20)
    assert sorted(out["docno"]) == sorted(candidates["docno"]) and out.groupby("qid").size().eq(30).all()
    # 45 candidates, window 20, stride 10: the windows, by hand, are positions [25, 45), [15, 35), [5, 25),
    # [0, 15), in this order; each reorders its documents by its own prompt's vector
    texts = make_docs(45, seed=7)
    frame = pd.DataFrame({"qid": "q", "query": "gene therapy", "docno": [f"w{i}" for i in range(45)],
                          "text": texts, "score": np.arange(45, 0, -1.0), "rank": np.arange(45)})
    vectors = tiny_qwen.encode_docs(texts)
    ranking = list(range(45))
    for start, end in [(25, 45), (15, 35), (5, 25), (0, 15)]:
        window = ranking[start:end]
        prompt = tiny_qwen.listwise_prompt(num_input_docs=20).render(tiny_qwen.tokenizer, "gene therapy",
                                                                      [texts[i] for i in window])
        pseudo_query = tiny_qwen.encode_prompts([prompt])[0]
        ranking[start:end] = [window[i] for i in np.argsort(-(vectors[window] @ pseudo_query), kind="stable")]
    windowed = tiny_qwen.reranker(window=20, stride=10)(frame)
    assert windowed["docno"].tolist() == [f"w{i}" for i in ranking]
    assert ranking != list(range(45))  # the windows moved documents
    single = tiny_qwen.reranker(index=index, window=30)(candidates)  # one window = one-pass order
    one_pass = tiny_qwen.reranker(index=index, num_input_docs=30)(candidates)
    assert single["docno"].tolist() == one_pass["docno"].tolist()


def test_index_of_another_model_is_refused(other_tiny_qwen_dir, index):
    other = E2Rank(str(other_tiny_qwen_dir))
    with pytest.raises(IndexModelMismatch, match="built with model"):
        other.reranker(index=index)
    with pytest.raises(IndexModelMismatch):
        other.retriever(index)


def test_docno_absent_from_index_is_named(tiny_qwen, index):
    frame = pd.DataFrame({"qid": "1", "query": "gene", "docno": ["d1", "nope"], "text": ["a b", "c d"],
                          "score": [2.0, 1.0]})
    with pytest.raises(KeyError, match="nope"):
        tiny_qwen.reranker(index=index)(frame)


def test_existing_index_is_not_overwritten_silently(tiny_qwen, index):
    with pytest.raises(FileExistsError):
        tiny_qwen.indexer(index.path).index(DOCS.to_dict("records"))


def test_index_is_a_flex_index_for_pyterrier_dr(tiny_qwen, index, tmp_path):
    """pyterrier-dr opens it in 0.3's format ("flex", its own) as its own FlexIndex (same vectors, same top 10),
    and every place that takes an index takes that FlexIndex too."""
    import shutil
    from pyterrier_dr import FlexIndex
    old = Path(shutil.copytree(index.path, tmp_path / "old.e2rank"))
    meta = json.loads((old / "pt_meta.json").read_text())
    (old / "pt_meta.json").write_text(json.dumps({**meta, "format": "flex"}))
    loaded = FlexIndex(str(old))
    assert type(loaded) is FlexIndex and len(loaded) == 40
    ours = tiny_qwen.retriever(index, num_results=10)(QUERIES)
    theirs = (tiny_qwen.query_encoder() >> loaded.np_retriever(num_results=10))(QUERIES)
    assert ours["docno"].tolist() == theirs["docno"].tolist()
    np.testing.assert_allclose(ours["score"], theirs["score"], atol=1e-5)
    candidates = ours.merge(DOCS, on="docno")
    pd.testing.assert_frame_equal(tiny_qwen.reranker(index=loaded)(candidates), tiny_qwen.reranker(index=index)(candidates))


def test_scorer_is_cosine_of_query_and_document(tiny_qwen, index):
    candidates = tiny_qwen.retriever(index, num_results=10)(QUERIES).merge(DOCS, on="docno")
    scored = tiny_qwen.scorer(index=index)(candidates.drop(columns=["score"]))
    merged = scored.merge(candidates[["qid", "docno", "score"]], on=["qid", "docno"], suffixes=("", "_dense"))
    np.testing.assert_allclose(merged["score"], merged["score_dense"], atol=1e-5)  # dense scores are cosines
    assert scored.groupby("qid")["rank"].min().eq(0).all()
    with_text = tiny_qwen.scorer()(candidates.drop(columns=["score"]))
    np.testing.assert_allclose(with_text.sort_values(["qid", "docno"])["score"],
                               scored.sort_values(["qid", "docno"])["score"], atol=1e-5)


def test_doc_vector_cache_encodes_each_text_once_across_calls(tiny_qwen_dir, tiny_qwen, index):
    """Without an index, a cached model encodes a candidate once however many calls see it; the scores
    are those of the uncached model, and a changed text is a new entry, never a stale vector."""
    cached = E2Rank(str(tiny_qwen_dir), batch_size=4, cache_doc_vectors=True)
    candidates = tiny_qwen.retriever(index, num_results=30)(QUERIES).merge(DOCS, on="docno")
    reranker = cached.reranker()
    first = reranker(candidates)
    texts_after_first = reranker.stats.texts
    second = reranker(candidates)
    assert reranker.stats.texts - texts_after_first == len(QUERIES)  # the prompts alone
    pd.testing.assert_frame_equal(first, second)
    plain = tiny_qwen.reranker()(candidates)
    np.testing.assert_allclose(first["score"], plain["score"], atol=1e-5)

    edited = candidates.assign(text=candidates["text"] + " edited")
    before = cached.stats.texts
    cached.reranker()(edited)
    assert cached.stats.texts - before == edited["docno"].nunique() + len(QUERIES)
    cached.clear_doc_cache()
    assert cached.doc_cache == {} and "cache_doc_vectors=True" in repr(cached)
