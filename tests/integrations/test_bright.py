"""BRIGHT's domains through ``data.dataset`` and ``data.bright_dataset``: a local copy in the
dataset card's layout read alike from parquet and JSONL, its excluded ids, and bad copies named by file and
column or domain."""
import sys

import pytest

from pyterrier_e2rank import data
from pyterrier_e2rank.bright import drop_excluded, excluding
from pyterrier_e2rank.io import FileFormatError

from fixtures.bright import examples_and_documents, write_bright_copy, write_records


def _contents(ds):
    topics = ds.get_topics().sort_values("qid").reset_index(drop=True)
    qrels = ds.get_qrels().sort_values(["qid", "docno"]).reset_index(drop=True)
    return topics, qrels, list(data.corpus_iter(ds)), data.excluded_ids(ds)


@pytest.mark.parametrize("form", ["parquet", "jsonl"])
def test_a_local_copy_is_a_dataset_of_its_examples_and_documents(tmp_path, form):
    root = write_bright_copy(tmp_path / "copy", form)
    ds = data.bright_dataset("leetcode", bright_dir=root)
    topics, qrels, docs, excluded = _contents(ds)
    examples, documents = examples_and_documents("leetcode")
    assert topics.to_dict("records") == [{"qid": e["id"], "query": e["query"]} for e in examples]
    assert [(q, d, label) for q, d, label in zip(qrels["qid"], qrels["docno"], qrels["label"])] == [
        (e["id"], g, 1) for e in examples for g in e["gold_ids"]]
    assert docs == [{"docno": d["id"], "text": d["content"]} for d in documents]
    assert excluded == {"q1": {"leetcode/copy-0"}, "q2": set(), "q3": set()}  # "N/A" is no document

    reasoning = data.dataset("bright/leetcode/reasoning")  # the copy opened last, its reasoning field as queries
    assert reasoning.get_topics()["query"].tolist() == [e["reasoning"] for e in examples]
    assert data.corpus_id(reasoning) == data.corpus_id(ds)  # one corpus: one BM25 index
    assert data.excluded_ids(reasoning) == excluded
    assert data.corpus_stamp(ds)["corpus"] == data.corpus_id(ds)
    (tmp_path / "corpus.tsv").write_text("d1\tsome text\n")
    assert data.excluded_ids(data.dataset(str(tmp_path / "corpus.tsv"))) == {}  # not BRIGHT: nothing excluded


def test_the_parquet_and_jsonl_copies_read_alike(tmp_path):
    read = {form: _contents(data.bright_dataset("biology", bright_dir=write_bright_copy(tmp_path / form, form)))
            for form in ("parquet", "jsonl")}
    for parquet, jsonl in zip(read["parquet"], read["jsonl"]):
        assert (parquet.equals(jsonl) if hasattr(parquet, "equals") else parquet == jsonl)


def test_excluded_documents_leave_the_ranking_before_the_cut():
    import pandas as pd
    import pyterrier as pt
    run = pd.DataFrame({"qid": ["1"] * 4 + ["2"] * 2, "docno": ["a", "x", "b", "c", "x", "d"],
                        "score": [4.0, 3, 2, 1, 2, 1], "rank": [0, 1, 2, 3, 0, 1]})
    kept, removed = drop_excluded(run, {"1": {"x"}, "2": set()})
    assert removed == 1 and kept[["qid", "docno", "rank"]].values.tolist() == [
        ["1", "a", 0], ["1", "b", 1], ["1", "c", 2], ["2", "x", 0], ["2", "d", 1]]
    asked = []

    def retriever(depth):
        asked.append(depth)
        return pt.apply.generic(lambda q: run[run["rank"] < depth])
    top = excluding(retriever, {"1": {"x"}}, 2)(pd.DataFrame({"qid": ["1"], "query": ["q"]}))
    assert asked == [3] and top[top["qid"] == "1"]["docno"].tolist() == ["a", "b"]


def test_bad_copies_are_named_by_file_and_column_or_domain(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"'bright/physics': BRIGHT has no domain 'physics'; its domains: biology"):
        data.dataset("bright/physics")
    root = write_bright_copy(tmp_path / "copy", "parquet", domains=("biology",))
    with pytest.raises(FileNotFoundError, match=r"copy/examples: no pony-\*\.parquet .*lacks the domain 'pony'"):
        data.bright_dataset("pony", bright_dir=root)
    examples, documents = examples_and_documents("biology")
    write_records(root / "documents" / "biology-00000-of-00001.parquet", [{"id": d["id"]} for d in documents])
    with pytest.raises(FileFormatError, match=r"documents/biology-00000-of-00001.parquet: no column 'content'"):
        data.bright_dataset("biology", bright_dir=root)
    (root / "documents" / "biology-00000-of-00001.parquet").unlink()
    write_records(root / "documents" / "biology-00000-of-00001.jsonl", documents)
    write_records(root / "examples" / "biology-00001-of-00002.jsonl",
                  [{k: v for k, v in e.items() if k != "excluded_ids"} for e in examples])
    with pytest.raises(FileFormatError, match=r"examples/biology-00001-of-00002.jsonl:1: no column 'excluded_ids'"):
        data.bright_dataset("biology", bright_dir=root)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # pyarrow not installed
    with pytest.raises(ImportError, match=r"biology-00000-of-00001.parquet: .*pip install pyterrier-e2rank\[bright\]"):
        data.bright_dataset("biology", bright_dir=root)
