"""Corpus encoding in committed chunks: a killed build resumes after its last chunk, a damaged chunk is
encoded again (never merged), chunks are on disk before they are renamed into place, and two processes
(torchrun, gloo on CPU) build the same index as one."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pyterrier_e2rank import E2RankIndex
from pyterrier_e2rank.index.indexer import ChunkStore, encode_corpus
from pyterrier_e2rank.io import CorruptArtifact

from fixtures.durability import recording_fsync_and_rename

CORPUS = [{"docno": f"doc{i}", "text": f"document {i} about gene {i % 7} and virus {i % 3} " * (1 + i % 4)}
          for i in range(45)]

_KILLED_AFTER_THREE_CHUNKS = """
import os, signal, sys
from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.index.indexer import ChunkStore
commit = ChunkStore.commit
def commit_then_die(self, chunk):
    commit(self, chunk)
    if chunk.chunk_id == 2:
        os.kill(os.getpid(), signal.SIGKILL)
ChunkStore.commit = commit_then_die
model = E2Rank(sys.argv[1], batch_size=4)
corpus = [{"docno": f"doc{i}", "text": f"document {i} about gene {i % 7} and virus {i % 3} " * (1 + i % 4)}
          for i in range(45)]
model.indexer(sys.argv[2], chunk_size=8).index(corpus)
"""


@pytest.fixture(scope="module")
def other_tiny_qwen(other_tiny_qwen_dir):
    from pyterrier_e2rank import E2Rank
    return E2Rank(str(other_tiny_qwen_dir), batch_size=4)


@pytest.fixture(scope="module")
def one_process(tiny_qwen, tmp_path_factory):
    return tiny_qwen.indexer(tmp_path_factory.mktemp("one") / "index", chunk_size=8).index(CORPUS)


def _same_index(a: E2RankIndex, b: E2RankIndex) -> None:
    assert list(a.docnos()) == list(b.docnos())
    np.testing.assert_allclose(a.np_vecs(), b.np_vecs(), atol=1e-6)


@pytest.mark.slow
def test_a_killed_build_resumes_after_its_last_committed_chunk(tiny_qwen_dir, tiny_qwen, one_process, tmp_path):
    path = tmp_path / "index"
    killed = subprocess.run([sys.executable, "-c", _KILLED_AFTER_THREE_CHUNKS, str(tiny_qwen_dir), str(path)],
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert not path.exists() and len(list((tmp_path / ".index.chunks").glob("chunk-*.json"))) == 3
    with tiny_qwen.counting() as work:
        resumed = tiny_qwen.indexer(path, chunk_size=8).index(CORPUS)
    assert work.texts == len(CORPUS) - 3 * 8  # chunks 0-2 were not encoded again
    _same_index(resumed, one_process)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # the chunks are gone once merged


def _commit(model, path, corpus, **settings):
    """Commit ``corpus``'s chunks of 8 as ``model.indexer(path, chunk_size=8, **settings)`` does."""
    with model.indexer(path, chunk_size=8, **settings).chunk_store() as store:
        for chunk in encode_corpus(model, corpus, chunk_size=8, **settings):
            store.commit(chunk)


def test_a_changed_chunk_is_encoded_again(tiny_qwen, one_process, tmp_path):
    path = tmp_path / "index"
    stale = [dict(d, text=d["text"] + " an older version") if i < 8 else d for i, d in enumerate(CORPUS)]
    _commit(tiny_qwen, path, stale[:16])
    with tiny_qwen.counting() as work:
        rebuilt = tiny_qwen.indexer(path, chunk_size=8).index(CORPUS)
    assert work.texts == len(CORPUS) - 8  # chunk 0 changed, chunk 1 did not
    _same_index(rebuilt, one_process)


@pytest.mark.parametrize("damage, message", [
    ("same size", r"\(or the docnos or texts of chunk-0000001.json\) do not match the checksum in that record: the "
                  "file is damaged"),
    ("docno in record", r"\(or the docnos or texts of chunk-0000001.json\) do not match the checksum"),
    ("empty vectors", "hold 0 bytes, not the 8 x 64 float32 its record chunk-0000001.json lists"),
    ("empty record", r"is damaged \(JSONDecodeError: Expecting value: line 1 column 1"),
    ("truncated record", r"is damaged \(JSONDecodeError: Unterminated string")],
    ids=["same-size", "docno-in-record", "empty-vectors", "empty-record", "truncated-record"])
def test_a_damaged_chunk_is_named_and_encoded_again(tiny_qwen, one_process, tmp_path, damage, message):
    """A committed chunk whose vectors or docnos changed in place (same size, valid JSON), or whose files
    a power loss left empty or cut short: named in a warning and encoded again on resume; the intact
    chunks are reused."""
    store = tmp_path / ".index.chunks"
    _commit(tiny_qwen, tmp_path / "index", CORPUS[:24])
    vectors, record = store / "chunk-0000001.f4", store / "chunk-0000001.json"
    if damage == "same size":
        data = bytearray(vectors.read_bytes())
        data[100:104] = np.float32(0.5).tobytes()
        vectors.write_bytes(bytes(data))
    elif damage == "docno in record":
        record.write_text(record.read_text().replace('"doc9"', '"dox9"'))
    elif damage == "empty vectors":
        vectors.write_bytes(b"")
    else:
        record.write_text("" if damage == "empty record" else record.read_text()[:50])
    damaged = record if damage in ("empty record", "truncated record") else vectors
    before = tiny_qwen.stats.texts
    with pytest.warns(UserWarning, match=f"{re.escape(str(damaged))} {message}.*; encoding chunk 1 again$"):
        rebuilt = tiny_qwen.indexer(tmp_path / "index", chunk_size=8).index(CORPUS)
    assert tiny_qwen.stats.texts - before == len(CORPUS) - 2 * 8  # chunks 0 and 2 reused, chunk 1 encoded again
    _same_index(rebuilt, one_process)


def test_a_chunk_damaged_before_the_merge_is_never_merged(tiny_qwen, one_process, tmp_path, monkeypatch):
    """Vectors damaged between their commit and the merge: ``CorruptArtifact`` names the file and no index
    appears; the next build encodes that chunk again (with a warning) and reuses the others."""
    commit = ChunkStore.commit

    def commit_then_damage(self, chunk):
        commit(self, chunk)
        if chunk.chunk_id == 3:
            vectors = self._paths(3)[1]
            vectors.write_bytes(bytes(len(vectors.read_bytes())))
    monkeypatch.setattr(ChunkStore, "commit", commit_then_damage)
    path = tmp_path / "index"
    with pytest.raises(CorruptArtifact, match=r"chunk-0000003\.f4 .*do not match the checksum .*nothing was written"):
        tiny_qwen.indexer(path, chunk_size=8).index(CORPUS)
    assert not path.exists()
    monkeypatch.setattr(ChunkStore, "commit", commit)
    before = tiny_qwen.stats.texts
    with pytest.warns(UserWarning, match=r"chunk-0000003\.f4 .*do not match the checksum.*encoding chunk 3 again"):
        rebuilt = tiny_qwen.indexer(path, chunk_size=8).index(CORPUS)
    assert tiny_qwen.stats.texts - before == 8
    _same_index(rebuilt, one_process)


def test_a_chunk_is_on_disk_before_it_is_renamed_into_place(tiny_qwen, tmp_path, monkeypatch):
    """Each chunk's vectors and then its record are fsync'd before the rename that commits them, and the
    directory after it: a power loss never leaves a committed chunk with empty files."""
    events = recording_fsync_and_rename(monkeypatch)
    _commit(tiny_qwen, tmp_path / "index", CORPUS[:16])
    directory = os.path.realpath(tmp_path / ".index.chunks")
    renames = [(i, e[1], e[2]) for i, e in enumerate(events) if e[0] == "rename" and "chunk-" in e[2]]
    assert [os.path.basename(target) for _, _, target in renames] == [
        "chunk-0000000.f4", "chunk-0000000.json", "chunk-0000001.f4", "chunk-0000001.json"]
    bounds = [0] + [at for at, _, _ in renames] + [len(events)]
    for number, (at, source, _) in enumerate(renames):
        assert ("fsync", source) in events[bounds[number]:at]  # this file's bytes before its rename...
        assert ("fsync", directory) in events[at:bounds[number + 2]]  # ...and its new name before the next


def test_chunks_of_another_model_are_not_reused_by_any_process(tiny_qwen, other_tiny_qwen, tmp_path):
    """Every process checks that a committed chunk was made under its own plan (model and settings):
    before, only process 0 compared the plan, and a process of a sharded build resumed with another
    model trusted the old model's chunks until process 0 discarded them (the merge then failed)."""
    path = tmp_path / "index"
    _commit(other_tiny_qwen, path, CORPUS[:16])
    chunk = next(encode_corpus(other_tiny_qwen, CORPUS[8:16], chunk_size=8))
    with other_tiny_qwen.indexer(path, chunk_size=8).chunk_store(rank=1) as theirs:
        assert theirs.has(1, chunk.digest)  # the same content under the same plan is reused...
    with tiny_qwen.indexer(path, chunk_size=8).chunk_store(rank=1) as ours:
        assert not ours.has(1, chunk.digest)  # ...under another model's plan it is not


def test_a_resumed_build_refuses_missing_texts_as_an_uninterrupted_one(tiny_qwen, tmp_path):
    """Chunks committed with ``missing_text="empty"`` are not reused by a build that refuses missing texts."""
    corpus = [dict(d, text=None) if i == 3 else d for i, d in enumerate(CORPUS)]
    with pytest.warns(UserWarning, match=r"1 document\(s\) with empty 'text' were indexed as the empty text"):
        _commit(tiny_qwen, tmp_path / "index", corpus[:16], missing_text="empty")
    with pytest.raises(ValueError, match=r"1 document\(s\) have no text \(None or NaN; docnos \['doc3'\]\)"):
        tiny_qwen.indexer(tmp_path / "index", chunk_size=8).index(corpus)
    assert not (tmp_path / "index").exists()


_SHARD = """
import json, os, sys
import torch.distributed as dist
from pyterrier_e2rank import E2Rank
model = E2Rank(sys.argv[1], batch_size=4)
corpus = [{"docno": f"doc{i}", "text": f"document {i} about gene {i % 7} and virus {i % 3} " * (1 + i % 4)}
          for i in range(45)]
index = model.indexer(sys.argv[2], chunk_size=8).index(corpus)
report = {"rank": dist.get_rank(), "world": dist.get_world_size(), "texts": model.stats.texts, "index": len(index)}
with open(os.path.join(sys.argv[3], f"rank-{dist.get_rank()}.json"), "w") as out:
    json.dump(report, out)
"""


@pytest.mark.slow
def test_two_processes_build_the_index_one_process_builds(tiny_qwen_dir, one_process, tmp_path):
    """Launched by torchrun ``--standalone`` (its rendezvous port chosen by the OS); each process writes
    its own report file."""
    script, reports = tmp_path / "shard.py", tmp_path / "reports"
    script.write_text(_SHARD)
    reports.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(tiny_qwen_dir), str(tmp_path / "index"), str(reports)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in reports.iterdir()) == ["rank-0.json", "rank-1.json"]
    assert [json.loads((reports / f"rank-{rank}.json").read_text()) for rank in (0, 1)] == [
        {"rank": 0, "world": 2, "texts": 24, "index": 45}, {"rank": 1, "world": 2, "texts": 21, "index": 45}]
    _same_index(E2RankIndex(tmp_path / "index"), one_process)


def test_index_command_builds_and_refuses_to_replace_without_overwrite(tiny_qwen_dir, one_process, tmp_path, capsys):
    from pyterrier_e2rank.cli.main import main
    collection = tmp_path / "collection.jsonl"
    collection.write_text("".join(json.dumps({"id": d["docno"], "contents": d["text"]}) + "\n" for d in CORPUS))
    command = ["index", "--collection", str(collection), "--model", str(tiny_qwen_dir), "--output",
               str(tmp_path / "index"), "--chunk-size", "8", "--batch-size", "4", "--quiet"]
    assert main(command) == 0
    _same_index(E2RankIndex(tmp_path / "index"), one_process)
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(command)
    with pytest.raises(SystemExit):
        main(command[:-1] + ["--chunk-size", "0"])
    assert "argument --chunk-size: must be an integer >= 1" in capsys.readouterr().err
