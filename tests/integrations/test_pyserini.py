"""Real Pyserini (Lucene BM25, FaissSearcher) with the E2Rank adapters, on 300 SciFact documents."""
import gzip
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pyterrier_e2rank import E2RankIndex
from pyterrier_e2rank.pyserini import (E2RankPyseriniDocumentEncoder, E2RankPyseriniQueryEncoder, HitReranker,
                                       search_batch, write_faiss_index)

pytest.importorskip("pyserini", reason="Pyserini is not installed (scripts/install-pyserini.sh installs it)")
QUERIES = {"1": "0-dimensional biomaterials show inductive properties.",
           "13": "5% of perinatal mortality is due to low birth weight.",
           "36": "A deficiency of vitamin B12 increases blood levels of homocysteine."}


@pytest.fixture(scope="module")
def collection(tmp_path_factory, shared_path):
    directory = tmp_path_factory.mktemp("collection")
    with gzip.open(shared_path("data", "scifact", "corpus.jsonl.gz"), "rt") as corpus, \
            open(directory / "docs.jsonl", "w") as out:
        for _, line in zip(range(300), corpus):
            doc = json.loads(line)
            out.write(json.dumps({"id": doc["_id"], "contents": f"{doc['title']} {doc['text']}"}) + "\n")
    return directory


@pytest.fixture(scope="module")
def lucene_index(collection, tmp_path_factory):
    index = tmp_path_factory.mktemp("lucene")
    subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection",
                    "--input", str(collection), "--index", str(index), "--generator",
                    "DefaultLuceneDocumentGenerator", "--threads", "1", "--storeRaw"],
                   check=True, capture_output=True)
    return index


@pytest.fixture(scope="module")
def bm25_hits(lucene_index):
    from pyserini.search.lucene import LuceneSearcher
    searcher = LuceneSearcher(str(lucene_index))
    searcher.set_bm25(0.9, 0.4)
    return {qid: searcher.search(query, k=100) for qid, query in QUERIES.items()}


@pytest.fixture(scope="module")
def vector_indexes(tiny_qwen, collection, tmp_path_factory):
    root = tmp_path_factory.mktemp("vectors")
    write_faiss_index(tiny_qwen, collection, root / "faiss", pyterrier_index=root / "e2rank")
    return root / "faiss", E2RankIndex(root / "e2rank")


def texts_of(collection):
    with open(collection / "docs.jsonl") as lines:
        return {d["id"]: d["contents"] for d in map(json.loads, lines)}



@pytest.fixture(autouse=True)
def openmp_threads_kept():
    """Pyserini's own ``FaissSearcher.search`` sets the process's OpenMP threads (torch's too) to its
    ``threads``; put them back so later tests run as a fresh process would."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

@pytest.mark.slow
def test_reranked_lucene_hits_equal_the_pyterrier_reranker(tiny_qwen, lucene_index, collection, bm25_hits):
    reranked = HitReranker(tiny_qwen, lucene_index).rerank_batch(
        [(qid, QUERIES[qid], hits) for qid, hits in bm25_hits.items()])
    texts = texts_of(collection)
    frame = pd.DataFrame([{"qid": qid, "query": QUERIES[qid], "docno": h.docid, "text": texts[h.docid],
                           "score": h.score} for qid, hits in bm25_hits.items() for h in hits])
    expected = tiny_qwen.reranker()(frame)
    for qid, hits in reranked.items():
        assert len(hits) == len(bm25_hits[qid]) > 20
        want = expected[expected["qid"] == qid]
        assert [h.docid for h in hits] == want["docno"].tolist()
        np.testing.assert_allclose([h.score for h in hits], want["score"], atol=1e-6)


def test_a_docid_missing_from_the_lucene_index_is_named(lucene_index):
    from pyterrier_e2rank.pyserini import text_lookup
    with pytest.raises(KeyError, match=f"docid 'no-such-doc' is not in the Lucene index {lucene_index}"):
        text_lookup(lucene_index)("no-such-doc")


@pytest.mark.slow
def test_stored_vectors_give_the_same_scores_in_one_pass(tiny_qwen, lucene_index, bm25_hits, vector_indexes):
    faiss_dir, e2rank_index = vector_indexes
    batch = [(qid, QUERIES[qid], hits) for qid, hits in bm25_hits.items()]
    fresh = HitReranker(tiny_qwen, lucene_index).rerank_batch(batch)
    for vectors in (faiss_dir, e2rank_index):
        reranker = HitReranker(tiny_qwen, lucene_index, vectors=vectors)
        stored = reranker.rerank_batch(batch)
        assert reranker.reranker.stats.texts == len(QUERIES)  # one prompt per query, no document encoded
        for qid in QUERIES:
            np.testing.assert_allclose([h.score for h in stored[qid]], [h.score for h in fresh[qid]], atol=1e-5)


def test_faiss_searcher_matches_the_pyterrier_dense_retriever(tiny_qwen, vector_indexes):
    from pyserini.search.faiss import FaissSearcher
    faiss_dir, e2rank_index = vector_indexes
    encoder = E2RankPyseriniQueryEncoder(tiny_qwen)
    searcher = FaissSearcher(str(faiss_dir), encoder)
    ours = tiny_qwen.retriever(e2rank_index, num_results=10)(
        pd.DataFrame({"qid": list(QUERIES), "query": list(QUERIES.values())}))
    threads = torch.get_num_threads()
    batched = search_batch(searcher, encoder, list(QUERIES.values()), list(QUERIES), k=10)
    assert torch.get_num_threads() == threads  # Pyserini set FAISS's (and so torch's) OpenMP threads to 1
    for qid, query in QUERIES.items():
        single = [h.docid for h in searcher.search(query, k=10)]
        assert single == ours[ours["qid"] == qid]["docno"].tolist()
        assert [h.docid for h in batched[qid]] == single


def test_document_encoder_accepts_pyserini_keywords(tiny_qwen):
    encoder = E2RankPyseriniDocumentEncoder(tiny_qwen)
    vectors = encoder.encode(["a text", "another"], titles=["T1", "T2"], max_length=512, fp16=False)
    np.testing.assert_allclose(vectors, tiny_qwen.encode_docs(["T1 a text", "T2 another"]), atol=1e-6)
    assert E2RankPyseriniQueryEncoder(tiny_qwen).encode_batch(["q", "r"]).shape == (2, tiny_qwen.dim)


@pytest.mark.slow
def test_importing_the_adapter_starts_no_jvm():
    code = ("import sys, pyterrier_e2rank, pyterrier_e2rank.pyserini; "
            "assert 'jnius' not in sys.modules and 'pyserini' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
