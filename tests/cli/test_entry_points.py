"""Entry points take what artifacts and checkpoints carry: indexes know the corpus they were built from (and
are built again, or refused, when it changed), and every entry point reranks with a checkpoint's saved
prompt settings unless the user gives one."""
import json
import os
import shutil
import threading
import warnings

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli.experiment import dense_index_for, index_name, run_experiment
from pyterrier_e2rank.bm25 import CORPUS_STAMP_FILE, pisa_bm25
from pyterrier_e2rank.data import DocumentText, corpus_id, corpus_stamp, dataset
from pyterrier_e2rank.index.artifact import E2RankIndex
from pyterrier_e2rank.model.loading import write_prompt_settings

from fixtures.docs import make_docs

TOPICS = {"q1": "gene therapy trial", "q2": "virus immune response"}
#: 20 documents, each with a word of its own, appended to the corpus after the first build.
ADDED = {f"new{i}": f"xylo{chr(97 + i)}{chr(97 + i)} cell gene" for i in range(20)}


def beir_folder(folder, texts):
    """A BEIR folder of ``texts`` (docnos d0, d1, ...), the two ``TOPICS`` and a judgment for each."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n"
                                                 for i, text in enumerate(texts)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in TOPICS.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td4\t1\nq2\td7\t1\n")
    return folder


def append_documents(folder, documents: dict) -> None:
    with open(folder / "corpus.jsonl", "a") as corpus:
        corpus.writelines(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in documents.items())


def rebuild_warnings(caught) -> list:
    return [str(w.message) for w in caught if "building it again" in str(w.message)]


# ---- indexes are stamped with their corpus ---------------------------------------------------------

@pytest.mark.slow
def test_experiment_indexes_follow_documents_added_to_the_corpus(tmp_path, minilm):
    """The experiment owns its index directory: a corpus that gained 20 documents gets both indexes built
    again (a warning says which and why), and the new documents are retrieved; an unchanged corpus reuses
    them."""
    folder = beir_folder(tmp_path / "corpus", make_docs(30, seed=5))
    indexes = tmp_path / "indexes"
    run_experiment(folder, minilm, index_dir=indexes, top_k=10, verbose=False)
    root = indexes / index_name(corpus_id(dataset(folder)))
    dense_meta = root / f"dense.{index_name(minilm.model_name_or_path)}" / "pt_meta.json"
    built = dense_meta.stat().st_mtime_ns, (root / "bm25.pisa" / "pt_meta.json").stat().st_mtime_ns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_experiment(folder, minilm, index_dir=indexes, top_k=10, verbose=False)
    assert rebuild_warnings(caught) == []
    assert (dense_meta.stat().st_mtime_ns, (root / "bm25.pisa" / "pt_meta.json").stat().st_mtime_ns) == built

    append_documents(folder, ADDED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_experiment(folder, minilm, index_dir=indexes, top_k=10, verbose=False)
    rebuilt = rebuild_warnings(caught)
    assert len(rebuilt) == 2 and "bm25.pisa" in rebuilt[0] and "dense." in rebuilt[1]
    assert all("was built from the corpus" in message for message in rebuilt)

    queries = pd.DataFrame({"qid": list(ADDED), "query": list(ADDED.values())})
    bm25 = pisa_bm25(str(root / "bm25.pisa"), num_results=1)(queries)
    assert bm25["docno"].tolist() == list(ADDED)
    dense_index = E2RankIndex(dense_meta.parent)
    assert len(dense_index) == 50 and dense_index.corpus_stamp == corpus_stamp(folder)
    dense = minilm.retriever(dense_index, num_results=1)(queries)
    assert dense["docno"].tolist() == list(ADDED)


def test_pisa_index_of_another_corpus_is_refused_or_built_again(tmp_path):
    folder = beir_folder(tmp_path / "corpus", make_docs(30, seed=5))
    index_dir = str(tmp_path / "bm25")
    pisa_bm25(index_dir, folder)
    pisa_bm25(index_dir, folder)  # the same corpus: reused
    pisa_bm25(index_dir)  # no corpus given: used as it is
    append_documents(folder, ADDED)
    with pytest.raises(ValueError, match=f"PISA index at {index_dir} was built from the corpus .* not from the one "
                                         f"given now.*rebuild_stale=True"):
        pisa_bm25(index_dir, folder)
    query = pd.DataFrame({"qid": ["q"], "query": [ADDED["new3"]]})
    with pytest.warns(UserWarning, match="building it again"):
        assert pisa_bm25(index_dir, folder, rebuild_stale=True, num_results=1)(query)["docno"].tolist() == ["new3"]

    (tmp_path / "bm25" / "my_notes.txt").write_text("mine")
    append_documents(folder, {"new-after": "xylo cell"})
    with pytest.raises(FileExistsError, match="my_notes.txt"), pytest.warns(UserWarning):
        pisa_bm25(index_dir, folder, rebuild_stale=True)  # a rebuild never deletes what is not PISA's
    assert (tmp_path / "bm25" / "my_notes.txt").read_text() == "mine"
    os.remove(os.path.join(index_dir, CORPUS_STAMP_FILE))  # as built by pyterrier_pisa or an older version
    for rebuild_stale in (False, True):  # not ours: never replaced
        with pytest.raises(ValueError, match="carries no corpus stamp.*not ours to replace"):
            pisa_bm25(index_dir, folder, rebuild_stale=rebuild_stale)


def test_a_pisa_index_built_meanwhile_by_another_writer_is_reused_not_built_again(tmp_path, monkeypatch):
    """The build is decided again under the lock: a writer that found no index while another was building it
    reuses that index instead of building (and swapping in) its own."""
    from pyterrier_e2rank import bm25
    folder = beir_folder(tmp_path / "corpus", make_docs(30, seed=5))
    index_dir = tmp_path / "bm25"
    lock = bm25.writer_lock

    def another_writer_builds_then_lock(target):
        if not others:  # found no index; the other writer (a thread: the lock excludes threads as it does
            others.append(threading.Thread(target=pisa_bm25, args=(str(index_dir), folder)))  # processes) builds it
            others[0].start()
            others[0].join()
            built_by_the_other.append(os.stat(index_dir).st_ino)
        return lock(target)
    built_by_the_other, others = [], []
    monkeypatch.setattr(bm25, "writer_lock", another_writer_builds_then_lock)
    pisa_bm25(str(index_dir), folder)
    assert [os.stat(index_dir).st_ino] == built_by_the_other  # the other's index, not one swapped in after it
    assert pisa_bm25(str(index_dir), folder, num_results=1)(pd.DataFrame({"qid": ["q"], "query": ["gene"]})).shape[0]


def test_corpus_stamp_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    folder = beir_folder(tmp_path / "corpus", ["alpha beta", "gamma delta"])
    before = corpus_stamp(folder)
    corpus = folder / "corpus.jsonl"
    stat = corpus.stat()
    corpus.write_text(corpus.read_text().replace("alpha", "alphb"))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p / rsync -t leave it
    assert corpus.stat().st_size == stat.st_size and corpus_stamp(folder) != before
    assert corpus_stamp(folder)["corpus"] == before["corpus"] == corpus_id(dataset(folder))
    assert corpus_stamp("irds:beir/scifact/test") == {"corpus": "beir/scifact"}  # a published collection: its id


def test_index_command_stamps_its_index_and_keeps_its_text_unless_told(tmp_path, minilm_dir):
    from pyterrier_e2rank.cli.main import main
    folder = beir_folder(tmp_path / "corpus", make_docs(12, seed=5))
    assert main(["index", "--dataset", str(folder), "--model", str(minilm_dir), "--output",
                 str(tmp_path / "index"), "--quiet"]) == 0
    index = E2RankIndex(tmp_path / "index")
    assert index.corpus_stamp == corpus_stamp(folder)
    assert index.texts(["d0"]) == DocumentText(folder)(pd.DataFrame({"docno": ["d0"]}))["text"].tolist()
    assert main(["index", "--dataset", str(folder), "--model", str(minilm_dir), "--output",
                 str(tmp_path / "index"), "--quiet", "--overwrite", "--no-text"]) == 0
    with pytest.raises(ValueError, match="keeps no document text"):
        E2RankIndex(tmp_path / "index").texts(["d0"])



def test_index_command_refuses_an_existing_index_before_loading_the_model(tmp_path, minilm_dir, monkeypatch):
    from pyterrier_e2rank.cli import arguments
    from pyterrier_e2rank.cli.main import main
    folder = beir_folder(tmp_path / "corpus", make_docs(12, seed=5))
    command = ["index", "--dataset", str(folder), "--model", str(minilm_dir), "--output", str(tmp_path / "index"),
               "--quiet"]
    assert main(command) == 0
    loaded = []
    monkeypatch.setattr(arguments, "load_model", lambda *a, **k: loaded.append(1))
    with pytest.raises(FileExistsError, match=r"already exists at .*; pass --overwrite to replace it, or --append"):
        main(command)
    assert loaded == []

# ---- a checkpoint's prompt settings are the default everywhere -------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tiny_qwen_dir, tmp_path_factory):
    """The tiny Qwen3 with saved prompt settings, as the trainer writes them: 3 documents in the prompt."""
    directory = tmp_path_factory.mktemp("checkpoint") / "trained"
    shutil.copytree(tiny_qwen_dir, directory)
    write_prompt_settings(directory, {"num_input_docs": 3})
    return directory


@pytest.mark.slow
def test_rerank_run_takes_the_checkpoints_num_input_docs(checkpoint, tmp_path):
    from pyterrier_e2rank.cli.main import main
    from pyterrier_e2rank.cli.runs import read_run, write_run
    folder = beir_folder(tmp_path / "corpus", make_docs(12, seed=5))
    run = pd.DataFrame({"qid": ["q1"] * 8 + ["q2"] * 8, "docno": [f"d{i}" for i in range(8)] * 2,
                        "score": list(range(8, 0, -1)) * 2, "rank": list(range(8)) * 2})
    write_run(run, tmp_path / "bm25.run")
    outputs = {}
    for given in ([], ["--num-input-docs", "3"], ["--num-input-docs", "5"]):
        output = tmp_path / f"e2rank{''.join(given)}.run"
        assert main(["rerank-run", "--run", str(tmp_path / "bm25.run"), "--topics", str(folder), "--docs",
                     str(folder), "--model", str(checkpoint), "--output", str(output), *given]) == 0
        outputs[tuple(given)] = read_run(output)
    pd.testing.assert_frame_equal(outputs[()], outputs[("--num-input-docs", "3")])
    assert not outputs[()]["score"].equals(outputs[("--num-input-docs", "5")]["score"])  # an explicit value wins


@pytest.mark.slow
def test_experiment_and_pyserini_take_the_checkpoints_num_input_docs(checkpoint, tmp_path):
    from pyterrier_e2rank.pyserini import HitReranker, RerankedHit
    model = E2Rank(str(checkpoint), batch_size=4)
    folder = beir_folder(tmp_path / "corpus", make_docs(12, seed=5))
    assert run_experiment(folder, model, index_dir=tmp_path / "indexes", top_k=5, verbose=False)["_prompt"] == \
        {"num_input_docs": 3}
    assert run_experiment(folder, model, index_dir=tmp_path / "indexes", top_k=5, num_input_docs=5,
                          verbose=False)["_prompt"] == {"num_input_docs": 5}

    texts = dict(zip([f"d{i}" for i in range(8)], make_docs(8, seed=5)))
    hits = [RerankedHit(docid, float(8 - rank), rank) for rank, docid in enumerate(texts)]
    reranked = HitReranker(model, texts).rerank("gene therapy", hits)
    assert HitReranker(model, texts).reranker.prompt.num_input_docs == 3
    assert HitReranker(model, texts, num_input_docs=5).reranker.prompt.num_input_docs == 5
    frame = pd.DataFrame({"qid": "0", "query": "gene therapy", "docno": list(texts), "text": list(texts.values()),
                          "score": np.arange(8, 0, -1.0), "rank": np.arange(8)})
    expected = model.reranker(num_input_docs=3)(frame)
    assert [hit.docid for hit in reranked] == expected["docno"].tolist()
    np.testing.assert_allclose([hit.score for hit in reranked], expected["score"], atol=1e-6)


@pytest.mark.slow
def test_dense_index_for_rebuilds_an_index_of_other_weights(tiny_qwen_dir, other_tiny_qwen_dir, tmp_path):
    """Weights replaced at the model's path (a checkpoint trained again): the experiment's index of that
    path is built again instead of being refused or served."""
    folder = beir_folder(tmp_path / "corpus", make_docs(12, seed=5))
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_qwen_dir, model_dir)
    first = dense_index_for(E2Rank(str(model_dir)), folder, tmp_path / "indexes", verbose=False)
    shutil.rmtree(model_dir)
    shutil.copytree(other_tiny_qwen_dir, model_dir)
    retrained = E2Rank(str(model_dir))
    with pytest.warns(UserWarning, match="other weights"):
        index = dense_index_for(retrained, folder, tmp_path / "indexes", verbose=False)
    assert index.path == first.path
    np.testing.assert_allclose(index.vectors(["d1"]), retrained.encode_docs([make_docs(12, seed=5)[1]]), atol=1e-6)


@pytest.mark.slow
def test_a_fine_tuned_checkpoint_saves_the_prompt_it_was_trained_with(tiny_qwen_dir, tmp_path):
    """Fine-tuning a checkpoint with saved settings (task, variant) on lists of 4 documents, the user giving
    no prompt option: the new checkpoint reranks with the prompt it was trained with (its base's task and
    variant, the whole list of 4), not the paper's defaults."""
    from pyterrier_e2rank.cli.main import train_main
    base = tmp_path / "base"
    shutil.copytree(tiny_qwen_dir, base)
    write_prompt_settings(base, {"task": "Rank the abstracts for the claim", "prompt_variant": "readme"})
    data = tmp_path / "train.jsonl"
    texts = make_docs(8, seed=5)
    data.write_text("".join(json.dumps({"query": f"gene {i}", "document": texts[i:i + 4], "ranking": [2, 1, 3, 4]})
                            + "\n" for i in range(4)))
    output = tmp_path / "trained"
    assert train_main(["--stage", "2", "--model", str(base), "--data", str(data), "--output", str(output),
                       "--max-steps", "1", "--batch-size", "2"]) == 0
    prompt = E2Rank(str(output)).reranker().prompt
    expected = ("Rank the abstracts for the claim", "readme", 4)
    assert (prompt.task, prompt.prompt_variant, prompt.num_input_docs) == expected


def test_document_text_follows_an_edit_that_keeps_size_and_mtime(tmp_path):
    """The document store cached for a local corpus is keyed on its content: the reranker's text and
    the indexed text never disagree."""
    from pyterrier_e2rank.data import DocumentText
    folder = beir_folder(tmp_path / "corpus", ["alpha beta", "gamma delta"])
    assert DocumentText(dataset(folder))(pd.DataFrame({"docno": ["d0"]}))["text"].tolist() == ["alpha beta"]
    corpus = folder / "corpus.jsonl"
    stat = corpus.stat()
    corpus.write_text(corpus.read_text().replace("alpha", "alphb"))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert DocumentText(dataset(folder))(pd.DataFrame({"docno": ["d0"]}))["text"].tolist() == ["alphb beta"]
