"""Question b) of the study: the prompt-size x depth grid on SciFact cut small with MiniLM (whose figures are not
all zero, as a random model's are), against the plain reranker run directly and evaluated by ir-measures."""
import json

import ir_measures
import pandas as pd
import pytest

from pyterrier_e2rank.study.sensitivity import prompt_depth_grid


@pytest.fixture(scope="module")
def scifact_run(small_scifact, minilm, tmp_path_factory):
    """The small SciFact's index, topics, qrels (PyTerrier's columns) and every document ranked by MiniLM for
    each query, with its text."""
    docs = pd.DataFrame([json.loads(line) for line in open(small_scifact / "corpus.jsonl")])
    docs = docs.assign(docno=docs["_id"], text=docs["title"] + " " + docs["text"])[["docno", "text"]]
    topics = pd.DataFrame([json.loads(line) for line in open(small_scifact / "queries.jsonl")])
    topics = topics.rename(columns={"_id": "qid", "text": "query"})
    qrels = pd.read_csv(small_scifact / "qrels" / "test.tsv", sep="\t", dtype=str)
    qrels = qrels.set_axis(["qid", "docno", "label"], axis=1).astype({"label": int})
    index = minilm.indexer(tmp_path_factory.mktemp("study-b") / "dense").index(docs.to_dict("records"))
    candidates = minilm.retriever(index, num_results=len(docs))(topics)[["qid", "docno", "score", "rank"]]
    return index, topics, qrels, candidates.merge(docs, on="docno")


def _ndcg10(run, qrels):
    return ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels.rename(
        columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"}), run.rename(
        columns={"qid": "query_id", "docno": "doc_id"}))[ir_measures.nDCG @ 10]


def test_grid_cells_equal_the_reranker_run_directly(minilm, scifact_run):
    index, topics, qrels, candidates = scifact_run
    available = candidates.groupby("qid").size().max()
    grid = prompt_depth_grid(minilm, topics, candidates[["qid", "docno", "score", "rank", "text"]], qrels,
                             index=index, prompt_docs=(0, 20), depths=(10, 30, available + 50))
    assert list(grid.columns) == ["k", "depth", "nDCG@10", "seconds_per_query", "candidates_per_query"]
    assert len(grid) == 6 and (grid["seconds_per_query"] > 0).all()
    cell = grid.set_index(["k", "depth"])
    for depth in (10, 30):
        top = candidates[candidates["rank"] < depth].merge(topics, on="qid")
        direct = minilm.reranker(num_input_docs=20, index=index)(top)
        assert cell.loc[(20, depth), "nDCG@10"] == pytest.approx(_ndcg10(direct, qrels), abs=1e-9)
        assert cell.loc[(20, depth), "candidates_per_query"] == depth
    # deeper than the first stage: every candidate, said so, and the same as the reranker on all of them
    assert cell.loc[(20, available + 50), "candidates_per_query"] == len(candidates) / topics["qid"].nunique()
    everything = minilm.reranker(num_input_docs=20, index=index)(candidates.merge(topics, on="qid"))
    assert cell.loc[(20, available + 50), "nDCG@10"] == pytest.approx(_ndcg10(everything, qrels), abs=1e-9)
    # the query alone in the prompt is another pseudo-query than twenty documents
    assert cell.loc[(0, 30), "nDCG@10"] != cell.loc[(20, 30), "nDCG@10"]


def test_qrels_of_other_queries_are_left_out(minilm, scifact_run):
    index, topics, qrels, candidates = scifact_run
    other = pd.DataFrame({"qid": ["not-a-topic"], "docno": [candidates["docno"].iat[0]], "label": [1]})
    grid = [prompt_depth_grid(minilm, topics, candidates, judged, index=index, prompt_docs=(2,), depths=(10,))
            for judged in (qrels, pd.concat([qrels, other]))]
    assert grid[0]["nDCG@10"].iat[0] > 0 and grid[1]["nDCG@10"].iat[0] == grid[0]["nDCG@10"].iat[0]


def test_prompt_of_no_documents_is_the_query_alone(tiny_qwen):
    prompt = tiny_qwen.listwise_prompt(num_input_docs=0)
    text = prompt.render(tiny_qwen.tokenizer, "gene therapy", ["a document", "another"])
    assert "Documents:\n\nSearch Query: gene therapy" in text and "[1]" not in text
    with pytest.raises(ValueError, match="num_input_docs"):
        tiny_qwen.reranker(num_input_docs=-1)


def test_empty_candidates_and_bad_arguments(minilm, scifact_run):
    index, topics, qrels, candidates = scifact_run
    empty = prompt_depth_grid(minilm, topics, candidates.head(0), qrels, index=index)
    assert len(empty) == 0 and list(empty.columns)[:4] == ["k", "depth", "nDCG@10", "seconds_per_query"]
    with pytest.raises(ValueError, match="depths"):
        prompt_depth_grid(minilm, topics, candidates, qrels, index=index, depths=(0,))
    for given in (candidates, candidates.merge(topics, on="qid")):  # with their query text or without
        with pytest.raises(ValueError, match="have no topic"):
            prompt_depth_grid(minilm, topics.head(1), given, qrels, index=index, prompt_docs=(1,), depths=(5,))
