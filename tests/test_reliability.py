"""Reliability of the core: model identity, atomic and exclusive index writes, indexes verified when
opened, identifiers and values kept exactly or refused, arguments checked by range, errors by name."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from pyterrier_e2rank import E2Rank, E2RankIndex, IndexModelMismatch
from pyterrier_e2rank.io import ArtifactLocked, CorruptArtifact

DOCS = [{"docno": f"d{i}", "text": f"document {i} about gene {i % 7} therapy and virus {i % 5}"} for i in range(30)]
QUERY = pd.DataFrame({"qid": ["q1"], "query": ["gene therapy"]})


@pytest.fixture()
def built(tiny_qwen, tmp_path):
    """A small index, and its files' bytes to compare with afterwards."""
    path = tmp_path / "dense"
    tiny_qwen.indexer(path).index(DOCS)
    return path, _snapshot(path)


def _snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _retrieves(model, path):
    out = model.retriever(E2RankIndex(path), num_results=5)(QUERY)
    return out["docno"].tolist()


# ---- 1. model identity -----------------------------------------------------------------------------

def test_fingerprint_sees_one_changed_weight_and_not_the_load_dtype(tiny_qwen_dir, tiny_qwen, tmp_path):
    from transformers import AutoModel
    backbone = AutoModel.from_pretrained(tiny_qwen_dir)
    with torch.no_grad():
        weight = backbone.layers[1].mlp.down_proj.weight
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(1.0))  # one float32 ulp in one layer
    changed = tmp_path / "changed"
    backbone.save_pretrained(changed)
    tiny_qwen.tokenizer.save_pretrained(changed)
    assert E2Rank(str(changed)).fingerprint()["weights_sha256"] != tiny_qwen.fingerprint()["weights_sha256"]
    in_bf16 = E2Rank(str(tiny_qwen_dir), dtype=torch.bfloat16)
    assert in_bf16.fingerprint() == tiny_qwen.fingerprint()


def test_one_step_fine_tuned_checkpoint_is_refused_on_the_base_index(fine_tuned_qwen_dir, built):
    tuned = E2Rank(str(fine_tuned_qwen_dir))
    with pytest.raises(IndexModelMismatch, match="weights_sha256"):
        tuned.reranker(index=E2RankIndex(built[0]))
    with pytest.raises(IndexModelMismatch):
        tuned.retriever(built[0])


def test_index_of_an_older_fingerprint_says_to_rebuild(tiny_qwen, built):
    path, _ = built
    meta = json.loads((path / "pt_meta.json").read_text())
    del meta["e2rank"]["encoder"]["fingerprint_version"]
    (path / "pt_meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexModelMismatch, match="older pyterrier_e2rank"):
        E2RankIndex(path).check_model(tiny_qwen)


# ---- 2. atomic, exclusive writes -------------------------------------------------------------------

_KILLED_REBUILD = """
import os, signal, sys
from pyterrier_e2rank import E2Rank
model = E2Rank(sys.argv[1], batch_size=4)
def corpus():
    for i in range(40):
        if i == 25:
            os.kill(os.getpid(), signal.SIGKILL)
        yield {"docno": f"new{i}", "text": f"another text {i}"}
model.indexer(sys.argv[2], mode="overwrite", verbose=False).index(corpus())
"""


@pytest.mark.slow
def test_sigkill_during_an_overwrite_leaves_the_old_index(tiny_qwen_dir, tiny_qwen, built):
    path, before = built
    expected = _retrieves(tiny_qwen, path)
    done = subprocess.run([sys.executable, "-c", _KILLED_REBUILD, str(tiny_qwen_dir), str(path)],
                          capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert _snapshot(path) == before and _retrieves(tiny_qwen, path) == expected
    # the dead writer's leftovers do not block the next one, which cleans them up
    tiny_qwen.indexer(path, mode="overwrite").index(DOCS[:10])
    assert len(E2RankIndex(path)) == 10
    assert sorted(p.name for p in path.parent.iterdir()) == ["dense"]


@pytest.mark.parametrize("corpus", [
    DOCS + [{"docno": "d3", "text": "a second d3"}],                 # duplicate docno
    DOCS[:5] + [{"docno": "x", "text": None}],                       # missing text
    DOCS[:5] + [{"text": "no docno"}],                               # missing docno
], ids=["duplicate", "missing-text", "missing-docno"])
def test_failed_rebuild_leaves_the_old_index_intact(tiny_qwen, built, corpus):
    path, before = built
    with pytest.raises((ValueError, KeyError)):
        tiny_qwen.indexer(path, mode="overwrite").index(corpus)
    assert _snapshot(path) == before
    assert len(E2RankIndex(path)) == len(DOCS)


def test_failing_corpus_iterator_leaves_the_old_index_intact(tiny_qwen, built):
    path, before = built

    def corpus():
        yield from DOCS[:3]
        raise IOError("the collection's disk went away")
    with pytest.raises(IOError, match="went away"):
        tiny_qwen.indexer(path, mode="overwrite").index(corpus())
    assert _snapshot(path) == before


def test_an_existing_index_needs_overwrite_and_foreign_files_are_never_deleted(tiny_qwen, built):
    path, before = built
    with pytest.raises(FileExistsError, match=r"pass mode=.overwrite. to replace it"):
        tiny_qwen.indexer(path).index(DOCS[:3])
    (path / "my-notes.txt").write_text("mine")
    (path / "bm25.pisa").mkdir()
    with pytest.raises(FileExistsError, match="bm25.pisa, my-notes.txt"):
        tiny_qwen.indexer(path, mode="overwrite").index(DOCS[:3])
    assert (path / "my-notes.txt").read_text() == "mine" and (path / "bm25.pisa").is_dir()
    assert {k: v for k, v in _snapshot(path).items() if k in before} == before


# Writes a file "started" once it is writing, then waits (without a deadline of its own) for the test to
# write "go": the second writer is tried while the first one certainly holds the lock, however slow the machine.
_SLOW_WRITER = """
import sys, time, pathlib
from pyterrier_e2rank import E2Rank
model = E2Rank(sys.argv[1], batch_size=4)
started, go = pathlib.Path(sys.argv[3], "started"), pathlib.Path(sys.argv[3], "go")
def corpus():
    for i in range(30):
        if i == 1:
            started.write_text("started")
            while not go.exists():
                time.sleep(0.05)
        yield {"docno": f"slow{i}", "text": f"slow document {i} on gene {i % 3}"}
model.indexer(sys.argv[2], verbose=False).index(corpus())
print("finished")
"""


@pytest.mark.slow
def test_a_second_concurrent_writer_is_refused(tiny_qwen_dir, tiny_qwen, tmp_path):
    path = tmp_path / "shared-index"
    first = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(tiny_qwen_dir), str(path), str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # only against a hang: the wait is for the file, not for a time
        while not (tmp_path / "started").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "started").exists(), first.communicate()[1]
        with pytest.raises(ArtifactLocked, match="another process is writing"):
            tiny_qwen.indexer(path).index(DOCS)
    finally:
        (tmp_path / "go").write_text("go")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and "finished" in out, err
    index = E2RankIndex(path)
    assert list(index.docnos()) == [f"slow{i}" for i in range(30)]
    texts = [f"slow document {i} on gene {i % 3}" for i in range(30)]
    np.testing.assert_allclose(index.vectors(list(index.docnos())), tiny_qwen.encode_docs(texts), atol=1e-5)


# ---- 3. artifacts verified when opened -------------------------------------------------------------

@pytest.mark.parametrize("damage, message", [
    (lambda p: _edit_meta(p, doc_count=10), "docnos.npids holds"),
    (lambda p: _edit_meta(p, vec_size=8), "vecs.f4 has"),
    (lambda p: (p / "pt_meta.json").write_text("{not json"), "not valid JSON"),
    (lambda p: _edit_meta(p, doc_count="30"), "positive 'doc_count'"),
    (lambda p: (p / "vecs.f4").write_bytes((p / "vecs.f4").read_bytes()[:-4]), "vecs.f4 has"),
    (lambda p: (p / "docnos.npids").write_bytes(b"garbage"), "docnos.npids cannot be read"),
], ids=["doc_count", "vec_size", "json", "type", "truncated-vectors", "docnos"])
def test_index_files_that_disagree_are_refused_by_path(tiny_qwen, built, damage, message):
    path, _ = built
    damage(path)
    with pytest.raises(CorruptArtifact, match=message) as error:
        tiny_qwen.retriever(path)(QUERY)
    assert str(path) in str(error.value)


def _edit_meta(path, **changes):
    meta = json.loads((path / "pt_meta.json").read_text())
    meta.update(changes)
    (path / "pt_meta.json").write_text(json.dumps(meta))


# ---- 4. identifiers and values kept exactly or refused --------------------------------------------

def test_int_docnos_are_stored_as_ints_never_floats(tiny_qwen, tmp_path):
    index = tiny_qwen.indexer(tmp_path / "ints").index([{"docno": 100 + i, "text": d["text"]}
                                                        for i, d in enumerate(DOCS[:5])])
    assert list(index.docnos()) == ["100", "101", "102", "103", "104"]


@pytest.mark.parametrize("docno, message", [
    (None, "document 2 of the corpus is missing"), (float("nan"), "document 2 of the corpus is missing"),
    (100.0, "is a float"), ("a b", "whitespace"), ("line\nbreak", "whitespace"), ("", "empty")])
def test_bad_docnos_are_refused_by_position(tiny_qwen, tmp_path, docno, message):
    corpus = DOCS[:2] + [{"docno": docno, "text": "gene"}] + DOCS[2:4]
    with pytest.raises(ValueError, match=message):
        tiny_qwen.indexer(tmp_path / "bad").index(corpus)
    assert not (tmp_path / "bad").exists()


def test_non_finite_vectors_are_refused_by_name(tiny_qwen, built):
    path, _ = built
    candidates = pd.DataFrame({"qid": "q1", "query": "gene", "docno": ["d1", "d2"], "text": ["a", "b"],
                               "score": [2.0, 1.0], "rank": [0, 1]})
    vectors = tiny_qwen.encode_docs(["a", "b"])
    vectors[1, 3] = np.nan
    with pytest.raises(ValueError, match="d2.*not finite"):
        tiny_qwen.reranker()(candidates.assign(doc_vec=list(vectors)))
    with pytest.raises(ValueError, match="d2.*not finite"):
        tiny_qwen.scorer()(candidates.assign(doc_vec=list(vectors)))
    query = QUERY.assign(query_vec=[np.full(tiny_qwen.dim, np.inf, dtype=np.float32)])
    with pytest.raises(ValueError, match="q1.*not finite"):
        E2RankIndex(path).retriever()(query)
    from pyterrier_e2rank.index.indexer import IndexWriter
    with pytest.raises(ValueError, match="'x'.*not finite"):
        with IndexWriter(path.parent / "nan", tiny_qwen.dim, tiny_qwen.fingerprint()) as writer:
            writer.add(["x"], np.full((1, tiny_qwen.dim), np.nan, dtype=np.float32))


def test_mixed_int_and_str_qids(tiny_qwen, built):
    path, _ = built
    frame = pd.DataFrame({"qid": [1, 1, "2", "2"], "query": ["gene", "gene", "virus", "virus"],
                          "docno": ["d1", "d2", "d3", "d4"], "score": [2.0, 1.0, 2.0, 1.0], "rank": [0, 1, 0, 1]})
    frame["text"] = [DOCS[i]["text"] for i in range(1, 5)]
    for transformer in (tiny_qwen.scorer(index=path), tiny_qwen.reranker(index=path)):
        out = transformer(frame)
        assert sorted(map(str, out["qid"].unique())) == ["1", "2"] and len(out) == 4


# ---- 5. arguments by range and type ----------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda m, p: m.retriever(p, num_results=0), lambda m, p: m.retriever(p, num_results=-5),
    lambda m, p: m.retriever(p, num_results=2.5), lambda m, p: m.reranker(num_input_docs=-1),
    lambda m, p: m.reranker(window=0), lambda m, p: m.reranker(window=10, stride=0),
    lambda m, p: m.reranker(window=10, stride=11), lambda m, p: m.reranker(window=-1),
    lambda m, p: m.reranker(prompt_doc_max_tokens=0)],
    ids=["num_results=0", "num_results<0", "num_results=2.5", "num_input_docs<0", "window=0", "stride=0",
         "stride>window", "window<0", "prompt_doc_max_tokens=0"])
def test_out_of_range_arguments_are_refused_by_name(tiny_qwen, built, make):
    with pytest.raises(ValueError, match="num_results|num_input_docs|window|stride|doc_max_tokens"):
        make(tiny_qwen, built[0])


# ---- 6. errors that name the problem ---------------------------------------------------------------

def test_lone_surrogate_names_the_docno(tiny_qwen, tmp_path):
    broken = b"caf\xe9 gene".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ValueError, match="'bad'.*surrogate"):
        tiny_qwen.indexer(tmp_path / "s").index(DOCS[:2] + [{"docno": "bad", "text": broken}])
    with pytest.raises(ValueError, match="'bad'.*surrogate"):
        # object dtype: pandas 3's pyarrow-backed strings cannot hold a lone surrogate at all
        tiny_qwen.doc_encoder()(pd.DataFrame({"docno": ["ok", "bad"], "text": ["fine", broken]}, dtype=object))


def test_unspaced_giant_document_is_capped(tiny_qwen):
    from pyterrier_e2rank.model.text import doc_token_cap
    giant = "ACGT" * 50_000  # one "word" of 200,000 characters
    cap = doc_token_cap(tiny_qwen.doc_max_words)
    assert len(tiny_qwen.tokenize_docs([giant])[0]) == cap
    prompt = tiny_qwen.listwise_prompt(num_input_docs=2).render(tiny_qwen.tokenizer, "gene", [giant, "short"])
    assert cap <= len(tiny_qwen.tokenizer(prompt)["input_ids"]) < cap + 100


def test_the_token_cap_never_binds_on_real_collections(tiny_qwen, scifact, shared_dir):
    from pyterrier_e2rank.data import corpus_iter
    from pyterrier_e2rank.model.text import DOC_MAX_WORDS, doc_token_cap, truncate_words
    texts = [d["text"] for d in corpus_iter(scifact)]
    with open(shared_dir / "data" / "msmarco-train-samples" / "flagembedding_msmarco.jsonl") as lines:
        texts += [passage for line in lines for record in [json.loads(line)]
                  for passage in record["pos"] + record["neg"]]
    ids = tiny_qwen.tokenizer([truncate_words(t) for t in texts], add_special_tokens=False, verbose=False)["input_ids"]
    assert max(map(len, ids)) < doc_token_cap(DOC_MAX_WORDS) / 2
    assert tiny_qwen.tokenize_docs(texts[:500]) == tiny_qwen._tokenize(
        [truncate_words(t) for t in texts[:500]], append_eos=True)


def test_an_index_is_on_disk_before_it_is_swapped_into_place(tiny_qwen, tmp_path, monkeypatch):
    """Every file of a new index is fsync'd before the rename that makes it the index: a power loss never
    leaves an index whose metadata says more than its vector file holds."""
    from fixtures.durability import recording_fsync_and_rename
    events = recording_fsync_and_rename(monkeypatch)
    path = tmp_path / "dense"
    tiny_qwen.indexer(path).index(DOCS)
    (at, staging), = [(i, e[1]) for i, e in enumerate(events) if e[0] == "rename" and e[2] == os.path.realpath(path)]
    synced = {e[1] for e in events[:at] if e[0] == "fsync"}
    files = {os.path.join(root, name) for root, _, names in os.walk(path) for name in names}
    assert files and {f.replace(os.path.realpath(path), staging) for f in files} <= synced
