"""Bad input gets a clear error; empty input gets an empty frame with the right columns."""
import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank import E2Rank, E2RankIndex


def results(**overrides):
    frame = pd.DataFrame({"qid": ["1", "1"], "query": ["gene therapy", "gene therapy"], "docno": ["a", "b"],
                          "text": ["gene therapy works", "a mouse study"], "score": [2.0, 1.0], "rank": [0, 1]})
    return frame.assign(**overrides)


def test_missing_columns_are_named(tiny_qwen):
    with pytest.raises(KeyError, match="text"):
        tiny_qwen.reranker()(results().drop(columns=["text"]))
    with pytest.raises(KeyError, match="query"):
        tiny_qwen.query_encoder()(pd.DataFrame({"qid": ["1"]}))
    with pytest.raises(KeyError, match="docno"):
        tiny_qwen.doc_encoder()(pd.DataFrame({"text": ["x"]}))
    with pytest.raises(KeyError, match=r"missing_columns=\['rank'\].*missing_columns=\['score'\]"):
        tiny_qwen.reranker()(results().drop(columns=["rank", "score"]))


def test_empty_frames_give_empty_results(tiny_qwen, tmp_path):
    out = tiny_qwen.reranker()(results().iloc[:0])
    assert len(out) == 0 and {"qid", "docno", "score", "rank"} <= set(out.columns)
    assert "query_vec" in tiny_qwen.query_encoder()(pd.DataFrame(columns=["qid", "query"]))
    assert "doc_vec" in tiny_qwen.doc_encoder()(pd.DataFrame(columns=["docno", "text"]))
    index = tiny_qwen.indexer(tmp_path / "i").index([{"docno": "a", "text": "gene"}, {"docno": "b", "text": "cell"}])
    out = index.retriever()(pd.DataFrame(columns=["qid", "query", "query_vec"]))
    assert len(out) == 0 and {"qid", "docno", "score", "rank"} <= set(out.columns)


@pytest.mark.parametrize("bad", [None, np.nan, "", "   "])
def test_missing_text_is_refused(tiny_qwen, bad):
    with pytest.raises(ValueError, match="'b'|\\['b'\\]"):
        tiny_qwen.reranker()(results(text=["gene therapy works", bad]))
    with pytest.raises(ValueError, match="text"):
        tiny_qwen.doc_encoder()(pd.DataFrame({"docno": ["x"], "text": [bad]}))


def test_empty_query_is_refused_by_the_reranker_and_skipped_by_the_query_encoder(tiny_qwen):
    with pytest.raises(ValueError, match="empty"):
        tiny_qwen.reranker()(results(query=["", ""]))
    with pytest.warns(UserWarning, match="empty query"):  # a first stage, as PyTerrier's retrievers
        assert len(tiny_qwen.query_encoder()(pd.DataFrame({"qid": ["1"], "query": [""]}))) == 0


def test_non_ascii_text_is_embedded(tiny_qwen):
    out = tiny_qwen.reranker()(results(text=["Ünïcödé 蛋白质 🧬", "émigré café"], query=["蛋白质?", "蛋白质?"]))
    assert np.isfinite(out["score"]).all()


def test_model_path_that_does_not_exist():
    with pytest.raises(FileNotFoundError, match="not found"):
        E2Rank("/no/such/model/dir")
    with pytest.raises(FileNotFoundError, match="not found"):
        E2Rank("./relative-missing")


def test_index_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="no E2Rank index"):
        E2RankIndex(tmp_path / "missing").meta



@pytest.mark.parametrize("make", [lambda m: m.indexer(123), lambda m: m.retriever(123),
                                  lambda m: m.reranker(index=123), lambda m: m.scorer(index=[1])])
def test_an_index_that_is_not_an_index_or_a_path_is_refused_naming_index(tiny_qwen, make):
    with pytest.raises(TypeError, match=r"index must be an E2RankIndex, a FlexIndex or the path of its directory, "
                                        r"got (123|\[1\])"):
        make(tiny_qwen)

def test_empty_and_duplicate_corpora_are_refused(tiny_qwen, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        tiny_qwen.indexer(tmp_path / "e").index([])
    with pytest.raises(ValueError, match="duplicate"):
        tiny_qwen.indexer(tmp_path / "d").index([{"docno": "a", "text": "x"}, {"docno": "a", "text": "y"}])
    with pytest.raises(ValueError, match="at least two documents"):
        tiny_qwen.indexer(tmp_path / "one").index([{"docno": "a", "text": "x"}])


def test_prompt_budget_too_small_for_the_query(tiny_qwen):
    reranker = tiny_qwen.reranker(prompt_max_tokens=10)
    with pytest.raises(ValueError, match="budget"):
        reranker(results())
