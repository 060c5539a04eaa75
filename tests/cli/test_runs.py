"""TREC run files: round-trip through the CLI, evaluation, and line-numbered errors."""
import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.cli.main import main
from pyterrier_e2rank.cli.runs import (RunFormatError, evaluate_run, read_qrels, read_run, read_topics, rerank_run,
                                        write_run)

from fixtures.docs import make_docs


@pytest.fixture
def files(tmp_path):
    docs = make_docs(12, seed=5)
    (tmp_path / "docs.jsonl").write_text("".join(
        f'{{"id": "d{i}", "contents": "{t}"}}\n' for i, t in enumerate(docs)), encoding="utf-8")
    (tmp_path / "topics.tsv").write_text("q1\tgene therapy\nq2\tvirus immune response\n")
    run = pd.DataFrame({"qid": ["q1"] * 12 + ["q2"] * 12, "docno": [f"d{i}" for i in range(12)] * 2,
                        "score": list(range(12, 0, -1)) * 2, "rank": list(range(12)) * 2})
    write_run(run, tmp_path / "bm25.run", tag="bm25")
    (tmp_path / "qrels.txt").write_text("q1 0 d3 1\nq2 0 d7 2\n")
    return tmp_path, docs


def test_run_round_trip_through_the_cli(files, tiny_qwen_dir, tiny_qwen, capsys):
    path, docs = files
    assert main(["rerank-run", "--run", str(path / "bm25.run"), "--topics", str(path / "topics.tsv"),
                 "--docs", str(path / "docs.jsonl"), "--model", str(tiny_qwen_dir), "--output",
                 str(path / "e2rank.run"), "--num-input-docs", "5", "--top-k", "10"]) == 0
    reranked = read_run(path / "e2rank.run")
    assert reranked.groupby("qid").size().tolist() == [10, 10]
    lines = (path / "e2rank.run").read_text().splitlines()
    assert lines[0].split()[1] == "Q0" and lines[0].split()[3] == "1" and lines[0].endswith(" e2rank")
    frame = read_run(path / "bm25.run").query("rank < 10").merge(read_topics(str(path / "topics.tsv")))
    frame["text"] = [docs[int(d[1:])] for d in frame["docno"]]
    expected = tiny_qwen.reranker(num_input_docs=5)(frame)
    assert reranked["docno"].tolist() == expected["docno"].tolist()
    np.testing.assert_allclose(reranked["score"], expected["score"], atol=1e-5)  # 6 decimals in the file

    assert main(["eval-run", "--run", str(path / "e2rank.run"), "--qrels", str(path / "qrels.txt"),
                 "--metrics", "nDCG@10", "R@100"]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines()[-2:])
    assert set(printed) == {"nDCG@10", "R@100"} and float(printed["R@100"]) == 1.0


def test_eval_run_says_when_judged_queries_are_missing_from_the_run(files, capsys):
    path, _ = files
    write_run(read_run(path / "bm25.run").query("qid == 'q1'"), path / "q1.run")
    figures = {}
    for queries in ("qrels", "run"):
        assert main(["eval-run", "--run", str(path / "q1.run"), "--qrels", str(path / "qrels.txt"), "--metrics",
                     "R@100", "--queries", queries]) == 0
        out, err = capsys.readouterr()
        figures[queries] = float(out.strip().split("\t")[1])
        assert "1 of the qrels' 2 queries have no line in the run, e.g. ['q2']" in err
    assert figures == {"qrels": 0.5, "run": 1.0}  # q1's relevant d3 is retrieved; q2 counts as 0 or not at all
    assert main(["eval-run", "--run", str(path / "bm25.run"), "--qrels", str(path / "qrels.txt")]) == 0
    assert "note" not in capsys.readouterr().err


@pytest.mark.parametrize("line, message", [
    ("q1 Q0 d1 1 2.5\n", "expected 6 fields"),
    ("q1 Q0 d1 one 2.5 tag\n", "rank must be an integer"),
    ("q1 Q0 d1 1 high tag\n", "rank must be an integer and score a number"),
    ("q1 Q0 d0 1 2.5 tag\n", "repeated"),
])
def test_malformed_run_lines_are_reported_with_their_number(tmp_path, line, message):
    (tmp_path / "bad.run").write_text("q1 Q0 d0 1 3.0 tag\n\n" + line)
    with pytest.raises(RunFormatError, match=rf"bad.run:3: .*{message}"):
        read_run(tmp_path / "bad.run")


def test_malformed_topics_and_qrels_are_reported(tmp_path):
    (tmp_path / "t.tsv").write_text("q1\tfine\nq2 no tab\n")
    with pytest.raises(RunFormatError, match="t.tsv:2"):
        read_topics(str(tmp_path / "t.tsv"))
    (tmp_path / "q.txt").write_text("q1 0 d1 1\nq1 0 d2 x\n")
    with pytest.raises(RunFormatError, match="q.txt:2"):
        read_qrels(str(tmp_path / "q.txt"))


def test_run_queries_without_topics_are_named(files, tiny_qwen):
    from pyterrier_e2rank.cli.runs import rerank_run
    path, _ = files
    with pytest.raises(KeyError, match="q2"):
        rerank_run(tiny_qwen, read_run(path / "bm25.run"), read_topics(str(path / "topics.tsv")).head(1),
                   str(path / "docs.jsonl"))


def test_run_frames_without_their_columns_are_refused_naming_them():
    run = pd.DataFrame({"qid": ["q1"], "docno": ["d0"], "score": [1.0], "rank": [0]})
    topics = pd.DataFrame({"qid": ["q1"], "query": ["gene"]})
    qrels = pd.DataFrame({"query_id": ["q1"], "doc_id": ["d0"], "relevance": [1]})
    with pytest.raises(KeyError, match=r"missing_columns=\['rank'\]"):
        rerank_run(None, run.drop(columns="rank"), topics, "irds:unused")
    with pytest.raises(KeyError, match=r"missing_columns=\['query'\]"):
        rerank_run(None, run, topics.drop(columns="query"), "irds:unused")
    with pytest.raises(KeyError, match=r"missing_columns=\['score'\]"):
        evaluate_run(run.drop(columns="score"), qrels, ["P@1"])
    with pytest.raises(KeyError, match=r"missing_columns=\['relevance'\]"):
        evaluate_run(run, qrels.drop(columns="relevance"), ["P@1"])


def test_int_ids_are_evaluated_as_their_strings():
    """README: ints become ``str(int)``; int qids failed inside pytrec_eval ("Unable to extract query/object
    scores"), int qrels ids with "Expected string as key"."""
    run = pd.DataFrame({"qid": ["1", "1", "2"], "docno": ["10", "11", "12"], "score": [2.0, 1.0, 1.0]})
    qrels = pd.DataFrame({"query_id": ["1", "2"], "doc_id": ["11", "12"], "relevance": [1, 1]})
    expected = evaluate_run(run, qrels, ["nDCG@10", "P@1"])
    as_ints = {"qid": int, "docno": int}
    assert evaluate_run(run.astype(as_ints), qrels, ["nDCG@10", "P@1"]) == expected
    assert evaluate_run(run, qrels.astype({"query_id": int, "doc_id": int}), ["nDCG@10", "P@1"]) == expected
    assert evaluate_run(run.assign(qid=[1, "1", 2]), qrels, ["nDCG@10", "P@1"]) == expected
    with pytest.raises(ValueError, match=r"qid at run row 0 is a float \(1.0\)"):
        evaluate_run(run.astype({"qid": float}), qrels, ["P@1"])
    with pytest.raises(ValueError, match=r"docno at qrels row 0 is a float"):
        evaluate_run(run, qrels.astype({"doc_id": float}), ["P@1"])


def test_a_run_of_other_queries_than_the_qrels_is_refused():
    """A run whose qids are none of the qrels' (another dataset's, or ids rewritten) evaluated to 0 silently."""
    run = pd.DataFrame({"qid": ["01", "02"], "docno": ["10", "12"], "score": [2.0, 1.0]})
    qrels = pd.DataFrame({"query_id": ["1", "2"], "doc_id": ["10", "12"], "relevance": [1, 1]})
    with pytest.raises(ValueError, match=r"none of the run's 2 queries \('01', '02', ...\) is in the qrels "
                                         r"\('1', '2', ...\)"):
        evaluate_run(run, qrels, ["nDCG@10"])
    assert evaluate_run(run.assign(qid=["1", "02"]), qrels, ["P@1"]) == {"P@1": 0.5}  # some judged: evaluated


def test_an_empty_run_file_is_refused_naming_it(tmp_path, capsys):
    """An empty run evaluated to 0 silently, and was reranked into an empty run."""
    from pyterrier_e2rank.cli.main import _reporting_errors
    (tmp_path / "empty.run").write_text("\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d3 1\n")
    with pytest.raises(RunFormatError, match="empty.run: no run lines"):
        read_run(tmp_path / "empty.run")
    assert _reporting_errors(lambda: main(["eval-run", "--run", str(tmp_path / "empty.run"),
                                           "--qrels", str(tmp_path / "qrels.txt")])) == 2
    assert "e2rank: error: " in capsys.readouterr().err


def test_rerank_run_takes_int_qids_and_docnos(tmp_path, tiny_qwen):
    """Int docnos of a run frame were looked up as ints in a collection whose docnos are strings."""
    (tmp_path / "docs.jsonl").write_text("".join(f'{{"id": {i}, "contents": "{t}"}}\n'
                                                 for i, t in enumerate(make_docs(4, seed=5))))
    run = pd.DataFrame({"qid": [1] * 4, "docno": [0, 1, 2, 3], "score": [4.0, 3.0, 2.0, 1.0], "rank": [0, 1, 2, 3]})
    topics = pd.DataFrame({"qid": [1], "query": ["gene therapy"]})
    out = rerank_run(tiny_qwen, run, topics, str(tmp_path / "docs.jsonl"), num_input_docs=4)
    strings = rerank_run(tiny_qwen, run.astype({"qid": str, "docno": str}), topics.astype({"qid": str}),
                         str(tmp_path / "docs.jsonl"), num_input_docs=4)
    pd.testing.assert_frame_equal(out, strings)
