"""Corpus encoding in committed chunks: a killed build resumes after its last chunk, and two processes
(torchrun, gloo on CPU) build the same index as one."""
import os
import subprocess
import sys

import numpy as np
import pytest

from pyterrier_e2rank import E2RankIndex

CORPUS = [{"docno": f"doc{i}", "text": f"document {i} about gene {i % 7} and virus {i % 3} " * (1 + i % 4)}
          for i in range(45)]

_KILLED_AFTER_THREE_CHUNKS = """
import os, signal, sys
from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.indexing import ChunkStore
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
def one_process(tiny_qwen, tmp_path_factory):
    return tiny_qwen.indexer(tmp_path_factory.mktemp("one") / "index", chunk_size=8).index(CORPUS)


def _same_index(a: E2RankIndex, b: E2RankIndex) -> None:
    assert list(a.docnos()) == list(b.docnos())
    np.testing.assert_allclose(a.np_vecs(), b.np_vecs(), atol=1e-6)


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


def test_a_changed_chunk_is_encoded_again(tiny_qwen, one_process, tmp_path):
    from pyterrier_e2rank.indexing import ChunkStore, encode_corpus
    path = tmp_path / "index"
    stale = [dict(d, text=d["text"] + " an older version") if i < 8 else d for i, d in enumerate(CORPUS)]
    plan = {"encoder": tiny_qwen.fingerprint(), "dim": tiny_qwen.dim, "chunk_size": 8, "text_field": "text"}
    with ChunkStore(tmp_path / ".index.chunks", plan) as store:
        for chunk in encode_corpus(tiny_qwen, stale[:16], chunk_size=8):
            store.commit(chunk)
    with tiny_qwen.counting() as work:
        rebuilt = tiny_qwen.indexer(path, chunk_size=8).index(CORPUS)
    assert work.texts == len(CORPUS) - 8  # chunk 0 changed, chunk 1 did not
    _same_index(rebuilt, one_process)


_SHARD = """
import sys
import torch.distributed as dist
from pyterrier_e2rank import E2Rank
model = E2Rank(sys.argv[1], batch_size=4)
corpus = [{"docno": f"doc{i}", "text": f"document {i} about gene {i % 7} and virus {i % 3} " * (1 + i % 4)}
          for i in range(45)]
index = model.indexer(sys.argv[2], chunk_size=8).index(corpus)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} encoded {model.stats.texts} texts; index of {len(index)}")
"""


def test_two_processes_build_the_index_one_process_builds(tiny_qwen_dir, one_process, tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(_SHARD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29533", str(script), str(tiny_qwen_dir), str(tmp_path / "index")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    assert lines == ["rank 0 of 2 encoded 24 texts; index of 45", "rank 1 of 2 encoded 21 texts; index of 45"]
    _same_index(E2RankIndex(tmp_path / "index"), one_process)


def test_index_command_builds_and_refuses_to_replace_without_overwrite(tiny_qwen_dir, one_process, tmp_path, capsys):
    import json

    from pyterrier_e2rank.app.cli import main
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
