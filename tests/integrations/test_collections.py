"""Own collections through ``data.dataset``: a BEIR folder, JSONL/TSV corpus files with topics and qrels,
or an ``irds:`` id, taken alike by BM25, the indexer, ``DocumentText`` and the CLIs; malformed files named
by ``file:line``; empty documents indexed as the empty text."""
import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.cli.main import _reporting_errors, main
from pyterrier_e2rank.cli.runs import RunFormatError, read_qrels, read_run, read_topics, write_run
from pyterrier_e2rank.bm25 import pisa_bm25
from pyterrier_e2rank.data import DocumentText, corpus_id, corpus_iter, dataset
from pyterrier_e2rank.index.indexer import E2RankIndexer
from pyterrier_e2rank.io import FileFormatError

from fixtures.docs import make_docs

DOCS = make_docs(30, seed=3)
QUERIES = {"q1": "gene therapy trial", "q2": "virus immune response", "q3": "blood brain cell", "q9": "mouse dose"}
QRELS = {"test": [("q1", "d4", 1), ("q2", "d7", 2), ("q3", "d11", 1)], "dev": [("q9", "d5", 1)]}


def write_beir(folder, docs=DOCS):
    """A BEIR folder: corpus.jsonl (title + text), queries.jsonl (every split's), qrels/{test,dev}.tsv."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"title {i}", "text": t, "metadata": {}}) + "\n" for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t, "metadata": {}}) + "\n" for q, t in QUERIES.items()))
    for split, rows in QRELS.items():
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in rows))
    return folder


@pytest.fixture
def beir(tmp_path):
    return write_beir(tmp_path / "mycorpus")


def test_beir_folder_is_one_dataset(beir):
    ds = dataset(beir)
    assert sorted(ds.get_topics()["qid"]) == ["q1", "q2", "q3"]  # the test split's judged queries, as BEIR
    assert ds.get_topics().columns.tolist() == ["qid", "query"]
    assert sorted(map(tuple, ds.get_qrels()[["qid", "docno", "label"]].values.tolist())) == QRELS["test"]
    assert dataset(str(beir), split="dev").get_topics()["qid"].tolist() == ["q9"]
    records = list(corpus_iter(ds))
    assert len(corpus_iter(ds)) == 30 and records[4] == {"docno": "d4", "text": f"title 4 {DOCS[4]}"}
    text = DocumentText(ds)(pd.DataFrame({"qid": ["q1", "q1"], "docno": ["d7", "d2"]}))
    assert text["text"].tolist() == [f"title 7 {DOCS[7]}", f"title 2 {DOCS[2]}"]
    # a stable name from the path, shared by the splits (so they share their indexes)
    assert corpus_id(ds) == corpus_id(dataset(beir, split="dev")) == corpus_id(dataset(beir))
    assert corpus_id(ds).startswith("local/mycorpus-")
    with pytest.raises(FileNotFoundError, match=r"qrels/train.tsv.*\['dev', 'test'\]"):
        dataset(beir, split="train")


def test_the_shared_scifact_folder_equals_irds(scifact, shared_path):
    ds = dataset(shared_path("data", "scifact"))
    assert ds.get_topics().equals(scifact.get_topics())
    assert ds.get_qrels()[["qid", "docno", "label"]].equals(scifact.get_qrels()[["qid", "docno", "label"]])
    frame = scifact.get_qrels().head(20)[["qid", "docno"]]
    assert DocumentText(ds)(frame)["text"].tolist() == DocumentText(scifact)(frame)["text"].tolist()


def test_corpus_files_with_topics_and_qrels(tmp_path, tiny_qwen):
    (tmp_path / "docs.tsv").write_text("docno\ttext\n" + "".join(f"d{i}\t{t}\n" for i, t in enumerate(DOCS)))
    (tmp_path / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {r}\n" for q, d, r in QRELS["test"]))
    ds = dataset(tmp_path / "docs.tsv", topics=tmp_path / "topics.tsv", qrels=tmp_path / "qrels.txt")
    assert len(ds.get_topics()) == 4 and len(ds.get_qrels()) == 3
    assert corpus_id(ds) == corpus_id(dataset(tmp_path / "docs.tsv"))
    bm25 = pisa_bm25(str(tmp_path / "bm25"), ds, num_results=5)
    assert (bm25 >> DocumentText(ds))(ds.get_topics())["text"].isin(DOCS).all()
    index = tiny_qwen.indexer(tmp_path / "dense").index(corpus_iter(ds))
    assert len(index) == 30
    # a JSONL corpus in Pyserini's spelling, BEIR qrels beside it
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "contents": t}) + "\n"
                                                 for i, t in enumerate(DOCS)))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td4\t1\n")
    ds = dataset(str(tmp_path / "docs.jsonl"), qrels=str(tmp_path / "qrels.tsv"))
    assert ds.get_qrels()[["qid", "docno", "label"]].values.tolist() == [["q1", "d4", 1]]
    assert [r["text"] for r in corpus_iter(ds)] == DOCS


@pytest.mark.parametrize("name, content, error", [
    ("corpus.jsonl", '{"_id": "d0", "title": "", "text": "a"}\n{"_id": "d1", "title": "", "text": "b"\n',
     r"corpus.jsonl:2: not a JSON object"),
    ("corpus.jsonl", '{"_id": "d0", "title": "", "text": "a"}\n\n{"_id": "d2", "title": "b"}\n',
     r"corpus.jsonl:3: a document needs one of the keys \['text', 'contents'\]"),
    ("corpus.jsonl", '{"_id": "d0", "title": "", "text": "a"}\n{"_id": 7.5, "title": "", "text": "b"}\n',
     r"docno at .*corpus.jsonl:2 is a float"),
    ("queries.jsonl", '{"_id": "q1", "text": "gene"}\n[1, 2]\n', r"queries.jsonl:2: expected a JSON object"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td4\tyes\n", r"test.tsv:2: expected 'query-id corpus-id score'"),
])
def test_malformed_folders_are_named_by_file_and_line(beir, name, content, error):
    (beir / name).write_text(content)
    ds = dataset(beir)
    with pytest.raises(FileFormatError, match=error):
        list(corpus_iter(ds)), ds.get_topics(), ds.get_qrels()


def test_missing_paths_are_named(tmp_path, beir):
    with pytest.raises(ValueError, match="is a folder but not a BEIR folder: it has no corpus.jsonl"):
        dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        dataset(str(tmp_path / "absent"))
    (tmp_path / "docs.tsv").write_text("d0\ta\nd1\tb\n")
    with pytest.raises(FileNotFoundError, match="qrels='.*nope.txt': no such file"):
        dataset(tmp_path / "docs.tsv", qrels=tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="BEIR folder"):
        dataset(beir, qrels=tmp_path / "docs.tsv")


def _cli_error(argv, capsys) -> str:
    """The one ``e2rank: error:`` line of a command that must exit 2."""
    capsys.readouterr()
    assert _reporting_errors(lambda: main(argv)) == 2
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith("e2rank: error: ")]
    assert len(lines) == 1 and "Traceback" not in error, error
    return lines[0]


def test_an_empty_corpus_is_refused_naming_it_before_indexing(tmp_path, beir, tiny_qwen_dir, capsys):
    """``e2rank index`` of an empty corpus file or BEIR folder ended in a TypeError inside ir_datasets."""
    (tmp_path / "empty.jsonl").write_text("")
    (beir / "corpus.jsonl").write_text("\n")
    for source, named in ((tmp_path / "empty.jsonl", "empty.jsonl"), (beir, "mycorpus/corpus.jsonl")):
        with pytest.raises(FileFormatError, match=f"{named}: the file holds no document"):
            dataset(source)
        line = _cli_error(["index", "--dataset", str(source), "--model", str(tiny_qwen_dir),
                           "--output", str(tmp_path / "index")], capsys)
        assert f"{named}: the file holds no document" in line
    assert not (tmp_path / "index").exists()


def test_a_folder_that_is_not_a_beir_folder_is_refused_by_every_command(tmp_path, tiny_qwen_dir, capsys):
    """``e2rank reproduce`` said "skipped" and exited 0 with an empty table."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a corpus\n")
    for argv in (["reproduce", "--output", str(tmp_path / "out")], ["experiment", "--index-dir", str(tmp_path / "i")]):
        line = _cli_error([*argv, "--dataset", str(tmp_path / "notes"), "--model", str(tiny_qwen_dir)], capsys)
        assert "notes' is a folder but not a BEIR folder" in line
    (tmp_path / "x.run").write_text("q1 Q0 d0 1 1.0 x\n")  # --qrels and --topics take BEIR folders too
    line = _cli_error(["eval-run", "--run", str(tmp_path / "x.run"), "--qrels", str(tmp_path / "notes")], capsys)
    assert "notes' is a folder but not a BEIR folder" in line  # was "[Errno 21] Is a directory"
    with pytest.raises(ValueError, match="notes' is a folder but not a BEIR folder"):
        read_topics(str(tmp_path / "notes"))


@pytest.mark.slow
def test_a_beir_folder_without_qrels_or_queries_is_refused_naming_it(beir, tmp_path, tiny_qwen_dir, capsys):
    """``e2rank experiment`` ended in ir_datasets' bare NotImplementedError; ``reproduce`` said "skipped" and
    exited 0 (NotImplementedError is a RuntimeError, which it takes for a download that failed)."""
    for missing, part in (("qrels", "qrels"), ("queries.jsonl", "topics")):
        folder = tmp_path / f"no-{part}"
        shutil.copytree(beir, folder)
        shutil.rmtree(folder / missing) if missing == "qrels" else (folder / missing).unlink()
        for argv in (["reproduce", "--output", str(tmp_path / "out")],
                     ["experiment", "--index-dir", str(tmp_path / "i"), "--output", str(tmp_path / "x.json")]):
            line = _cli_error([*argv, "--dataset", str(folder), "--model", str(tiny_qwen_dir)], capsys)
            assert f"no-{part}' has no {part}" in line
        assert not (tmp_path / "i").exists()  # refused before any index is built
    (tmp_path / "x.run").write_text("q1 Q0 d0 1 1.0 x\n")
    line = _cli_error(["eval-run", "--run", str(tmp_path / "x.run"), "--qrels", str(tmp_path / "no-qrels")], capsys)
    assert "no-qrels' has no qrels" in line


def test_a_changed_corpus_is_read_again(beir):
    assert DocumentText(dataset(beir))(pd.DataFrame({"docno": ["d1"]}))["text"][0] == f"title 1 {DOCS[1]}"
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"new {i}"}) + "\n" for i in range(3)))
    assert DocumentText(dataset(beir))(pd.DataFrame({"docno": ["d1"]}))["text"][0] == "new 1"
    assert len(corpus_iter(dataset(beir))) == 3


@pytest.mark.slow
def test_cli_experiment_rerank_and_eval_on_a_beir_folder(beir, tmp_path, tiny_qwen_dir, capsys):
    out = tmp_path / "results.json"
    assert main(["experiment", "--dataset", str(beir), "--model", str(tiny_qwen_dir), "--index-dir",
                 str(tmp_path / "indexes"), "--top-k", "10", "--num-input-docs", "3", "--output", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {"bm25", "bm25>>e2rank", "dense", "dense>>e2rank", "bm25>>e2rank-prf"}
    collection, = (tmp_path / "indexes").iterdir()
    assert collection.name.startswith("local_mycorpus-")
    assert "doc/s" in capsys.readouterr().err  # indexing shows its progress: documents per second, ETA

    run = pd.DataFrame({"qid": ["q1"] * 6 + ["q2"] * 6, "docno": [f"d{i}" for i in range(6)] * 2,
                        "score": list(range(6, 0, -1)) * 2, "rank": list(range(6)) * 2})
    write_run(run, tmp_path / "bm25.run", tag="bm25")
    assert main(["rerank-run", "--run", str(tmp_path / "bm25.run"), "--topics", str(beir), "--docs", str(beir),
                 "--model", str(tiny_qwen_dir), "--output", str(tmp_path / "e2rank.run"), "--num-input-docs", "3"]) == 0
    assert read_run(tmp_path / "e2rank.run").groupby("qid").size().tolist() == [6, 6]
    for qrels in (beir, beir / "qrels" / "test.tsv"):
        capsys.readouterr()
        assert main(["eval-run", "--run", str(tmp_path / "e2rank.run"), "--qrels", str(qrels), "--metrics", "R@10"]) == 0
        assert capsys.readouterr().out.strip() == "R@10\t0.3333"  # q1 finds d4; q2's d7 is not in the run
    assert read_topics(str(beir))["qid"].tolist() == ["q1", "q2", "q3"]
    (tmp_path / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td4\n")
    with pytest.raises(RunFormatError, match="bad.tsv:2"):
        read_qrels(str(tmp_path / "bad.tsv"))


def test_empty_documents_are_embedded_as_the_empty_text(tiny_qwen, minilm, tmp_path):
    for model in (tiny_qwen, minilm):
        ids = model.tokenize_docs([""])[0]
        assert model.tokenizer.convert_ids_to_tokens(ids) in (["<|endoftext|>"], ["[CLS]", "[SEP]"])
    records = [{"docno": "a", "text": "gene therapy"}, {"docno": "b", "text": ""},
               {"docno": "c", "text": " \n "}, {"docno": "d", "text": "virus"}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = tiny_qwen.indexer(tmp_path / "i", chunk_size=2).index(records)
    assert [str(w.message) for w in caught if "empty" in str(w.message)] == [
        "2 document(s) with empty 'text' were indexed as the empty text (docnos ['b', 'c'])"]
    vectors = index.vec_loader()(pd.DataFrame({"docno": ["b", "c"]}))["doc_vec"]
    np.testing.assert_allclose(np.stack(vectors), np.repeat(tiny_qwen.encode_docs([""]), 2, axis=0), atol=1e-6)

    missing = records[:3] + [{"docno": "n", "text": None}, {"docno": "m", "text": float("nan")}]
    with pytest.raises(ValueError, match=r"2 document\(s\) have no text .*\['n', 'm'\].*missing_text='empty'"):
        tiny_qwen.indexer(tmp_path / "j").index(missing)
    with pytest.warns(UserWarning, match="4 document"):
        assert len(E2RankIndexer(tiny_qwen, tmp_path / "j", missing_text="empty").index(missing)) == 5
    with pytest.raises(ValueError, match="missing_text='skip'"):
        E2RankIndexer(tiny_qwen, tmp_path / "k", missing_text="skip")
    frame = pd.DataFrame({"qid": "1", "query": "gene", "docno": ["a", "b"], "text": ["gene", ""], "rank": [0, 1],
                          "score": [2.0, 1.0]})
    with pytest.raises(ValueError, match="empty"):  # rerankers keep refusing an empty text in the prompt
        tiny_qwen.reranker()(frame)
