"""Indexes that grow: ``model.indexer(path, mode="append")`` adds documents in a new version of the index
(swapped in, the old one serving until then), found by every retriever, with no structure of the old
vectors served; duplicates, another model and a missing index refused; a failed append resumes."""
import json
import sys

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.index.artifact import E2RankIndex
from pyterrier_e2rank.model.provenance import IndexModelMismatch

pytest.importorskip("faiss")
pytestmark = pytest.mark.filterwarnings("ignore:IVF-PQ trained on")  # the small corpus here

BASE, NEW = 300, 12


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def query(tiny_qwen):
    return tiny_qwen.query_encoder()(pd.DataFrame({"qid": ["q1"], "query": ["appended gene therapy"]}))


@pytest.fixture
def base(tiny_qwen, tmp_path):
    vectors = _unit(np.random.default_rng(0), BASE, tiny_qwen.dim)
    return tiny_qwen.indexer(tmp_path / "index", corpus_stamp={"corpus": "base"}).index(
        [{"docno": f"d{i}", "doc_vec": v} for i, v in enumerate(vectors)])


RETRIEVERS = {
    "exact": lambda index: index.retriever(num_results=5),
    "flex flat": lambda index: index.faiss_flat_retriever() % 5,
    "flex hnsw": lambda index: index.faiss_hnsw_retriever(8, num_results=5),
    "flex ivf": lambda index: index.faiss_ivf_retriever(n_list=4, n_probe=4, num_results=5),
    "hnsw-fp16": lambda index: index.faiss_hnsw_fp16_retriever(neighbours=8, num_results=5),
    "ivfpq": lambda index: index.faiss_ivfpq_retriever(n_list=4, m=8, nbits=6, n_probe=4, rescore=50, num_results=5),
    "flat-fp16": lambda index: index.faiss_flat_fp16_retriever(num_results=5),
    "int8": lambda index: index.int8_retriever(num_results=5),
    "binary": lambda index: index.binary_retriever(num_results=5, rescore=50),
}


def test_an_appended_document_is_found_by_every_retriever_and_no_old_structure_is_served(tiny_qwen, base, query):
    for make in RETRIEVERS.values():  # every structure built from the old vectors, stored in the index
        assert "best" not in make(base)(query)["docno"].tolist()
    old_structures, old_source = base.structures(), base.source
    assert len(old_structures) >= 6
    rng = np.random.default_rng(1)
    added = [{"docno": f"n{i}", "doc_vec": v} for i, v in enumerate(_unit(rng, NEW, tiny_qwen.dim))]
    added.insert(5, {"docno": "best", "doc_vec": np.asarray(query["query_vec"][0])})
    grown = tiny_qwen.indexer(base.path, mode="append", chunk_size=4, corpus_stamp={"corpus": "new"}).index(added)
    assert len(grown) == BASE + NEW + 1 and grown.source != old_source
    assert list(grown.docnos())[BASE:] == [r["docno"] for r in added]
    np.testing.assert_array_equal(grown.vectors(["d7"]), base.vectors(["d7"]))
    assert grown.structures() == []  # none of the old vectors' structures is carried into the new version
    assert grown.corpus_stamp == {"appended_to": {"corpus": "base"}, "appended": {
        "corpus": {"corpus": "new"}, "doc_count": NEW + 1, "first_docno": "n0", "last_docno": f"n{NEW - 1}"}}
    for name, make in RETRIEVERS.items():
        out = make(E2RankIndex(base.path))(query)
        assert out["docno"].iloc[0] == "best", name
    assert {p.name for p in base.path.iterdir()} == {"docnos.npids", "pt_meta.json", "vecs.f4"} | {
        grown.structure_path(s).name for s in E2RankIndex(base.path).structures()}  # all of the new vectors
    assert "best" not in base.retriever(num_results=5)(query)["docno"].tolist()  # opened before: its version


def test_docnos_already_in_the_index_or_repeated_are_refused_by_name(tiny_qwen, base):
    before = sorted(p.name for p in base.path.parent.iterdir())
    with tiny_qwen.counting() as work:
        with pytest.raises(ValueError, match=r"docno 'd3' \(document 1 of the appended documents\) is already in"):
            tiny_qwen.indexer(base.path, mode="append").index([{"docno": "x", "text": "a"}, {"docno": "d3",
                                                                                              "text": "b"}])
        with pytest.raises(ValueError, match="duplicate docno: docno 'z' repeated: documents 0 and 1 of the appended"):
            tiny_qwen.indexer(base.path, mode="append").index([{"docno": "z", "text": "a"}, {"docno": "z",
                                                                                              "text": "b"}])
    assert work.texts == 0  # refused before their chunk was encoded
    assert len(E2RankIndex(base.path)) == BASE and E2RankIndex(base.path).source == base.source
    assert sorted(p.name for p in base.path.parent.iterdir() if not p.name.endswith(".chunks")) == before
    assert "z" not in base.docnos() and "d" not in base.docnos()  # docnos npids cannot parse are just absent


def test_another_model_or_dimension_or_no_index_is_refused(tiny_qwen, other_tiny_qwen_dir, minilm, base, tmp_path):
    from pyterrier_e2rank import E2Rank
    other = E2Rank(str(other_tiny_qwen_dir), batch_size=4)
    with pytest.raises(IndexModelMismatch, match=r"built with model '.*', not '.*' now in use: rebuild it with "
                                                 r"this model, or load the model it was built with \(differing, "
                                                 r"built vs now: .*weights_sha256"):
        other.indexer(base.path, mode="append").index([{"docno": "x", "text": "a"}])
    with pytest.raises(IndexModelMismatch, match=f"dimension {tiny_qwen.dim}.*dimension {minilm.dim}"):
        minilm.indexer(base.path, mode="append").index([{"docno": "x", "text": "a"}])
    with pytest.raises(FileNotFoundError, match="no E2Rank index at .* to append to"):
        tiny_qwen.indexer(tmp_path / "absent", mode="append").index([{"docno": "x", "text": "a"}])
    with pytest.raises(ValueError, match="choose one"), pytest.warns(DeprecationWarning):
        tiny_qwen.indexer(base.path, mode="append", overwrite=True)
    with pytest.raises(ValueError, match="mode='grow'"):
        tiny_qwen.indexer(base.path, mode="grow")
    assert E2RankIndex(base.path).source == base.source


def test_overwrite_true_is_the_deprecated_spelling_of_mode_overwrite(tiny_qwen, base):
    with pytest.raises(FileExistsError, match=r"already exists at .*; pass mode='overwrite'"):
        tiny_qwen.indexer(base.path).index([{"docno": "a", "text": "x"}, {"docno": "b", "text": "y"}])
    with pytest.warns(DeprecationWarning, match='overwrite=True is deprecated .*: use mode="overwrite"') as caught:
        indexer = tiny_qwen.indexer(base.path, overwrite=True)
    assert caught[0].filename == __file__  # names the caller
    assert indexer.mode == "overwrite" and "mode='overwrite'" in repr(indexer)
    assert list(indexer.index([{"docno": "a", "text": "x"}, {"docno": "b", "text": "y"}]).docnos()) == ["a", "b"]


def test_an_existing_index_is_refused_when_the_indexer_is_made_naming_both_modes(tiny_qwen, base):
    with pytest.raises(FileExistsError, match=r"already exists at .*; pass mode='overwrite' to replace it, "
                                              r"or mode='append'"):
        tiny_qwen.indexer(base.path)  # before any document is read
    assert tiny_qwen.indexer(base.path, mode="append").mode == "append"


def test_a_failed_append_leaves_the_index_and_resumes_after_its_committed_chunks(tiny_qwen, base):
    documents = [{"docno": f"n{i}", "text": f"new document {i} about virus {i % 3}"} for i in range(NEW)]

    def failing():
        yield from documents[:9]
        raise RuntimeError("the corpus reader failed")
    with pytest.raises(RuntimeError, match="reader failed"):
        tiny_qwen.indexer(base.path, mode="append", chunk_size=4).index(failing())
    assert E2RankIndex(base.path).source == base.source and len(E2RankIndex(base.path)) == BASE
    with tiny_qwen.counting() as work:
        grown = tiny_qwen.indexer(base.path, mode="append", chunk_size=4).index(documents)
    assert work.texts == NEW - 8  # chunks 0 and 1 were committed before the failure
    expected = tiny_qwen.indexer(base.path.parent / "fresh").index(documents)
    np.testing.assert_allclose(grown.vectors([d["docno"] for d in documents]), expected.np_vecs(), atol=1e-5)
    assert not (base.path.parent / f".{base.path.name}.chunks").exists()


def test_the_index_command_appends(tiny_qwen_dir, base, tmp_path, capsys):
    from pyterrier_e2rank.cli.main import main
    collection = tmp_path / "new.jsonl"
    collection.write_text("".join(json.dumps({"id": f"n{i}", "contents": f"text {i}"}) + "\n" for i in range(3)))
    assert main(["index", "--collection", str(collection), "--model", str(tiny_qwen_dir), "--output",
                 str(base.path), "--append", "--quiet", "--device", "cpu"]) == 0
    assert f"now holds {BASE + 3} documents" in capsys.readouterr().out
    assert list(E2RankIndex(base.path).docnos())[-3:] == ["n0", "n1", "n2"]
    with pytest.raises(SystemExit):
        main(["index", "--collection", str(collection), "--model", str(tiny_qwen_dir), "--output", str(base.path),
              "--append", "--overwrite"])
    assert "not allowed with argument" in capsys.readouterr().err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
