"""The documents' text kept in the index (``text.utf8``, ``text.offsets``): written with the vectors, served by
``index.text_loader()`` (``pt.text.get_text``), covered by the digest, appended, replaced, resumed."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_e2rank import E2RankIndex
from pyterrier_e2rank.index.indexer import IndexWriter
from pyterrier_e2rank.io import CorruptArtifact

DOCS = [{"docno": f"d{i}", "text": f"document {i} über gene {i % 3} 🧬 and virus {i % 5}"} for i in range(12)]
DOCS[4]["text"] = "   "  # an empty document: kept as the empty text it was embedded as
TEXTS = {d["docno"]: d["text"] if d["text"].strip() else "" for d in DOCS}
TEXT_FILES = {"text.utf8", "text.offsets"}
pytestmark = pytest.mark.filterwarnings("ignore:1 document\\(s\\) with empty")


@pytest.fixture(scope="module")
def index(tiny_qwen, tmp_path_factory):
    return tiny_qwen.indexer(tmp_path_factory.mktemp("text") / "dense", chunk_size=5).index(DOCS)


def test_get_text_serves_the_stored_text_by_docno(index):
    asked = ["d7", "d4", "d0", "d7", "d11"]
    out = pt.text.get_text(index)(pd.DataFrame({"qid": "q", "docno": asked, "score": range(5)}))
    assert out["text"].tolist() == [TEXTS[d] for d in asked] and out["score"].tolist() == list(range(5))
    assert index.text_loader("text")(pd.DataFrame({"docno": ["d1"]}))["text"].tolist() == [TEXTS["d1"]]
    assert len(index.text_loader()(pd.DataFrame({"docno": pd.Series(dtype=str)}))) == 0
    assert TEXT_FILES <= set(os.listdir(index.path))


def test_unknown_docnos_and_fields_are_named(index):
    with pytest.raises(ValueError, match=r"2 docno\(s\) are not in the index .*\['d99', 'D1'\]"):
        index.text_loader()(pd.DataFrame({"docno": ["d1", "d99", "D1"]}))
    with pytest.raises(ValueError, match="stores the text field 'text', not \\['title'\\]"):
        index.text_loader("title")


def test_the_digest_covers_the_text_and_an_index_without_text_keeps_its_digest(tmp_path):
    vectors = np.eye(3, dtype=np.float32)

    def source(name, texts):
        with IndexWriter(tmp_path / name, 3, {"model": "m"}) as writer:
            writer.add(["a", "b", "c"], vectors, texts)
            return writer.finish().source

    plain = source("plain", None)
    assert source("one", ["x", "y", "z"]) not in (plain, source("other", ["x", "y", "Z"]))
    from pyterrier_e2rank.index.chunks import docnos_digest
    import hashlib
    assert plain == "sha256:" + docnos_digest(hashlib.sha256(vectors.tobytes()), ["a", "b", "c"])  # as before


def test_an_index_keeps_the_text_of_all_its_documents_or_none(tiny_qwen, tmp_path):
    with IndexWriter(tmp_path / "mixed", 2, {"model": "m"}) as writer:
        writer.add(["a", "b"], np.ones((2, 2), np.float32), ["x", "y"])
        with pytest.raises(ValueError, match="documents 2..2 come without text"):
            writer.add(["c"], np.ones((1, 2), np.float32))
    vectors = tiny_qwen.doc_encoder()(pd.DataFrame(DOCS[6:]))
    mixed = [{"docno": r.docno, "doc_vec": r.doc_vec} for r in vectors.itertuples()] + DOCS[:6]
    with pytest.raises(ValueError, match="some carry 'text' and some only 'doc_vec'.*store_text=False"):
        tiny_qwen.indexer(tmp_path / "auto", chunk_size=6).index(mixed)
    with pytest.raises(ValueError, match="docno 'd6' has no 'text'.*store_text=True"):
        tiny_qwen.indexer(tmp_path / "required", chunk_size=6, store_text=True).index(mixed)
    assert not (tmp_path / "required").exists()


def test_vectors_with_text_keep_it_and_vectors_alone_keep_none(tiny_qwen, index, tmp_path):
    encoded = tiny_qwen.doc_encoder()(pd.DataFrame(DOCS[5:]))  # docno, text, doc_vec
    with_text = tiny_qwen.indexer(tmp_path / "with").index(encoded.to_dict("records"))
    assert with_text.texts(["d7", "d5"]) == [TEXTS["d7"], TEXTS["d5"]]
    alone = tiny_qwen.indexer(tmp_path / "alone").index(index.get_corpus_iter(verbose=False))
    assert not TEXT_FILES & set(os.listdir(alone.path))
    with pytest.raises(ValueError, match="keeps no document text"):
        alone.texts(["d1"])


def test_store_text_false_writes_none_and_an_overwrite_removes_them(tiny_qwen, tmp_path):
    path = tmp_path / "dense"
    tiny_qwen.indexer(path).index(DOCS)
    without = tiny_qwen.indexer(path, mode="overwrite", store_text=False).index(DOCS)
    assert sorted(os.listdir(path)) == ["docnos.npids", "pt_meta.json", "vecs.f4"]
    with pytest.raises(ValueError, match=r"\(store_text=False"):
        pt.text.get_text(without)


def test_append_adds_the_new_documents_text(tiny_qwen, tmp_path):
    path = tmp_path / "dense"
    first = tiny_qwen.indexer(path).index(DOCS[:6])
    first_source = first.source
    grown = tiny_qwen.indexer(path, mode="append", chunk_size=4).index(DOCS[6:])
    assert grown.texts([d["docno"] for d in DOCS][::-1]) == [TEXTS[d["docno"]] for d in DOCS][::-1]
    assert first.texts(["d5"]) == [TEXTS["d5"]] and grown.source != first_source
    vectors = [{"docno": "v1", "doc_vec": grown.vectors(["d1"])[0]}]
    with pytest.raises(ValueError, match="docno 'v1' has no 'text'"):
        tiny_qwen.indexer(path, mode="append").index(vectors)
    plain = tiny_qwen.indexer(tmp_path / "plain", store_text=False).index(DOCS[:6])
    tiny_qwen.indexer(plain, mode="append").index(vectors)  # an index without text stays without
    with pytest.raises(ValueError, match="keeps no text, so its appended documents cannot"):
        tiny_qwen.indexer(plain, mode="append", store_text=True).index(DOCS[6:])


def test_a_failed_overwrite_keeps_the_old_text_and_a_restart_resumes_with_it(tiny_qwen, tmp_path):
    path = tmp_path / "dense"
    old = tiny_qwen.indexer(path).index(DOCS)
    renamed = [{"docno": d["docno"], "text": d["text"].upper()} for d in DOCS]

    def failing(records, after):
        for i, record in enumerate(records):
            if i == after:
                raise RuntimeError("the corpus failed")
            yield record

    with pytest.raises(RuntimeError, match="the corpus failed"):
        tiny_qwen.indexer(path, mode="overwrite", chunk_size=4).index(failing(renamed, 9))
    assert E2RankIndex(path).source == old.source and E2RankIndex(path).texts(["d1"]) == [TEXTS["d1"]]
    chunks = sorted(p.name for p in (tmp_path / ".dense.chunks").iterdir() if p.suffix == ".json")
    assert len(chunks) == 2  # two chunks committed, with their text
    new = tiny_qwen.indexer(path, mode="overwrite", chunk_size=4).index(renamed)
    assert new.texts([d["docno"] for d in DOCS]) == [d["text"].upper() if d["text"].strip() else ""
                                                     for d in DOCS]


def test_a_damaged_text_file_is_named(tiny_qwen, tmp_path):
    path = tmp_path / "dense"
    tiny_qwen.indexer(path).index(DOCS)
    with open(Path(path) / "text.utf8", "r+b") as damaged:
        damaged.truncate(10)
    with pytest.raises(CorruptArtifact, match=f"the index at {path} is damaged: text.offsets .* 10 bytes"):
        E2RankIndex(path).texts(["d1"])
