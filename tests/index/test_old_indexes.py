"""An index written by pyterrier_e2rank 0.3.2 (``tests/fixtures/indexes/0.3.2``; its README says how it was made,
with the ``tiny_qwen`` fixture's model) opens, searches with its model, refuses another, is appended to and
overwritten; its 0.3 structures (beside the vectors, with a ``.source.json`` record) are never used: each is
built again, for the vectors' digest."""
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank import E2Rank, E2RankIndex, IndexModelMismatch

pytest.importorskip("faiss")

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "indexes" / "0.3.2" / "tiny-qwen3.e2rank"
DOCS = [{"docno": f"d{i}", "text": f"document {i} about {topic}"}
        for i, topic in enumerate(["gene therapy", "virus", "protein folding", "climate", "vaccines"] * 4)]
OLD_STRUCTURES = ["flat_fp16.faiss", "hnsw_n-8_ef-40.faiss"]
INDEX_FILES = ["docnos.npids", "pt_meta.json", "vecs.f4"]


@pytest.fixture
def old(tmp_path) -> Path:
    return Path(shutil.copytree(OLD, tmp_path / "old.e2rank"))


@pytest.fixture
def queries(tiny_qwen):
    return tiny_qwen.query_encoder()(pd.DataFrame({"qid": ["q1", "q2"], "query": ["protein folding", "virus"]}))


def test_it_opens_and_searches_with_its_model_and_refuses_another(tiny_qwen, other_tiny_qwen_dir, old, queries):
    index = E2RankIndex(old)
    index.check_model(tiny_qwen)
    stored = index.vectors([d["docno"] for d in DOCS])
    np.testing.assert_allclose(stored, tiny_qwen.encode_docs([d["text"] for d in DOCS]), atol=1e-4)
    out = tiny_qwen.retriever(index, num_results=3)(queries[["qid", "query"]])
    for qid, query_vec in zip(queries["qid"], queries["query_vec"]):
        expected = [DOCS[i]["docno"] for i in np.argsort(-(stored @ query_vec), kind="stable")[:3]]
        assert out[out["qid"] == qid]["docno"].tolist() == expected
    other = E2Rank(str(other_tiny_qwen_dir), batch_size=4)
    with pytest.raises(IndexModelMismatch, match=r"built with model '.*', not '.*' now in use: rebuild it with "
                                                 r"this model, or load the model it was built with \(differing, "
                                                 r"built vs now: .*weights_sha256"):
        index.check_model(other)
    with pytest.raises(IndexModelMismatch):
        other.retriever(index)(queries[["qid", "query"]])


def test_its_03_structures_are_built_again_never_used(old, queries):
    for name in OLD_STRUCTURES:  # were they read, FAISS would fail on these bytes
        (old / name).write_bytes(b"not a FAISS structure")
    index = E2RankIndex(old)
    assert index.structures() == []
    exact = index.retriever(num_results=5)(queries)
    for retriever in (index.faiss_hnsw_retriever(8, num_results=5), index.faiss_flat_fp16_retriever(num_results=5)):
        assert retriever(queries)["docno"].tolist()[:1] == exact["docno"].tolist()[:1]
    assert index.structures() == OLD_STRUCTURES  # stored again, for these vectors
    assert E2RankIndex(old).structures() == OLD_STRUCTURES
    assert all((old / name).read_bytes() == b"not a FAISS structure" for name in OLD_STRUCTURES)


def test_it_is_appended_to_without_its_structures(tiny_qwen, old, queries):
    grown = tiny_qwen.indexer(old, mode="append").index([{"docno": "new", "text": "a new document"}])
    assert list(grown.docnos()) == [d["docno"] for d in DOCS] + ["new"]
    assert sorted(os.listdir(old)) == INDEX_FILES  # the 0.3 structures are not carried over
    assert len(grown.faiss_flat_fp16_retriever(num_results=21)(queries)) == 2 * 21


def test_an_overwrite_removes_its_03_structures(tiny_qwen, old):
    with pytest.raises(FileExistsError, match="mode='overwrite'"):
        tiny_qwen.indexer(old).index(DOCS[:3])
    tiny_qwen.indexer(old, mode="overwrite").index(DOCS[:3])
    assert sorted(os.listdir(old)) == sorted(INDEX_FILES + ["text.offsets", "text.utf8"])  # now with its text


def test_it_keeps_no_text_and_says_how_to_give_it(tiny_qwen, old):
    index = E2RankIndex(old)
    with pytest.raises(ValueError, match=r"keeps no document text.*get_text.*DocumentText.*mode='overwrite'"):
        index.text_loader()
    candidates = tiny_qwen.retriever(index, num_results=5)(pd.DataFrame({"qid": ["q1"], "query": ["virus"]}))
    with pytest.raises(ValueError, match="the frame has no 'text' column, and the index .* keeps no document text"):
        tiny_qwen.reranker(index)(candidates)
    texts = {d["docno"]: d["text"] for d in DOCS}
    reranked = tiny_qwen.reranker(index)(candidates.assign(text=candidates["docno"].map(texts)))
    assert sorted(reranked["docno"]) == sorted(candidates["docno"])  # the frame's text serves as before
