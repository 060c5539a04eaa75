"""One writer holds a write from its first step to its last: a second writer of the same artifact, started at
any moment of the first one's work (encoding, merging, cleaning up), gets ``ArtifactLocked`` at once and
changes nothing; every piece a write reads back (a chunk of a build) is checked to be its own."""
import hashlib
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pyterrier_e2rank import E2RankIndex
from pyterrier_e2rank.index import indexer as indexing
from pyterrier_e2rank.index.indexer import encode_corpus
from pyterrier_e2rank.io import ArtifactLocked, CorruptArtifact, atomic_directory, writer_lock
from pyterrier_e2rank.training.config import TrainConfig
from pyterrier_e2rank.training.data import ListwiseExample
from pyterrier_e2rank.training.trainer import train

from fixtures.training_records import RECORDS
from fixtures.writers import IO_ONLY, child, held_by_another_process

OLD = [{"docno": f"old{i}", "text": f"an old document {i} about virus {i % 2}"} for i in range(5)]
MINE = [{"docno": f"a{i}", "text": f"A's document {i} about gene {i % 3}"} for i in range(20)]
THEIRS = [{"docno": f"b{i}", "text": f"B's document {i} about protein {i % 4}"} for i in range(20)]

# Process A: appends MINE in chunks of 10. The test's hook (here, not in the library): once A is inside the
# merge, with its chunks committed and the index's writer open, it writes "merging" and waits for "go".
_APPEND_A = """
import pathlib, sys, time
from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.index import indexer as indexing
here = pathlib.Path(sys.argv[3])
copy_index = indexing.copy_index
def copy_when_told(base, writer, **options):
    (here / "merging").write_text("merging")
    while not (here / "go").exists():
        time.sleep(0.05)
    copy_index(base, writer, **options)
indexing.copy_index = copy_when_told
mine = [{"docno": f"a{i}", "text": f"A's document {i} about gene {i % 3}"} for i in range(20)]
E2Rank(sys.argv[1], batch_size=4).indexer(sys.argv[2], mode="append", chunk_size=10, verbose=False).index(mine)
print("appended")
"""


def _snapshot(directory: Path) -> dict:
    """Every entry under ``directory``, hidden ones too: a file's SHA-256, a directory's ``None``."""
    return {str(p.relative_to(directory)): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))}


@pytest.mark.slow
def test_an_append_started_while_another_merges_is_refused_at_once_and_changes_nothing(tiny_qwen_dir, tiny_qwen,
                                                                                        tmp_path):
    """The reported case: B appended while A merged; B's chunks replaced A's in the store, A merged half of
    them and said it had appended, B then failed with ArtifactLocked."""
    path, here = tmp_path / "index", tmp_path / "signals"
    here.mkdir()
    tiny_qwen.indexer(path, chunk_size=10, verbose=False).index(OLD)
    old_vectors = E2RankIndex(path).vectors([d["docno"] for d in OLD])
    first = child(_APPEND_A, tiny_qwen_dir, path, here)
    try:
        deadline = time.monotonic() + 600  # only against a hang: the wait is for the file, not for a time
        while not (here / "merging").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (here / "merging").exists(), first.communicate()[1]
        before = _snapshot(tmp_path)
        with tiny_qwen.counting() as work, pytest.raises(ArtifactLocked, match="another process is writing"):
            tiny_qwen.indexer(path, mode="append", chunk_size=10, verbose=False).index(THEIRS)
        assert work.texts == 0  # refused at once, before any of B's documents was encoded
        assert _snapshot(tmp_path) == before  # nothing of B's in A's chunk store, nor anywhere else
    finally:
        (here / "go").write_text("go")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and "appended" in out, err
    index = E2RankIndex(path)
    assert list(index.docnos()) == [d["docno"] for d in OLD + MINE]
    np.testing.assert_array_equal(index.vectors([d["docno"] for d in OLD]), old_vectors)
    np.testing.assert_allclose(index.vectors([d["docno"] for d in MINE]),
                               tiny_qwen.encode_docs([d["text"] for d in MINE]), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "signals"]  # no store, no lock left


def test_a_chunk_another_process_encoded_from_other_documents_is_never_merged(tiny_qwen, tmp_path, monkeypatch):
    """Process 1 of a sharded build read other texts under the same docnos (a corpus changed between the
    processes' reads): process 0 merged its chunk as this build's, vectors of texts it never saw."""
    path = tmp_path / "index"
    theirs = [dict(d, text=d["text"] + ", as edited meanwhile") for d in MINE]
    with tiny_qwen.indexer(path, chunk_size=10).chunk_store(rank=1) as store:
        for chunk in encode_corpus(tiny_qwen, theirs, chunk_size=10, wanted=lambda chunk_id, _: chunk_id == 1):
            store.commit(chunk)
    monkeypatch.setattr(indexing, "distributed_context", lambda: (0, 2, lambda: None))  # process 0 of 2
    with pytest.raises(CorruptArtifact, match=r"chunk-0000001\.json holds other documents than chunk 1 of this "
                                              r"build .*another build's; nothing was written"):
        tiny_qwen.indexer(path, chunk_size=10, verbose=False).index(MINE)
    assert not path.exists()


def test_a_second_training_of_the_output_is_refused_until_the_first_removed_its_states(tiny_qwen_dir, tmp_path,
                                                                                      monkeypatch):
    """The states were removed after the output's lock was released: a second run of the same output
    starting then found the first run's states (refused, or resumed from them with ``resume``), and its own
    were deleted under it."""
    output = tmp_path / "out"
    config = TrainConfig(model=str(tiny_qwen_dir), output=str(output), max_steps=2, batch_size=1,
                         doc_max_length=16, prompt_doc_max_tokens=8, save_every=1)
    rmtree, second = shutil.rmtree, {}

    def second_writer():
        try:
            with writer_lock(output):
                second["error"] = None
        except ArtifactLocked as e:
            second["error"] = e

    def removing_states(target, *args, **kwargs):
        if Path(target) == config.state_dir:  # the first run cleans up: a second one tries to start now
            assert output.is_dir()  # the checkpoint is in place already
            thread = threading.Thread(target=second_writer)
            thread.start()
            thread.join()
        return rmtree(target, *args, **kwargs)
    monkeypatch.setattr(shutil, "rmtree", removing_states)
    train(config, [ListwiseExample(**RECORDS[0])])
    assert isinstance(second.get("error"), ArtifactLocked)
    assert not config.state_dir.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


_TRY_LOCK = IO_ONLY + """
try:
    with io.writer_lock(sys.argv[1]):
        print("free")
except io.ArtifactLocked:
    print("locked")
"""


def _seen_by_another_process(target) -> str:
    out, err = child(_TRY_LOCK, target).communicate(timeout=600)
    return out.strip() or err


def test_a_write_re_enters_its_own_lock_and_holds_it_until_its_outermost_block_ends(tmp_path):
    """The inner steps of a write (an ``atomic_directory`` inside the write's ``writer_lock``) run under the
    lock the write holds, and do not release it when they end; another thread is still refused."""
    target, refused = tmp_path / "artifact", {}

    def other_thread():
        try:
            with writer_lock(target):
                refused["thread"] = False
        except ArtifactLocked:
            refused["thread"] = True
    with writer_lock(target):
        with atomic_directory(target, owned=lambda _: {"part"}) as staging:
            (staging / "part").write_text("mine")
        assert (target / "part").read_text() == "mine"
        assert _seen_by_another_process(target) == "locked"
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert refused == {"thread": True}
    assert _seen_by_another_process(target) == "free"


def test_a_symbolic_link_and_the_path_it_points_to_are_one_lock(tmp_path):
    """An artifact behind a link is written where the link points (``artifact_path``), so it is locked there:
    a writer through the link and one through the real path exclude each other."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    with held_by_another_process(real), pytest.raises(ArtifactLocked, match="another process"):
        with writer_lock(link):
            pass
    with held_by_another_process(link):
        assert _seen_by_another_process(real) == "locked"
