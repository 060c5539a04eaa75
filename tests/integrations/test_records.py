"""One reader per format: every command reads a document or query file through ``core.records``, so a
file one accepts (each key spelling of ``KEYS``) every other accepts with the same ids and texts, and a
bad record is refused by all of them naming ``file:line``."""
import json

import pandas as pd
import pytest

from pyterrier_e2rank.cli.runs import read_topics
from pyterrier_e2rank.io import FileFormatError
from pyterrier_e2rank.records import KEYS, read_records
from pyterrier_e2rank.model.text import join_title
from pyterrier_e2rank.data import DocumentText, corpus_iter, dataset
from pyterrier_e2rank.pyserini import read_jsonl_collection, text_lookup

DOCS = {"d0": ("Gene therapy", "a trial of gene therapy"), "d1": ("", "virus immune response"), "7": (None, "cells")}
QUERIES = {"q1": "gene therapy trial", "q2": "virus immune response", "3": "blood brain cell"}


def _dataset_texts(path) -> dict:
    """The corpus as ``e2rank index --dataset``/``experiment``/BM25 read it, and as ``DocumentText`` adds it."""
    ds = dataset(path)
    texts = {d["docno"]: d["text"] for d in corpus_iter(ds)}
    frame = DocumentText(ds)(pd.DataFrame({"qid": "q", "docno": list(texts)}))
    assert dict(zip(frame["docno"], frame["text"])) == texts
    return texts


def _lookup_texts(path) -> dict:
    """The texts ``rerank-run --docs`` and ``HitReranker`` look up."""
    lookup = text_lookup(path)
    return {docno: lookup(docno) for docno in DOCS}


DOCUMENT_READERS = {
    "core.records": lambda path: {r["id"]: r["text"] for _, r in read_records(path, "document")},
    "Pyserini collection (index --collection, write_faiss_index)": lambda path: {
        d["docno"]: d["text"] for d in read_jsonl_collection(path)},
    "text lookup (rerank-run --docs)": _lookup_texts,
    "data.dataset (index --dataset, experiment, BM25, build-data)": _dataset_texts,
}
QUERY_READERS = {
    "core.records": lambda path, corpus: {r["id"]: r["text"] for _, r in read_records(path, "query")},
    "read_topics (rerank-run --topics)": lambda path, corpus: dict(read_topics(str(path)).itertuples(index=False)),
    "data.dataset topics= (experiment)": lambda path, corpus: dict(
        dataset(corpus, topics=path).get_topics()[["qid", "query"]].itertuples(index=False)),
}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _doc_record(id_key, text_key, docno, title, text, with_title):
    record = {id_key: int(docno) if docno.isdigit() else docno, text_key: text}
    if with_title and title is not None:
        record["title"] = title
    return record


@pytest.mark.parametrize("id_key", KEYS["document"]["id"])
@pytest.mark.parametrize("text_key", KEYS["document"]["text"])
def test_every_reader_takes_every_document_key_alike(tmp_path, id_key, text_key):
    with_title = KEYS["document"]["id"].index(id_key) % 2 == 0  # titles with half the id keys
    path = _write_jsonl(tmp_path / f"corpus-{id_key}-{text_key}.jsonl",
                        [_doc_record(id_key, text_key, d, t, x, with_title) for d, (t, x) in DOCS.items()])
    expected = {d: join_title(t if with_title else None, x) for d, (t, x) in DOCS.items()}
    for name, reader in DOCUMENT_READERS.items():
        assert reader(path) == expected, name


@pytest.mark.parametrize("id_key", KEYS["query"]["id"])
@pytest.mark.parametrize("text_key", KEYS["query"]["text"])
def test_every_reader_takes_every_query_key_alike(tmp_path, id_key, text_key):
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d0", "text": "a"}])
    path = _write_jsonl(tmp_path / f"queries-{id_key}-{text_key}.jsonl",
                        [{id_key: int(q) if q.isdigit() else q, text_key: t} for q, t in QUERIES.items()])
    for name, reader in QUERY_READERS.items():
        assert reader(path, corpus) == QUERIES, name


def test_several_keys_that_agree_are_one_id(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"_id": "d0", "docid": "d0", "doc_id": "d0", "contents": "a", "text": "a"}])
    for name, reader in DOCUMENT_READERS.items():
        if name != "text lookup (rerank-run --docs)":
            assert reader(path) == {"d0": "a"}, name


BAD_DOCUMENTS = {
    "two id keys that disagree": ({"_id": "d1", "id": "d2", "text": "b"}, r"document's id keys disagree"),
    "no id": ({"title": "t", "text": "b"}, r"a document needs one of the keys \['_id', 'id', 'docno', 'docid', "
                                          r"'doc_id'\] for its id"),
    "no text": ({"_id": "d1", "title": "t"}, r"a document needs one of the keys \['text', 'contents'\]"),
    "two texts that disagree": ({"_id": "d1", "text": "b", "contents": "c"}, r"document's text keys disagree"),
    "a repeated docno": ({"docno": "d0", "text": "b"}, r"docno 'd0' repeated \(first on line 1\)"),
    "a null text": ({"_id": "d1", "title": "t", "contents": None}, r"document 'd1' has no text \(null\)"),
    "a text that is a number": ({"_id": "d1", "text": 5}, r"the text of document 'd1' is a int, not a string"),
    "a title that is a list": ({"_id": "d1", "title": ["t"], "text": "b"}, r"the title of document 'd1' is a list"),
    "a docno that is a list": ({"docno": ["d1"], "text": "b"}, r"is a list \(\['d1'\]\), not one identifier"),
    "a docno that is a float": ({"docno": 1.5, "text": "b"}, r"is a float \(1.5\)"),
}


@pytest.mark.parametrize("bad", BAD_DOCUMENTS)
def test_every_reader_refuses_a_bad_document_naming_file_and_line(tmp_path, bad):
    record, message = BAD_DOCUMENTS[bad]
    path = _write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d0", "text": "a"}, record])
    for name, reader in DOCUMENT_READERS.items():
        with pytest.raises(FileFormatError, match=rf"corpus.jsonl:2\b.*{message}"):
            reader(path)


BAD_QUERIES = {
    "two id keys that disagree": ({"_id": "q2", "qid": "q3", "text": "b"}, r"query's id keys disagree"),
    "no id": ({"text": "b"}, r"a query needs one of the keys \['_id', 'id', 'qid', 'query_id'\] for its id"),
    "no text": ({"_id": "q2", "title": "b"}, r"a query needs one of the keys \['text', 'query'\]"),
    "an empty text": ({"_id": "q2", "query": " "}, r"the query of qid 'q2' is empty"),
    "a repeated qid": ({"query_id": "q1", "text": "b"}, r"qid 'q1' repeated \(first on line 1\)"),
    "a null text": ({"_id": "q2", "query": None}, r"query 'q2' has no text \(null\)"),
    "a text that is a list": ({"_id": "q2", "text": ["b"]}, r"the text of query 'q2' is a list"),
    "a qid that is a boolean": ({"qid": True, "text": "b"}, r"is a boolean \(True\)"),
}


@pytest.mark.parametrize("bad", BAD_QUERIES)
def test_every_reader_refuses_a_bad_query_naming_file_and_line(tmp_path, bad):
    record, message = BAD_QUERIES[bad]
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d0", "text": "a"}])
    path = _write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "a"}, record])
    for name, reader in QUERY_READERS.items():
        with pytest.raises(FileFormatError, match=rf"queries.jsonl:2\b.*{message}"):
            reader(path, corpus)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_every_reader_refuses_an_empty_file_naming_it(tmp_path, content):
    """An empty corpus ended in a TypeError deep in ir_datasets (``e2rank index``), an empty topics file in
    an experiment of no queries."""
    (tmp_path / "corpus.jsonl").write_text(content)
    for name, reader in DOCUMENT_READERS.items():
        with pytest.raises(FileFormatError, match=r"corpus.jsonl: the file holds no document \(it is empty\)"):
            reader(tmp_path / "corpus.jsonl")
    corpus = _write_jsonl(tmp_path / "c.jsonl", [{"_id": "d0", "text": "a"}])
    (tmp_path / "queries.tsv").write_text(content)
    for name, reader in QUERY_READERS.items():
        with pytest.raises(FileFormatError, match=r"queries.tsv: the file holds no query"):
            reader(tmp_path / "queries.tsv", corpus)
