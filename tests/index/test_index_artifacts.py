"""The index artifact and what is derived from it (issues 16 and 17): structures stored for the vectors they
were built from and never written into another version of the directory, docnos looked up exactly,
FlexIndex's retrievers giving one value per cell, an overwrite that keeps the user's files, and the errors of
an open racing a rebuild, threads asking for one structure and IVF-PQ on a tiny corpus."""
import json
import os
import re
import threading

import numpy as np
import pandas as pd
import pytest
from pyterrier_dr import FlexIndex

from pyterrier_e2rank.testing import build_clustered_index, clustered
from pyterrier_e2rank.index import ann
from pyterrier_e2rank.index import artifact as index_module
from pyterrier_e2rank.index.artifact import E2RankIndex, IndexReplaced
from pyterrier_e2rank.index.indexer import IndexWriter
from pyterrier_e2rank.io import ArtifactLocked, writer_lock

pytest.importorskip("faiss")
DIM = 16
INDEX_FILES = ["docnos.npids", "pt_meta.json", "vecs.f4"]


def _write(path, docnos, vectors, *, overwrite=True) -> E2RankIndex:
    with IndexWriter(path, vectors.shape[1], {"model": "synthetic", "dim": vectors.shape[1]},
                     overwrite=overwrite) as writer:
        writer.add(docnos, vectors)
        return writer.finish()


def _queries(n: int, dim: int = DIM, seed: int = 1) -> pd.DataFrame:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return pd.DataFrame({"qid": [f"q{i}" for i in range(n)], "query_vec": list(vectors)})


def _top(frame: pd.DataFrame, k: int) -> dict:
    return frame[frame["rank"] < k].groupby("qid")["docno"].apply(set).to_dict()


# ---- 1. a structure knows the vectors it was built from ------------------------------------------

def test_an_index_opened_before_a_rebuild_never_stores_its_stale_structure(tmp_path):
    path = tmp_path / "index"
    stale, centres = build_clustered_index(path, num_docs=2000, dim=DIM, num_centres=20, seed=0)
    queries = pd.DataFrame({"qid": [f"q{i}" for i in range(20)],
                            "query_vec": list(clustered(np.random.default_rng(5), 20, DIM, centres))})
    before = stale.retriever(num_results=5)(queries)  # opened: its vectors are memory-mapped
    rebuilt, _ = build_clustered_index(path, num_docs=2000, dim=DIM, num_centres=20, seed=7)  # overwrite=True
    for build in (stale.faiss_hnsw_fp16_retriever, stale.faiss_hnsw_retriever, stale.faiss_ivfpq_retriever,
                  stale.corpus_graph):
        with pytest.raises(IndexReplaced, match=f"{path} was rebuilt after this E2RankIndex opened it"):
            build()
    assert sorted(os.listdir(path)) == INDEX_FILES  # nothing built from the old vectors landed in the new index
    pd.testing.assert_frame_equal(stale.retriever(num_results=5)(queries), before)  # the stale object stays whole
    fresh = E2RankIndex(path)
    exact = _top(fresh.retriever(num_results=5)(queries), 5)
    for retriever in (fresh.faiss_hnsw_fp16_retriever(num_results=5), fresh.faiss_hnsw_retriever(num_results=5)):
        ann_top = _top(retriever(queries), 5)
        assert np.mean([len(ann_top[q] & exact[q]) / 5 for q in exact]) >= 0.9


def test_a_structure_pyterrier_dr_stored_beside_the_vectors_is_never_used_and_overwritten(tmp_path):
    rng = np.random.default_rng(0)
    index = _write(tmp_path / "index", [f"d{i}" for i in range(300)], rng.standard_normal((300, DIM)).astype("f4"))
    meta = index.index_path / "pt_meta.json"  # as 0.3 wrote it, in pyterrier-dr's own format, which FlexIndex opens
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": "flex"}))
    FlexIndex(index.index_path, verbose=False).faiss_hnsw_retriever()  # pyterrier-dr itself, on our index
    (index.index_path / "hnsw_n-32_ef-40.faiss").write_bytes(b"not FAISS")  # would fail if it were read
    queries = _queries(3)
    ours = E2RankIndex(index.index_path).faiss_hnsw_retriever(num_results=5)(queries)
    assert _top(ours, 1) == _top(index.retriever(num_results=5)(queries), 1)
    assert E2RankIndex(index.index_path).structures() == ["hnsw_n-32_ef-40.faiss"]  # its own, stored apart
    _write(index.index_path, ["a", "b"], np.eye(2, DIM, dtype=np.float32))
    assert sorted(os.listdir(index.index_path)) == INDEX_FILES  # both were the index's own


def test_flex_structures_are_stored_once_and_read_back(tmp_path):
    index, _ = build_clustered_index(tmp_path / "index", num_docs=1500, dim=128, num_centres=10)
    queries = _queries(5, dim=128)
    first = {name: getattr(index, name)(num_results=10)(queries) for name in ("faiss_hnsw_retriever",
                                                                            "faiss_ivf_retriever")}
    assert index.structures() == ["hnsw_n-32_ef-40.faiss", "ivf_nlist-64_train-2496.faiss"]
    stored = {p: os.stat(index.index_path / p).st_mtime_ns for p in os.listdir(index.index_path)}
    graph_size = os.path.getsize(index.structure_path("hnsw_n-32_ef-40.faiss"))
    assert graph_size < os.path.getsize(index.index_path / "vecs.f4")  # the graph alone, as FlexIndex stores it
    fresh = E2RankIndex(index.index_path)
    for name, results in first.items():  # FAISS 1.15 cannot read back pyterrier-dr's own HNSW file
        pd.testing.assert_frame_equal(getattr(fresh, name)(num_results=10)(queries), results)
    assert {p: os.stat(index.index_path / p).st_mtime_ns for p in os.listdir(index.index_path)} == stored


def test_flex_flat_search_uses_the_vectors_the_object_opened(tmp_path):
    """Found here: FlexIndex's faiss_flat_retriever reads vecs.f4 by path, so an object opened before a
    rebuild paired the new vectors with its old docnos."""
    rng = np.random.default_rng(0)
    path = tmp_path / "index"
    stale = _write(path, [f"old{i}" for i in range(50)], rng.standard_normal((50, DIM)).astype(np.float32))
    queries = _queries(4)
    exact = stale.retriever(num_results=5)(queries)
    _write(path, [f"new{i}" for i in range(50)], rng.standard_normal((50, DIM)).astype(np.float32))
    flat = (stale.faiss_flat_retriever() % 5)(queries)
    assert flat["docno"].tolist() == exact["docno"].tolist()
    np.testing.assert_allclose(flat["score"], exact["score"], rtol=1e-5)


# ---- 2. identifiers kept exactly ---------------------------------------------------------------------

@pytest.fixture
def numeric(tmp_path) -> E2RankIndex:
    vectors = np.random.default_rng(3).standard_normal((20, DIM)).astype(np.float32)
    return _write(tmp_path / "numeric", [str(i) for i in range(20)], vectors)


#: Docnos npids stores in its hexdigest codec (a prefix and hex digits), with later ones of a shorter hex part:
#: npids 0.1.3 wrote them misaligned (an IndexError when read); SciFact's ids are of this kind.
HEX_DOCNOS = [["20000000", "30000000", "4983"], ["doc12345678", "doc22345678", "doc5"],
              [str(10000000 + i) for i in range(300)] + ["4983", "123456", "ab"]]


@pytest.mark.parametrize("docnos", HEX_DOCNOS, ids=["two", "prefixed", "after-a-block"])
def test_docnos_of_hex_digits_and_several_lengths_are_kept_and_found(tmp_path, docnos):
    vectors = np.random.default_rng(5).standard_normal((len(docnos), DIM)).astype(np.float32)
    index = _write(tmp_path / "hex", docnos, vectors)
    assert [str(d) for d in index.docnos().fwd[np.arange(len(docnos))]] == docnos
    np.testing.assert_array_equal(index.vectors(docnos[::-1]), vectors[::-1])
    before = _write(tmp_path / "before", docnos[:-1], vectors[:-1])  # as an append asks, docno by docno
    assert docnos[-1] not in before.docnos()  # npids: numpy's vectorize failed on the empty list of rows found
    with pytest.raises(KeyError, match=rf"1 docno\(s\) are not in the index.*\['{docnos[-1]}'\]"):
        before.vectors(docnos[-1:])


@pytest.mark.parametrize("asked", [["007"], ["7", "04"], ["+7"], [" 7"], ["x"]])
def test_numeric_docnos_are_looked_up_exactly(numeric, asked):
    bad = [d for d in asked if d != "7"]
    with pytest.raises(KeyError, match=rf"{len(bad)} docno\(s\) are not in the index at .*numeric: "
                                       rf"{re.escape(str(bad))}"):
        numeric.vectors(asked)
    frame = pd.DataFrame({"qid": "q", "docno": asked, "query_vec": [np.ones(DIM, np.float32)] * len(asked)})
    # a docno with whitespace is no identifier: the scorer's input check refuses it (ValueError) before any lookup
    for loader, whitespace in ((numeric.vec_loader(), KeyError), (numeric.np_vec_loader(), KeyError),
                               (numeric.np_scorer(), ValueError)):
        with pytest.raises(whitespace if " 7" in asked else KeyError, match=re.escape(repr(bad[0]))):
            loader(frame)
    assert "7" in numeric.docnos().inv and "07" not in numeric.docnos().inv


def test_the_reranker_refuses_a_candidate_that_only_parses_as_an_indexed_docno(tiny_qwen, tmp_path):
    docs = pd.DataFrame({"docno": [str(i) for i in range(6)], "text": [f"document number {i}" for i in range(6)]})
    index = tiny_qwen.indexer(tmp_path / "index").index(docs)
    candidates = pd.DataFrame({"qid": "q1", "query": "number", "docno": ["1", "04"], "text": ["one", "four"],
                               "score": [2.0, 1.0], "rank": [0, 1]})
    with pytest.raises(KeyError, match=r"\['04'\]"):
        tiny_qwen.reranker(index=index)(candidates)


def test_flex_scorers_look_vectors_up_by_docno_not_an_incoming_docid(numeric):
    """Found here: FlexIndex's scorers prefer a ``docid`` column, which after BM25 is the engine's own id."""
    query = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    frame = pd.DataFrame({"qid": "q", "docno": ["3", "5"], "docid": [17, 0], "query_vec": [query, query]})
    scored = numeric.np_scorer()(frame).set_index("docno")["score"]
    np.testing.assert_allclose(scored[["3", "5"]], numeric.vectors(["3", "5"]) @ query, rtol=1e-5)


@pytest.mark.parametrize("method", ["np_retriever", "torch_retriever", "faiss_hnsw_retriever", "faiss_ivf_retriever",
                                    "faiss_flat_retriever"])
def test_flex_retrievers_give_one_value_per_cell_for_a_single_hit(numeric, method):
    options = {} if method == "faiss_flat_retriever" else {"num_results": 1}
    retriever = getattr(numeric, method)(**options)
    out = (retriever % 1)(_queries(1))
    assert len(out) == 1
    row = out.iloc[0]
    assert type(row["docno"]) is str and isinstance(row["score"], float) and isinstance(row["rank"], (int, np.integer))
    assert row["docno"] in numeric.docnos() and row["rank"] == 0
    assert numeric.vec_loader()(out)["doc_vec"].iloc[0].shape == (DIM,)  # usable by the next stage
    assert retriever == getattr(numeric, method)(**options) and hash(retriever) == hash(getattr(numeric, method)(
        **options))


# ---- 5. an overwrite removes only what the index wrote ----------------------------------------------

def test_overwrite_refuses_the_users_own_files_and_keeps_them(numeric):
    path = numeric.index_path
    numeric.faiss_hnsw_retriever()  # ours: replaced with the index
    for name in ("notes.faiss", "my.graph", "corpusgraph_k16_backup", "hnsw_n-32_ef-40.faiss.bak"):
        (path / name).write_text("the user's")
        with pytest.raises(FileExistsError, match=f"not the E2Rank index's own \\({name}\\)"):
            _write(path, ["a", "b"], np.eye(2, DIM, dtype=np.float32))
        assert (path / name).read_text() == "the user's"
        os.unlink(path / name)
    _write(path, ["a", "b"], np.eye(2, DIM, dtype=np.float32))
    assert sorted(os.listdir(path)) == INDEX_FILES


# ---- issue 17: errors that name the problem ----------------------------------------------------------

def test_an_open_racing_a_rebuild_reads_the_new_version(tmp_path, monkeypatch):
    path = tmp_path / "index"
    _write(path, ["a", "b"], np.eye(2, DIM, dtype=np.float32))
    read = index_module._read_verified
    swaps = []

    def rebuilt_meanwhile(where, version):  # the directory was opened; a rebuild swaps in before its files are read
        if len(swaps) < limit:
            swaps.append(_write(path, ["c", "d", "e"], np.eye(3, DIM, dtype=np.float32)))
        return read(where, version)
    monkeypatch.setattr(index_module, "_read_verified", rebuilt_meanwhile)
    limit = 1
    assert list(E2RankIndex(path).docnos()) == ["c", "d", "e"]
    limit, swaps[:] = 10, []
    with pytest.raises(IndexReplaced, match=f"{path} was replaced by a rebuild while it was being opened"):
        E2RankIndex(path).payload()


def test_threads_asking_for_one_structure_wait_for_one_build(tmp_path, monkeypatch):
    index, _ = build_clustered_index(tmp_path / "index", num_docs=1000, dim=DIM, num_centres=5)
    threads_count = 4
    asked = threading.Semaphore(0)
    add_all, thread_lock = ann.add_all, index_module.thread_lock

    def counted_lock(target):
        asked.release()
        return thread_lock(target)

    def build_when_all_asked(idx, structure, encode):  # the first builder waits until every thread asked for the lock
        for _ in range(threads_count):
            assert asked.acquire(timeout=60)
        add_all(idx, structure, encode)
    monkeypatch.setattr(index_module, "thread_lock", counted_lock)
    monkeypatch.setattr(ann, "add_all", build_when_all_asked)
    results, errors = {}, {}

    def ask(i):
        try:
            results[i] = E2RankIndex(index.index_path).faiss_flat_fp16_retriever(num_results=5)(_queries(3))
        except Exception as e:  # each thread's own outcome
            errors[i] = e
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == {}
    for i in range(1, threads_count):
        pd.testing.assert_frame_equal(results[i], results[0])


def test_a_second_thread_writing_an_artifact_is_told_it_is_a_thread(tmp_path):
    target = tmp_path / "run.txt"
    outcome = {}

    def second():
        try:
            with writer_lock(target):
                outcome["error"] = None
        except ArtifactLocked as e:
            outcome["error"] = str(e)
    with writer_lock(target):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert "another thread of this process is writing" in outcome["error"]
    assert "another process" not in outcome["error"]


def test_ivfpq_defaults_on_a_tiny_index_say_what_the_corpus_lacks(tmp_path):
    tiny = _write(tmp_path / "tiny", [f"d{i}" for i in range(10)], np.eye(10, DIM, dtype=np.float32))
    with pytest.raises(ValueError, match=r"nbits=8 trains 2\*\*nbits = 256 centroids .* holds 10 documents: choose "
                                         r"nbits <= 3, or exact search") as caught:
        tiny.faiss_ivfpq_retriever()
    assert "train_sample" not in str(caught.value)
