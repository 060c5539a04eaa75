"""The reranker, prompt encoder and feedback influence given ``index=`` take a frame's missing text from the
index: ``model.retriever(index) >> model.reranker(index=index)`` on a user's own list of documents."""
import pandas as pd
import pandas.testing as pdt
import pytest

from pyterrier_e2rank import feedback_influence

MY_DOCS = [{"docno": f"note-{i}", "text": f"my note {i}: gene {i % 4} therapy, virus {i % 3}, dose {i}"}
           for i in range(25)]
TEXT = {d["docno"]: d["text"] for d in MY_DOCS}
QUERIES = pd.DataFrame({"qid": ["1", "2"], "query": ["gene therapy", "virus dose"]})


@pytest.fixture(scope="module")
def index(tiny_qwen, tmp_path_factory):
    return tiny_qwen.indexer(tmp_path_factory.mktemp("mine") / "dense").index(MY_DOCS)


@pytest.fixture(scope="module")
def candidates(tiny_qwen, index):
    return tiny_qwen.retriever(index, num_results=12)(QUERIES)


def with_text(frame):
    return frame.assign(text=frame["docno"].map(TEXT))


@pytest.mark.parametrize("settings", [{"num_input_docs": 5}, {"window": 4, "stride": 2}])
def test_retriever_then_reranker_needs_no_text_column(tiny_qwen, index, candidates, settings):
    pipeline = tiny_qwen.retriever(index, num_results=12) >> tiny_qwen.reranker(index=index, **settings)
    got = pipeline(QUERIES)
    expected = tiny_qwen.reranker(index=index, **settings)(with_text(candidates))
    assert "text" not in got.columns
    pdt.assert_frame_equal(got, expected.drop(columns=["text"]), check_exact=False, atol=1e-6)


def test_prompt_encoder_takes_the_text_from_the_index(tiny_qwen, index, candidates):
    got = tiny_qwen.prompt_encoder(index=index, num_input_docs=5)(candidates)
    expected = tiny_qwen.prompt_encoder(num_input_docs=5)(with_text(candidates))
    pdt.assert_frame_equal(got, expected, check_exact=False, atol=1e-6)


def test_a_text_column_given_is_used_not_replaced(tiny_qwen, index, candidates):
    other = candidates.assign(text="an unrelated text about climate and rain")
    got = tiny_qwen.prompt_encoder(index=index, num_input_docs=5)(other)
    expected = tiny_qwen.prompt_encoder(num_input_docs=5)(other)
    pdt.assert_frame_equal(got, expected, check_exact=False, atol=1e-6)


def test_feedback_influence_takes_the_text_from_the_index(tiny_qwen, index, candidates):
    got = feedback_influence(tiny_qwen, candidates, index, num_input_docs=3)
    pdt.assert_frame_equal(got, feedback_influence(tiny_qwen, with_text(candidates), index, num_input_docs=3))
