"""The transformers compose as PyTerrier and pyterrier-dr users expect: the pseudo-query as a
transformer, our index as a FlexIndex, caches that cannot lie, equality for shared prefixes, prompt
settings carried by a trained checkpoint."""
import json

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
from ir_measures import nDCG

from pyterrier_e2rank import E2Rank
from fixtures.docs import TOPIC_DOCS, TOPIC_QUERIES

DOCS, QUERIES = TOPIC_DOCS, TOPIC_QUERIES


@pytest.fixture(scope="module")
def index(tiny_qwen, tmp_path_factory):
    return tiny_qwen.indexer(tmp_path_factory.mktemp("composition") / "dense").index(DOCS.to_dict("records"))


@pytest.fixture(scope="module")
def candidates(tiny_qwen, index):
    """A first stage's top 15 per query (dense here), with text and a docid that is NOT our row."""
    frame = tiny_qwen.retriever(index, num_results=15)(QUERIES).merge(DOCS, on="docno")
    return frame.assign(docid=np.arange(len(frame))[::-1]).sort_values(["qid", "rank"]).reset_index(drop=True)


# ---- 1. the pseudo-query as a transformer ----------------------------------------------------------

def test_prompt_encoder_turns_a_ranked_list_into_a_query_vector(tiny_qwen, candidates):
    encoder = tiny_qwen.prompt_encoder(num_input_docs=5)
    queries = encoder(candidates)
    assert list(queries.columns) == ["qid", "query", "query_vec", "query_vec_model"]
    assert queries["qid"].tolist() == ["1", "2", "3"]
    prompt = tiny_qwen.listwise_prompt(num_input_docs=5)
    for qid, vector in zip(queries["qid"], queries["query_vec"]):
        top = candidates[candidates["qid"] == qid].sort_values("rank")
        rendered = prompt.render(tiny_qwen.tokenizer, top["query"].iat[0], top["text"].tolist())
        np.testing.assert_allclose(vector, tiny_qwen.encode_prompts([rendered])[0], atol=1e-6)


def test_reranker_is_prompt_encoder_then_vector_loader_then_scorer(tiny_qwen, index, candidates):
    from pyterrier_e2rank.rerank.vectors import DotProduct
    reranker = tiny_qwen.reranker(num_input_docs=5, index=index)
    pseudo = tiny_qwen.prompt_encoder(num_input_docs=5)(candidates)
    by_hand = DotProduct()(index.vec_loader()(candidates).merge(pseudo[["qid", "query_vec"]], on="qid"))
    out = reranker(candidates)
    merged = out.merge(by_hand[["qid", "docno", "score"]], on=["qid", "docno"], suffixes=("", "_composed"))
    np.testing.assert_allclose(merged["score"], merged["score_composed"], atol=1e-6)
    assert reranker.stats.texts == len(QUERIES) and "docid" in out.columns  # one prompt per query, no document


def test_prf_re_retrieval_searches_the_whole_index(tiny_qwen, index, candidates):
    first_stage = candidates[candidates["rank"] < 5]
    pipeline = tiny_qwen.prompt_encoder(num_input_docs=5) >> index.retriever(num_results=20)
    out = pipeline(first_stage)
    assert out.groupby("qid").size().eq(20).all()
    assert not set(out["docno"]) <= set(first_stage["docno"])  # beyond the first stage's documents
    pseudo = tiny_qwen.prompt_encoder(num_input_docs=5)(first_stage)
    all_scores = index.np_vecs() @ pseudo["query_vec"].iat[0]
    np.testing.assert_allclose(out[out["qid"] == "1"]["score"], np.sort(all_scores)[::-1][:20], atol=1e-5)


# ---- 2. pyterrier-dr's index as ours ---------------------------------------------------------------

def test_indexer_takes_doc_vectors_from_the_doc_encoder_without_encoding_again(tiny_qwen, index, tmp_path):
    pipeline = tiny_qwen.doc_encoder() >> tiny_qwen.indexer(tmp_path / "from-vectors")
    assert pt.inspect.indexer_inputs(tiny_qwen.indexer(tmp_path / "x")) == [["docno", "text"], ["docno", "doc_vec"]]
    with tiny_qwen.counting() as work:
        built = pipeline.index(DOCS.to_dict("records"))
    assert work.texts == len(DOCS)  # encoded once, by the doc encoder
    np.testing.assert_allclose(built.np_vecs(), index.np_vecs(), atol=1e-6)


def test_vec_loader_looks_up_by_docno_never_by_docid(index, candidates):
    loaded = index.vec_loader()(candidates)
    np.testing.assert_array_equal(np.stack(loaded["doc_vec"]), index.vectors(candidates["docno"].tolist()))


def test_flex_index_retrievers_serve_our_index(tiny_qwen, index):
    exact = tiny_qwen.retriever(index, num_results=10)(QUERIES)
    hnsw = (tiny_qwen.query_encoder() >> index.faiss_hnsw_retriever(num_results=10))(QUERIES)
    assert exact["docno"].tolist() == hnsw["docno"].tolist()  # 40 documents: HNSW is exact here
    bm25_like = exact.drop(columns=["score"]).assign(score=-exact["rank"].astype(float))
    gar = (tiny_qwen.query_encoder() >> index.gar(8, num_results=10))(bm25_like)
    assert gar.groupby("qid").size().eq(10).all()


def test_query_encoder_takes_result_frames_encoding_each_query_once(tiny_qwen, candidates):
    with tiny_qwen.counting() as work:
        out = tiny_qwen.query_encoder()(candidates)
    assert work.texts == len(QUERIES) and len(out) == len(candidates)
    expected = tiny_qwen.encode_queries(QUERIES["query"].tolist())
    for qid, expected_vector in zip(QUERIES["qid"], expected):
        for vector in out[out["qid"] == qid]["query_vec"]:
            np.testing.assert_allclose(vector, expected_vector, atol=1e-6)


def test_an_index_in_the_old_layout_says_how_to_move_on(tiny_qwen, tmp_path):
    from pyterrier_e2rank.io import CorruptArtifact
    old = tmp_path / "old"
    old.mkdir()
    (old / "pt_meta.json").write_text(json.dumps({"type": "dense_index", "format": "e2rank", "num_docs": 2}))
    (old / "vectors.f32").write_bytes(b"")
    (old / "docnos.npy").write_bytes(b"")
    with pytest.raises(CorruptArtifact, match="0.1's own layout.*mode='overwrite'"):
        tiny_qwen.reranker(index=old)
    rebuilt = tiny_qwen.indexer(old, mode="overwrite").index(DOCS.head(3).to_dict("records"))
    assert len(rebuilt) == 3 and sorted(p.name for p in old.iterdir()) == ["docnos.npids", "pt_meta.json",
                                                                           "text.offsets", "text.utf8", "vecs.f4"]


# ---- 3. caches that cannot lie ---------------------------------------------------------------------

def test_a_per_document_score_cache_cannot_serve_the_listwise_reranker(tiny_qwen, index, candidates, tmp_path):
    from pyterrier_caching import ScorerCache
    cached = ScorerCache(tmp_path / "scores", tiny_qwen.reranker(num_input_docs=5, index=index))
    with pytest.raises(ValueError, match="listwise and cannot be served by Sqlite3ScorerCache"):
        cached(candidates[candidates["rank"] < 8])  # would store scores valid for this list only


def test_cached_prompt_vectors_give_the_uncached_results_on_two_first_stages(tiny_qwen, index, candidates, tmp_path):
    """The documented route: the prompt vectors are cached by the rendered prompt, so a different
    candidate list is a different entry, and a repeated one skips the model."""
    bm25_like = candidates.assign(score=-candidates["docno"].str[1:].astype(float))
    bm25_like = pt.model.add_ranks(bm25_like.drop(columns=["rank"]))
    plain = tiny_qwen.reranker(num_input_docs=5, index=index)
    cached = tiny_qwen.reranker(num_input_docs=5, index=index, cache=tmp_path / "cache")
    for first_stage in (candidates, bm25_like, candidates, bm25_like):
        pd.testing.assert_frame_equal(cached(first_stage), plain(first_stage))
    assert cached.stats.texts == 2 * len(QUERIES)  # each list's prompts encoded once, then served
    other = E2Rank(str(tiny_qwen.checkpoint_path), batch_size=4, query_task="another instruction")
    assert other.reranker(num_input_docs=5, index=index, cache=tmp_path / "cache") != cached


# ---- 4. native details -----------------------------------------------------------------------------

def test_equal_settings_make_equal_transformers(tiny_qwen_dir, tiny_qwen, index):
    twin = E2Rank(str(tiny_qwen_dir), batch_size=4)
    for make in (lambda m: m.query_encoder(), lambda m: m.doc_encoder(), lambda m: m.reranker(index=index),
                 lambda m: m.prompt_encoder(num_input_docs=5), lambda m: m.scorer(index=index),
                 lambda m: m.retriever(index, num_results=10)):
        assert make(tiny_qwen) == make(twin) and hash(make(tiny_qwen)) == hash(make(twin))
    assert tiny_qwen.reranker(index=index) != tiny_qwen.reranker(index=index, num_input_docs=5)
    assert tiny_qwen.reranker() != tiny_qwen.reranker(index=index)


def test_experiment_tree_plan_shares_the_first_stage(tiny_qwen, index):
    first_stage = tiny_qwen.retriever(index, num_results=15)
    text = pt.apply.text(lambda row: DOCS.set_index("docno").loc[row["docno"], "text"])
    systems = [first_stage >> text >> tiny_qwen.reranker(index=index, num_input_docs=5),
               first_stage >> text >> tiny_qwen.scorer(index=index)]
    qrels = pd.DataFrame({"qid": ["1", "2", "3"], "docno": ["d1", "d2", "d3"], "label": [1, 1, 1]})
    with tiny_qwen.counting() as work:
        table = pt.Experiment(systems, QUERIES, qrels, [nDCG @ 10], names=["prf", "cosine"], plan="tree")
    assert len(table) == 2
    # queries: encoded once for the shared retriever, once by the scorer; prompts: once per query
    assert work.texts == 3 * len(QUERIES)


def test_pyserini_encoders_are_built_from_a_name(tiny_qwen_dir, tiny_qwen):
    from pyterrier_e2rank.pyserini import E2RankPyseriniDocumentEncoder, E2RankPyseriniQueryEncoder
    encoder = E2RankPyseriniQueryEncoder(str(tiny_qwen_dir), batch_size=4)
    np.testing.assert_allclose(encoder.encode("gene therapy"), tiny_qwen.encode_queries(["gene therapy"])[0], atol=1e-6)
    assert E2RankPyseriniDocumentEncoder(str(tiny_qwen_dir)).encode(["a gene"]).shape == (1, tiny_qwen.dim)
    with pytest.raises(TypeError, match="model options"):
        E2RankPyseriniQueryEncoder(tiny_qwen, batch_size=2)


@pytest.mark.parametrize("old, new", [("core.model", "model.e2rank"), ("core.index", "index.artifact"),
                                      ("core.indexing", "index.indexer"), ("app.cli", "cli.main")])
def test_the_moved_modules_warn_and_give_the_module_they_moved_to(old, new):
    """0.4.0 moved ``core/`` and ``app/``: the old paths import the same module object for one release, warning
    where the user's import is."""
    import importlib
    moved = importlib.import_module(f"pyterrier_e2rank.{new}")
    namespace = {}
    with pytest.warns(DeprecationWarning, match=f"pyterrier_e2rank.{old} is deprecated .*: use pyterrier_e2rank.{new}$") \
            as caught:
        exec(compile(f"import pyterrier_e2rank.{old} as old", "user_code.py", "exec"), namespace)
    assert namespace["old"] is moved and moved.__spec__.name == f"pyterrier_e2rank.{new}"
    assert caught[0].filename == "user_code.py"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("pyterrier_e2rank.core.no_such_module")


# ---- 5. prompt settings are data of the model -----------------------------------------------------

def test_a_trained_checkpoint_brings_its_prompt_settings(tiny_qwen_dir, fine_tuned_qwen_dir):
    trained = E2Rank(str(fine_tuned_qwen_dir))
    prompt = trained.reranker().prompt
    assert (prompt.num_input_docs, prompt.prompt_doc_max_tokens) == (3, 8)
    assert trained.reranker(num_input_docs=7).prompt.num_input_docs == 7  # explicit arguments win
    assert E2Rank(str(tiny_qwen_dir)).reranker().prompt.num_input_docs == 20  # the paper's, untrained
