"""PyTerrier composition on real SciFact: BM25 (PISA) >> text >> E2Rank, pt.Experiment, the CLI."""
import json

import pyterrier as pt
import pytest
from ir_measures import R, nDCG

from pyterrier_e2rank.bm25 import pisa_bm25
from pyterrier_e2rank.cli.main import main
from pyterrier_e2rank.data import DocumentText


@pytest.fixture(scope="module")
def bm25(scifact, tmp_path_factory):
    return pisa_bm25(str(tmp_path_factory.mktemp("pisa") / "scifact"), scifact, num_results=100)


def test_bm25_matches_the_published_setting(bm25, scifact):
    table = pt.Experiment([bm25], scifact.get_topics(), scifact.get_qrels(), [nDCG @ 10], names=["bm25"])
    assert abs(table["nDCG@10"].iat[0] - 0.679) < 0.015  # Pyserini flat index, k1=0.9, b=0.4


def test_document_text_joins_title_and_text(scifact):
    out = DocumentText(scifact)(pt.new.ranked_documents([[1.0]], qid=["1"], docno=[["4983"]]))
    doc = scifact.irds_ref().docs_store().get("4983")
    assert out["text"].iat[0] == f"{doc.title} {doc.text}"


def test_rerank_pipeline_composes_and_keeps_recall(bm25, scifact, tiny_qwen):
    topics = scifact.get_topics().head(4)
    reranker = tiny_qwen.reranker(prompt_max_tokens=2048)
    pipeline = bm25 % 30 >> DocumentText(scifact) >> reranker
    table = pt.Experiment([bm25 % 30, pipeline], topics, scifact.get_qrels(), [nDCG @ 10, R @ 30, "mrt"],
                          names=["bm25", "bm25>>e2rank"])
    assert table["R@30"].iat[0] == table["R@30"].iat[1]  # reranking the same candidates
    assert reranker.stats.texts > 4  # no index: candidates were encoded too
    out = pipeline(topics)
    assert out.groupby("qid").size().eq(30).all()
    assert set(out["qid"]) == set(topics["qid"])


@pytest.mark.slow
def test_experiment_command_writes_the_five_systems(tmp_path, tiny_qwen_dir, scifact):
    output = tmp_path / "out.json"
    assert main(["experiment", "--dataset", "irds:beir/scifact/test", "--model", str(tiny_qwen_dir),
                 "--index-dir", str(tmp_path / "idx"), "--output", str(output), "--num-queries", "3",
                 "--top-k", "20", "--num-input-docs", "5", "--batch-size", "16"]) == 0
    results = json.loads(output.read_text())
    assert list(results) == ["bm25", "bm25>>e2rank", "dense", "dense>>e2rank", "bm25>>e2rank-prf"]
    for scores in results.values():
        assert set(scores) == {"nDCG@10", "R@100", "mrt"} and 0 <= scores["nDCG@10"] <= 1
    assert results["bm25"]["R@100"] == results["bm25>>e2rank"]["R@100"]
    assert results["dense"]["R@100"] == results["dense>>e2rank"]["R@100"]


@pytest.mark.slow
def test_example_script_runs(tmp_path, tiny_qwen_dir, scifact, repo_dir):
    import importlib.util
    spec = importlib.util.spec_from_file_location("rerank_bm25", repo_dir / "examples" / "rerank_bm25.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    table = example.main(["--model", str(tiny_qwen_dir), "--index-dir", str(tmp_path / "pisa"),
                          "--num-queries", "2", "--top-k", "10"])
    assert list(table["name"]) == ["bm25", "bm25>>e2rank"]
