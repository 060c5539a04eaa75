"""JSONL candidates (the authors' ``{dataset}_top100.jsonl``, rank_llm's requests) read as runs with their texts,
reranked without --topics/--docs, written back in their form (cli/runs.py)."""
import json

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.cli.main import main
from pyterrier_e2rank.cli.runs import (RunFormatError, read_run, read_topics, rerank_run, write_candidates,
                                        write_run)

from fixtures.docs import make_docs

TOPICS = {"q1": "gene therapy", "q2": "virus immune response"}


def _hits(qid, docs, scores):
    return {"query": TOPICS[qid], "hits": [{"qid": qid, "docid": f"d{i}", "rank": rank + 1, "score": score,
                                            "content": docs[i]} for rank, (i, score) in enumerate(scores)]}


def _request(qid, docs, scores, as_dict):
    return {"query": {"text": TOPICS[qid], "qid": qid},
            "candidates": [{"docid": f"d{i}", "score": score, "doc": {"contents": docs[i]} if as_dict else docs[i]}
                           for i, score in scores]}


@pytest.fixture
def files(tmp_path):
    """One TREC run, its topics and documents, and the same candidates as the authors' hits and rank_llm's
    requests (docs as objects for q1, strings for q2); d4 and d5 of q1 tie."""
    docs = make_docs(12, seed=5)
    scores = {"q1": [(i, float(12 - i)) for i in range(12)], "q2": [(11 - i, 20.5 - i) for i in range(12)]}
    scores["q1"][5] = (5, 8.0)
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "contents": t}) + "\n"
                                                 for i, t in enumerate(docs)), encoding="utf-8")
    (tmp_path / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in TOPICS.items()))
    write_run(pd.DataFrame([(q, f"d{i}", s, r) for q in TOPICS for r, (i, s) in enumerate(scores[q])],
                           columns=["qid", "docno", "score", "rank"]), tmp_path / "bm25.run", tag="bm25")
    lines = {"hits.jsonl": [_hits(q, docs, scores[q]) for q in TOPICS],
             "requests.jsonl": [_request(q, docs, scores[q], q == "q1") for q in TOPICS]}
    for name, records in lines.items():
        (tmp_path / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                     encoding="utf-8")
    return tmp_path, docs


@pytest.mark.parametrize("name", ["hits.jsonl", "requests.jsonl"])
def test_candidates_read_as_the_trec_run_with_their_texts(files, name):
    path, docs = files
    trec, candidates = read_run(path / "bm25.run"), read_run(path / name)
    assert list(trec.columns) == ["qid", "docno", "score", "rank"]
    pd.testing.assert_frame_equal(candidates[list(trec.columns)], trec)
    assert candidates["query"].tolist() == [TOPICS[q] for q in trec["qid"]]
    assert candidates["text"].tolist() == [docs[int(d[1:])] for d in trec["docno"]]
    assert trec.query("qid == 'q1'")["docno"].tolist()[4:6] == ["d4", "d5"]  # a tie keeps the file's order


def test_ids_may_be_ints_and_a_doc_object_joins_its_title(tmp_path):
    (tmp_path / "r.jsonl").write_text(json.dumps({"query": {"text": "gene", "qid": 7}, "candidates": [
        {"docid": 1, "score": 2, "doc": {"title": "Genes", "segment": "a gene"}},
        {"docid": 2, "score": 1.5, "doc": {"text": "first", "contents": "second"}}]}) + "\n")
    run = read_run(tmp_path / "r.jsonl")
    assert run[["qid", "docno", "score", "text"]].values.tolist() == [["7", "1", 2.0, "Genes a gene"],
                                                                       ["7", "2", 1.5, "first"]]


@pytest.fixture
def reference(files, tiny_qwen):
    """The TREC run reranked with its topics and documents (top 10, 5 prompt documents)."""
    path, _ = files
    return rerank_run(tiny_qwen, read_run(path / "bm25.run"), read_topics(str(path / "topics.tsv")),
                      str(path / "docs.jsonl"), top_k=10, num_input_docs=5)


@pytest.mark.parametrize("name", ["hits.jsonl", "requests.jsonl"])
def test_candidates_rerank_without_topics_nor_docs(files, reference, tiny_qwen, name):
    path, _ = files
    assert len(reference) == 20
    reranked = rerank_run(tiny_qwen, read_run(path / name), top_k=10, num_input_docs=5)
    pd.testing.assert_frame_equal(reranked[list(reference.columns)], reference)
    other_topics = pd.DataFrame({"qid": ["q1", "q2"], "query": ["brain dose", "cancer trial"]})
    given = rerank_run(tiny_qwen, read_run(path / name), other_topics, top_k=10, num_input_docs=5)
    expected = rerank_run(tiny_qwen, read_run(path / "bm25.run"), other_topics, str(path / "docs.jsonl"), top_k=10,
                          num_input_docs=5)
    pd.testing.assert_frame_equal(given[list(expected.columns)], expected)  # topics given are used


@pytest.mark.parametrize("name", ["hits.jsonl", "requests.jsonl"])
def test_candidates_are_written_back_in_their_form(files, tmp_path, name):
    path, docs = files
    key = "hits" if name == "hits.jsonl" else "candidates"
    run = read_run(path / name)
    reranked = run[run["rank"] < 10].assign(rank=lambda f: 9 - f["rank"], score=lambda f: 1 / (f["rank"] + 1.0))
    reranked = reranked.iloc[::-1].reset_index(drop=True).drop(columns=["query", "text"])
    write_candidates(reranked, tmp_path / "out.jsonl", path / name)
    back = read_run(tmp_path / "out.jsonl")
    expected = reranked.assign(score=reranked["score"].astype(float)).sort_values(["qid", "rank"])
    pd.testing.assert_frame_equal(back[list(reranked.columns)], expected.reset_index(drop=True))
    assert back["text"].tolist() == [docs[int(d[1:])] for d in back["docno"]]
    for before, after in zip(*[(folder / f).read_text(encoding="utf-8").splitlines()
                               for folder, f in ((path, name), (tmp_path, "out.jsonl"))]):
        before, after = json.loads(before), json.loads(after)
        assert after["query"] == before["query"] and len(after[key]) == 10
        given = {item["docid"]: item for item in before[key]}
        for rank, item in enumerate(after[key]):  # every other key and the texts kept, as given
            ranks = {"rank": rank + 1} if key == "hits" else {}
            assert item == {**given[item["docid"]], "score": item["score"], **ranks}


@pytest.mark.slow
def test_rerank_run_command_reads_and_writes_candidates(files, reference, tiny_qwen_dir):
    path, _ = files
    for name, output, form in (("hits.jsonl", "out.jsonl", "jsonl"), ("requests.jsonl", "out.run", "trec")):
        assert main(["rerank-run", "--run", str(path / name), "--model", str(tiny_qwen_dir), "--output",
                     str(path / output), "--num-input-docs", "5", "--top-k", "10", "--output-format", form]) == 0
        written = read_run(path / output)
        assert written["docno"].tolist() == reference["docno"].tolist()
        np.testing.assert_allclose(written["score"], reference["score"], atol=1e-5)  # batched otherwise
    assert (path / "out.jsonl").read_text(encoding="utf-8").startswith('{"query": "gene therapy", "hits": [{')


def test_missing_texts_name_the_option_before_the_model_loads(files, tmp_path):
    path, _ = files
    no_texts = tmp_path / "ids-only.jsonl"
    no_texts.write_text("".join(json.dumps({"query": {"text": t, "qid": q}, "candidates": [
        {"docid": "d1", "score": 1.0, "doc": {}}]}) + "\n" for q, t in TOPICS.items()))
    command = ["rerank-run", "--model", "no-such-model", "--output", str(tmp_path / "out.run")]
    with pytest.raises(ValueError, match=r"holds no query texts .*give topics \(--topics\)"):
        main(command + ["--run", str(path / "bm25.run"), "--docs", str(path / "docs.jsonl")])
    with pytest.raises(ValueError, match=r"holds no document texts .*give docs \(--docs\)"):
        main(command + ["--run", str(no_texts)])
    with pytest.raises(ValueError, match=r"bm25.run is a TREC run: give --output-format trec"):
        main(command + ["--run", str(path / "bm25.run"), "--topics", str(path / "topics.tsv"), "--docs",
                        str(path / "docs.jsonl"), "--output-format", "jsonl"])
    assert not (tmp_path / "out.run").exists()


HIT = '{"qid": "q1", "docid": "d1", "score": 1.0, "content": "a"}'


@pytest.mark.parametrize("line, message", [
    ('{"query": "gene", "hits": [' + HIT + ', ', "not a JSON object"),
    ('{"query": "gene", "hits": [{"qid": "q1", "docid": "d1", "content": "a"}]}', r"hit 1 has no 'score' key"),
    ('{"query": "gene", "hits": [' + HIT + ', ' + HIT + ']}', r"docid 'd1' repeated for query 'q1' \(first on line "
                                                             r"3\)"),
    ('{"query": "gene", "hits": [' + HIT.replace("1.0", "NaN") + ']}', "score nan of docid 'd1' is not a finite"),
    ('{"query": "gene", "hits": [' + HIT.replace("q1", "q2") + ', ' + HIT.replace("d1", "d2") + ']}',
     r"qids 'q2' and 'q1'"),
    ('{"query": "gene", "hits": [' + HIT.replace('"score": 1.0', '"score": "1.0"') + ']}', "'1.0', not a number"),
    ('{"query": "gene", "hits": [' + HIT.replace('"content": "a"', '"content": 3') + ']}', "is a int, not a string"),
    ('{"query": "gene", "hits": [' + HIT.replace('"content": "a"', '"x": 3') + ']}', "'d1' has no text, unlike"),
    ('{"query": "gene", "hits": []}', "must be a non-empty list"),
    ('{"query": " ", "hits": [' + HIT + ']}', "query text of qid 'q1' is empty"),
    ('{"query": "gene", "docs": []}', "expected a JSON object with 'hits'"),
    ('{"query": {"text": "gene"}, "candidates": [{"docid": "d1", "score": 1.0, "doc": "a"}]}',
     "the query has no 'qid' key"),
    ('{"query": {"text": "gene", "qid": "q0"}, "candidates": [{"docid": "d1 d2", "score": 1.0, "doc": "a"}]}',
     "holds whitespace"),
    ('{"query": {"text": "gene", "qid": "q0"}, "candidates": [{"docid": "d1", "score": 1.0, "doc": {"text": [1]}}]}',
     "the text of docid 'd1' is a list"),
    ('{"query": {"text": "gene", "qid": "q0"}, "candidates": [{"docid": "d1", "score": 1.0, "doc": {"text": "a", '
     '"title": 2}}]}', "the title of docid 'd1' is a int"),
    ('{"query": "gene", "hits": [' + HIT.replace("q1", "q0") + ']}', r"query 'q0' repeated \(first on line 1\)"),
])
def test_malformed_candidates_are_reported_with_their_line(tmp_path, line, message):
    first = {"query": "virus", "hits": [{"qid": "q0", "docid": "d0", "score": 2.0, "content": "b"}]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(first) + "\n\n" + line + "\n")
    with pytest.raises(RunFormatError, match=rf"bad.jsonl:3[: ].*{message}"):
        read_run(tmp_path / "bad.jsonl")


def test_the_form_is_told_by_content_and_a_line_of_the_other_is_named(files, tmp_path):
    path, _ = files
    (tmp_path / "hits.run").write_text((path / "hits.jsonl").read_text())
    (tmp_path / "trec.jsonl").write_text((path / "bm25.run").read_text())
    pd.testing.assert_frame_equal(read_run(tmp_path / "hits.run"), read_run(path / "hits.jsonl"))
    pd.testing.assert_frame_equal(read_run(tmp_path / "trec.jsonl"), read_run(path / "bm25.run"))
    (tmp_path / "a.jsonl").write_text((path / "hits.jsonl").read_text() + "q1 Q0 d1 1 2.0 x\n")
    with pytest.raises(RunFormatError, match=r"a.jsonl:3: not a JSON object"):
        read_run(tmp_path / "a.jsonl")
    (tmp_path / "a.run").write_text((path / "bm25.run").read_text() + (path / "hits.jsonl").read_text())
    with pytest.raises(RunFormatError, match=r"a.run:25: expected 6 fields"):
        read_run(tmp_path / "a.run")
