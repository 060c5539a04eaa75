"""Question e) of the study: wall-clock rows of each system given (timings are not asserted), and the generative
sliding-window baseline's windows and permutations."""
import pytest
from fixtures.docs import TOPIC_DOCS, TOPIC_QUERIES

from pyterrier_e2rank.study.generative import GenerativeSlidingWindow
from pyterrier_e2rank.study.timing import wall_clock


@pytest.fixture(scope="module")
def ranked(tiny_qwen, tmp_path_factory):
    """An index of the topic documents and each query's top 10 by the tiny Qwen3, with their text."""
    index = tiny_qwen.indexer(tmp_path_factory.mktemp("study-e") / "dense").index(TOPIC_DOCS.to_dict("records"))
    run = tiny_qwen.retriever(index, num_results=10)(TOPIC_QUERIES)[["qid", "docno", "score", "rank"]]
    return index, run.merge(TOPIC_DOCS, on="docno")


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory, make_tiny_qwen3):
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-lm"), num_layers=1, causal_lm=True)


def test_systems_given_are_timed_and_the_others_skipped(tiny_qwen, ranked):
    index, candidates = ranked
    out = wall_clock(tiny_qwen, TOPIC_QUERIES, candidates, index=index)
    assert list(out.columns) == ["system", "seconds_per_query", "queries", "device"]
    assert out["system"].tolist() == ["e2rank-stored-vectors", "e2rank-re-encoding"]
    assert (out["queries"] == 3).all() and (out["seconds_per_query"] > 0).all()
    assert (out["device"] == str(tiny_qwen.device)).all()


def test_cross_encoder_and_generative_rows(tiny_qwen, ranked, minilm_dir, causal_lm):
    index, candidates = ranked
    out = wall_clock(tiny_qwen, TOPIC_QUERIES.head(2), candidates[candidates["qid"] != "3"].drop(columns="score"),
                     index=index, cross_encoder=minilm_dir, generative=causal_lm, device=str(tiny_qwen.device))
    assert out["system"].tolist() == ["e2rank-stored-vectors", "e2rank-re-encoding", "cross-encoder",
                                      "generative-sliding-window"]
    assert (out["queries"] == 2).all() and (out["seconds_per_query"] > 0).all()


def test_refusals(tiny_qwen, ranked):
    index, candidates = ranked
    other = "cpu" if tiny_qwen.device.type == "cuda" else "cuda"
    with pytest.raises(ValueError, match=f"device='{other}'.*the model is on '{tiny_qwen.device}'"):
        wall_clock(tiny_qwen, TOPIC_QUERIES, candidates, index=index, device=other)
    with pytest.raises(KeyError, match="text"):
        wall_clock(tiny_qwen, TOPIC_QUERIES, candidates.drop(columns="text"), index=index)
    empty = wall_clock(tiny_qwen, TOPIC_QUERIES, candidates.head(0), index=index)
    assert len(empty) == 0 and list(empty.columns) == ["system", "seconds_per_query", "queries", "device"]


def test_generative_baseline_slides_back_to_front(causal_lm):
    baseline = GenerativeSlidingWindow(causal_lm, tokens_per_passage=2, device="cpu")
    order = baseline.rerank("gene therapy", [f"passage {i}" for i in range(30)])
    assert sorted(order) == list(range(30))
    assert baseline.generated_tokens == 2 * 20 * 2  # windows [10, 30) then [0, 20), forced length
