"""Nothing lost at the seams of the commands: they delete only what they wrote (the user's files beside it are
kept, names of theirs in the way refused before anything is written), names made from paths and ids never
map two inputs to one folder (and a folder checks what it was made from), and an output is locked from
before the first byte written to the last (cli/suite.py, cli/experiment.py, cli/train_command.py, bm25.py)."""
import contextlib
import json
import shutil
import threading
import warnings

import pytest

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli import main as cli
from pyterrier_e2rank.cli.experiment import dense_index_for, index_name
from pyterrier_e2rank.cli.reproduce import reproduce
from pyterrier_e2rank.index.artifact import E2RankIndex
from pyterrier_e2rank.io import ArtifactLocked, writer_lock
from pyterrier_e2rank.data import corpus_iter

from fixtures.writers import held_by_another_process

SUITE = dict(top_k=5, num_queries=1, verbose=False)


@pytest.fixture(scope="module")
def cached_minilm(minilm_dir):
    return E2Rank(str(minilm_dir), batch_size=16, cache_doc_vectors=True)


@contextlib.contextmanager
def held_by_another_thread(target):
    """``writer_lock(target)`` held by another thread of this process for the duration of the block."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        with writer_lock(target):
            taken.set()
            release.wait()
    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait()
    try:
        yield
    finally:
        release.set()
        holder.join()


def small_beir_copy(small_scifact, path, *, judged=None):
    """A copy of the small SciFact folder at ``path``; ``judged``: these docnos judged relevant instead, for each
    query."""
    shutil.copytree(small_scifact, path)
    if judged is not None:
        qrels = path / "qrels" / "test.tsv"
        lines = qrels.read_text().splitlines()
        qids = dict.fromkeys(line.split()[0] for line in lines[1:])
        qrels.write_text("\n".join([lines[0]] + [f"{q}\t{d}\t1" for q in qids for d in judged]) + "\n")
    return path


# ---- we delete only what we wrote ------------------------------------------------------------------

def test_overwrite_keeps_what_the_user_put_beside_the_suite(cached_minilm, small_scifact, tmp_path):
    out, folder = tmp_path / "out", str(small_scifact)
    reproduce(cached_minilm, [folder], out, index_dir=tmp_path / "indexes", **SUITE)
    mine = [out / "notes.md", out / "datasets" / "analysis.ipynb",
            out / "datasets" / index_name(folder) / "notes.txt"]
    for path in mine:
        path.write_text("mine")
    first = reproduce(cached_minilm, [folder], out, index_dir=tmp_path / "indexes", overwrite=True, **SUITE)
    assert [path.read_text() for path in mine] == ["mine"] * 3
    assert json.loads((out / "results.json").read_text()) == first


def test_a_finished_dataset_removes_its_chunks_only(cached_minilm, small_scifact, tmp_path):
    folder = str(small_scifact)
    reproduce(cached_minilm, [folder], tmp_path / "first", index_dir=tmp_path / "indexes", **SUITE)
    done = tmp_path / "first" / "datasets" / index_name(folder)
    (done / "results.json").unlink()  # to be finished again, with a file of the user's among the chunks
    (done / "reranked").mkdir()
    (done / "reranked" / "my-run.txt").write_text("mine")
    reproduce(cached_minilm, [folder], tmp_path / "first", index_dir=tmp_path / "indexes", **SUITE)
    assert (done / "results.json").exists() and (done / "reranked" / "my-run.txt").read_text() == "mine"
    assert [p.name for p in (done / "reranked").iterdir()] == ["my-run.txt"]


def test_names_of_the_users_in_the_way_are_refused_before_anything_is_written(cached_minilm, small_scifact,
                                                                               tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}')
    with pytest.raises(FileExistsError, match=r"out holds results.json but no settings.json.*nothing was written"):
        reproduce(cached_minilm, [str(small_scifact)], out, **SUITE)
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    assert (out / "results.json").read_text() == '{"mine": 1}'


def test_an_input_inside_what_reproduce_replaces_is_refused(cached_minilm, small_scifact, tmp_path):
    out, folder = tmp_path / "out", str(small_scifact)
    reproduce(cached_minilm, [folder], out, index_dir=tmp_path / "indexes", **SUITE)
    candidates = out / "datasets" / index_name(folder) / "first-stage.run"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"is the input --run .*first-stage.run"):
        reproduce(cached_minilm, [folder], out, runs={folder: str(candidates)}, overwrite=True, **SUITE)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_an_index_without_a_corpus_stamp_is_not_ours_to_replace(minilm, small_scifact, tmp_path):
    """An index the experiment did not build (no stamp) is never replaced: dense and PISA alike."""
    from pyterrier_e2rank.bm25 import CORPUS_STAMP_FILE
    folder = small_beir_copy(small_scifact, tmp_path / "corpus")
    path = dense_index_for(minilm, folder, str(tmp_path / "indexes"), verbose=False).path
    shutil.rmtree(path)
    minilm.indexer(str(path), verbose=False).index(corpus_iter(folder))  # by hand: no stamp
    built = (path / "pt_meta.json").read_bytes()
    with pytest.raises(ValueError, match=r"dense index .* carries no corpus stamp.*not ours to replace"):
        dense_index_for(minilm, folder, str(tmp_path / "indexes"), verbose=False)
    assert (path / "pt_meta.json").read_bytes() == built

    from pyterrier_e2rank.bm25 import pisa_bm25
    pisa = tmp_path / "bm25.pisa"
    pisa_bm25(str(pisa), folder)
    (pisa / CORPUS_STAMP_FILE).unlink()  # as pyterrier_pisa builds it
    built = (pisa / "pt_meta.json").stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"PISA index .* carries no corpus stamp.*not ours to replace"):
        pisa_bm25(str(pisa), folder, rebuild_stale=True)
    assert (pisa / "pt_meta.json").stat().st_mtime_ns == built


# ---- names made from inputs are injective ------------------------------------------------------------

@pytest.mark.slow
def test_two_datasets_whose_names_sanitise_alike_keep_their_own_results(cached_minilm, small_scifact, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = small_beir_copy(small_scifact, tmp_path / "sets" / "sci fact")
    every = [json.loads(line)["_id"] for line in (first / "corpus.jsonl").read_text().splitlines()]
    small_beir_copy(small_scifact, tmp_path / "sets" / "sci_fact", judged=every)  # other judgments
    results = reproduce(cached_minilm, ["sets/sci fact", "sets/sci_fact"], "out", index_dir="indexes", **SUITE)
    assert results["sets/sci fact"]["bm25"] != results["sets/sci_fact"]["bm25"]
    alone = reproduce(cached_minilm, ["sets/sci_fact"], "alone", index_dir="indexes", **SUITE)
    assert results["sets/sci_fact"] == alone["sets/sci_fact"]
    assert index_name("sets/sci fact") != index_name("sets/sci_fact")
    assert len({index_name(name) for name in ("a/b", "a_b", "a b", "a:b", "A/b", "a/b/")}) == 5  # a/b/ is a/b


def test_a_dataset_folder_refuses_another_dataset_of_the_same_label(cached_minilm, small_scifact, tmp_path,
                                                                    monkeypatch):
    small_beir_copy(small_scifact, tmp_path / "x" / "data")
    small_beir_copy(small_scifact, tmp_path / "y" / "data", judged=["no-such-document"])
    monkeypatch.chdir(tmp_path / "x")
    reproduce(cached_minilm, ["data"], tmp_path / "out", index_dir=tmp_path / "indexes", **SUITE)
    monkeypatch.chdir(tmp_path / "y")
    with pytest.raises(ValueError, match=r"data was begun with other dataset .*x/data.*y/data.*--overwrite"):
        reproduce(cached_minilm, ["data"], tmp_path / "out", index_dir=tmp_path / "indexes", **SUITE)


@pytest.mark.slow
def test_models_whose_names_sanitise_alike_keep_their_own_dense_index(tiny_qwen_dir, other_tiny_qwen_dir,
                                                                      small_scifact, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m x").symlink_to(tiny_qwen_dir)
    (tmp_path / "m_x").symlink_to(other_tiny_qwen_dir)
    folder = small_beir_copy(small_scifact, tmp_path / "corpus")
    with open(folder / "corpus.jsonl") as corpus:
        (folder / "corpus.jsonl").write_text("".join(corpus.readlines()[:10]))
    models = [E2Rank("m x", batch_size=8), E2Rank("m_x", batch_size=8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "building it again" would be a warning
        paths = [dense_index_for(model, folder, "indexes", verbose=False).path for model in models * 2]
    assert paths[0] != paths[1] and paths[:2] == paths[2:]
    assert [E2RankIndex(path).fingerprint for path in paths[:2]] == [model.fingerprint() for model in models]


# ---- an output is locked from the first byte written to the last -------------------------------------

def test_experiment_output_is_locked_before_the_indexes_are_built(minilm_dir, small_scifact, tmp_path):
    output = tmp_path / "results.json"
    with held_by_another_thread(output), pytest.raises(ArtifactLocked):
        cli.main(["experiment", "--dataset", str(small_scifact), "--model", str(minilm_dir), "--num-queries", "1",
                  "--top-k", "5", "--index-dir", str(tmp_path / "indexes"), "--output", str(output)])
    assert not (tmp_path / "indexes").exists()


def test_build_data_output_is_locked_before_its_bm25_index_is_built(small_scifact, tmp_path):
    output = tmp_path / "train.jsonl"
    with held_by_another_thread(output), pytest.raises(ArtifactLocked):
        cli.main(["build-data", "dataset", "--dataset", str(small_scifact), "--bm25-index",
                  str(tmp_path / "bm25.pisa"), "--output", str(output)])
    assert not (tmp_path / "bm25.pisa").exists()


def test_experiment_output_that_is_an_input_is_refused(small_scifact, tmp_path):
    folder = small_beir_copy(small_scifact, tmp_path / "corpus")
    corpus, indexes = folder / "corpus.jsonl", tmp_path / "indexes"
    before = corpus.read_bytes()
    for dataset, output, name in ((corpus, corpus, "dataset"), (folder, indexes, "index_dir")):
        with pytest.raises(ValueError, match=rf"is the input {name}"):
            cli.main(["experiment", "--dataset", str(dataset), "--model", "all-minilm-l6-v2",
                      "--index-dir", str(indexes), "--output", str(output)])
    assert corpus.read_bytes() == before and not indexes.exists()


def test_index_output_that_is_an_input_is_refused_before_the_model_loads(small_scifact, tmp_path):
    folder = small_beir_copy(small_scifact, tmp_path / "corpus")
    for source, given in (("--dataset", folder / "corpus.jsonl"), ("--collection", folder)):
        with pytest.raises(ValueError, match=rf"is the input {source[2:]}"):
            cli.main(["index", source, str(given), "--model", "no-such-model", "--output", str(folder),
                      "--overwrite"])
    assert sorted(p.name for p in folder.iterdir()) == ["corpus.jsonl", "qrels", "queries.jsonl"]


def test_a_second_index_writer_is_refused_before_its_model_loads(small_scifact, tmp_path):
    """The trial's second `e2rank index --append` loaded its model (20 s) before it was refused."""
    folder = small_beir_copy(small_scifact, tmp_path / "corpus")
    with held_by_another_process(tmp_path / "index"), pytest.raises(ArtifactLocked, match="another process"):
        cli.main(["index", "--collection", str(folder / "corpus.jsonl"), "--model", "no-such-model", "--output",
                  str(tmp_path / "index"), "--append"])
