"""``e2rank reproduce``: the same numbers as ``e2rank experiment`` and ``rerank-run`` on the same candidates,
each distinct candidate encoded once, a killed suite resumed, and bad input named (cli/reproduce.py, suite.py,
paper.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pyterrier_e2rank.cli import main as cli
from pyterrier_e2rank.cli.experiment import index_name, run_experiment
from pyterrier_e2rank.cli.paper import DatasetUnavailable, SuiteDataset, paper_row, resolve_dataset, results_table
from pyterrier_e2rank.cli import suite
from pyterrier_e2rank.cli.reproduce import reproduce
from pyterrier_e2rank.cli.runs import evaluate_run, read_qrels, read_run, read_topics, rerank_run, write_run
from pyterrier_e2rank.io import ArtifactLocked, file_sha256

from fixtures.writers import held_by_another_process

SCIFACT = "irds:beir/scifact/test"
TOP_K = 10


@pytest.fixture(scope="module")
def cached_minilm(minilm_dir):
    from pyterrier_e2rank import E2Rank
    return E2Rank(str(minilm_dir), batch_size=16, cache_doc_vectors=True)


@pytest.fixture(scope="module")
def scifact_run(scifact, tmp_path_factory):
    """PISA BM25 top 10 of SciFact's first 2 test queries, as a pinned TREC run file."""
    from pyterrier_e2rank.bm25 import pisa_bm25
    folder = tmp_path_factory.mktemp("scifact-run")
    topics = scifact.get_topics().head(2)
    path = folder / "bm25.run"
    write_run(pisa_bm25(str(folder / "bm25.pisa"), scifact, num_results=TOP_K)(topics), path, tag="bm25")
    return path


@pytest.mark.slow
def test_suite_matches_experiment_and_rerank_run(cached_minilm, scifact, small_scifact, scifact_run, tmp_path):
    """A BEIR folder with PISA (against ``run_experiment``) and SciFact with a pinned run (against
    ``rerank_run``) in one suite; texts encoded = distinct candidates + one prompt per query."""
    folder = str(small_scifact)
    results = reproduce(cached_minilm, [folder, SCIFACT], tmp_path / "out", runs={SCIFACT: str(scifact_run)},
                        index_dir=tmp_path / "indexes", top_k=TOP_K, num_queries=2, verbose=False)
    experiment = run_experiment(folder, cached_minilm, index_dir=str(tmp_path / "indexes"), top_k=TOP_K,
                                num_input_docs=20, num_queries=2, verbose=False)
    for system in ("bm25", "bm25>>e2rank"):
        for measure in ("nDCG@10", "R@100"):
            assert results[folder][system][measure] == pytest.approx(experiment[system][measure], abs=1e-9)

    qrels = read_qrels(SCIFACT)
    pinned = read_run(scifact_run)
    qrels = qrels[qrels["query_id"].isin(set(pinned["qid"]))]
    reranked = rerank_run(cached_minilm, pinned, scifact.get_topics(), SCIFACT, top_k=TOP_K)
    assert results[SCIFACT]["bm25"] == pytest.approx(evaluate_run(pinned, qrels, ["nDCG@10", "R@100"]))
    assert results[SCIFACT]["bm25>>e2rank"] == pytest.approx(evaluate_run(reranked, qrels, ["nDCG@10", "R@100"]))

    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text()) == results
    record = json.loads((out / "run_record.json").read_text())
    assert record["datasets"][SCIFACT]["texts_encoded"] == pinned["docno"].nunique() + 2
    assert record["datasets"][SCIFACT]["first_stage"]["kind"] == "run file"
    assert record["datasets"][folder]["first_stage"]["kind"] == "pisa"
    assert record["prompt"]["num_input_docs"] == 20 and record["fingerprint"] == cached_minilm.fingerprint()
    table = (out / "results.md").read_text()
    assert "| BM25 |" in table and "67.89" in table  # SciFact is a paper column: the paper's BM25 beside ours

    before = cached_minilm.stats.texts
    assert reproduce(cached_minilm, [folder, SCIFACT], out, runs={SCIFACT: str(scifact_run)},
                     index_dir=tmp_path / "indexes", top_k=TOP_K, num_queries=2, verbose=False) == results
    assert cached_minilm.stats.texts == before  # finished datasets are read back, nothing encoded again
    with pytest.raises(ValueError, match=r"suite run\) was begun with other top_k \(\[10\], now \[5\]\).*--overwrite"):
        reproduce(cached_minilm, [folder], out, index_dir=tmp_path / "indexes", top_k=5, num_queries=2,
                  verbose=False)


def test_a_resumed_dataset_reranks_only_the_queries_not_committed(cached_minilm, small_scifact, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(suite, "QUERIES_PER_CHUNK", 1)
    folder, out = str(small_scifact), tmp_path / "out"
    settings = dict(index_dir=tmp_path / "indexes", top_k=5, num_queries=2, verbose=False)
    first = reproduce(cached_minilm, [folder], out, **settings)
    done = out / "datasets" / index_name(folder)
    committed = done / "bm25-e2rank.run"
    whole, lines = committed.read_bytes(), committed.read_text().splitlines(keepends=True)
    (done / "results.json").unlink()  # killed after the first query's chunk was committed:
    committed.write_text("".join(line for line in lines if line.split()[0] == lines[0].split()[0]))
    assert reproduce(cached_minilm, [folder], out, **settings) == first
    assert committed.read_bytes() == whole
    record = json.loads((out / "run_record.json").read_text())["datasets"][folder]
    assert record["texts_encoded"] == 1 + 5  # the second query and its candidates


@pytest.mark.slow
def test_killed_suite_resumes_after_the_finished_dataset(small_scifact, minilm_dir, scifact, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pyterrier_e2rank.cli.main", "reproduce", "--model", str(minilm_dir),
               "--dataset", str(small_scifact), "--dataset", SCIFACT, "--num-queries", "2",
               "--top-k", str(TOP_K), "--index-dir", str(tmp_path / "indexes"), "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    first = out / "datasets" / index_name(str(small_scifact)) / "results.json"
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        while not first.exists() and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert first.exists(), (tmp_path / "first.log").read_text()[-2000:]
    second = out / "datasets" / index_name(SCIFACT) / "results.json"
    assert not second.exists()  # killed while SciFact's PISA index or reranking was under way
    stamp = first.stat().st_mtime_ns, first.read_bytes()
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert (first.stat().st_mtime_ns, first.read_bytes()) == stamp  # kept, not computed again
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {str(small_scifact), SCIFACT}
    assert results[SCIFACT] == json.loads(second.read_text())["results"]


def test_unavailable_dataset_is_skipped_and_missing_run_lines_named(cached_minilm, small_scifact, tmp_path,
                                                                    monkeypatch):
    folder = str(small_scifact)
    qid, docno = read_qrels(folder)[["query_id", "doc_id"]].iloc[0]
    run = tmp_path / "pinned.run"
    run.write_text(f"{qid} Q0 {docno} 1 2.0 x\nnot-a-topic Q0 {docno} 1 1.0 x\n")
    with pytest.raises(ValueError, match=r"pinned.run:2: query 'not-a-topic' is not a topic.*--skip-missing"):
        reproduce(cached_minilm, [folder], tmp_path / "a", runs={folder: str(run)}, verbose=False)
    run.write_text(f"{qid} Q0 {docno} 1 2.0 x\n{qid} Q0 no-such-doc 2 1.0 x\n")
    with pytest.raises(ValueError, match=r"pinned.run:2: document 'no-such-doc' is not in the dataset's corpus"):
        reproduce(cached_minilm, [folder], tmp_path / "b", runs={folder: str(run)}, verbose=False)

    robust = "irds:disks45/nocr/trec-robust-2004"  # its documents are a manual download
    hashed = []
    monkeypatch.setattr(suite, "file_sha256", lambda path: hashed.append(str(path)) or file_sha256(path))
    results = reproduce(cached_minilm, [robust, folder], tmp_path / "c", runs={folder: str(run)},
                        skip_missing=True, verbose=False)
    assert list(results) == [folder]
    assert hashed.count(str(run)) == 1  # the pinned run is hashed once, however many places record its digest
    table = (tmp_path / "c" / "results.md").read_text()
    assert "0 queries and 1 documents the dataset lacks" in table
    assert f"skipped {robust}: FileNotFoundError" in table  # with ir_datasets' instructions:
    assert "ir_datasets said: The TREC Robust document collection is from TREC disks 4 and 5" in table
    with pytest.raises(ValueError, match=r"begun with other first_stage.*--overwrite"):  # PISA now, not the run
        reproduce(cached_minilm, [folder], tmp_path / "c", skip_missing=True, verbose=False)


def test_a_pinned_run_may_be_the_authors_candidates(cached_minilm, small_scifact, tmp_path):
    """Their ``{dataset}_top100.jsonl`` pins the same first stage as the TREC run of its ids and scores (the
    dataset's texts are reranked); a document the dataset lacks is named by its line."""
    folder = str(small_scifact)
    qrels = read_qrels(folder)
    docnos = [json.loads(line)["_id"] for line in (small_scifact / "corpus.jsonl").read_text().splitlines()[:6]]
    lines, trec = [], []
    for qid, query in read_topics(folder).head(2).values:
        ranked = list(dict.fromkeys(qrels[qrels["query_id"] == qid]["doc_id"].tolist() + docnos))
        hits = [{"qid": qid, "docid": d, "rank": r + 1, "score": 10.0 - r, "content": "not read"}
                for r, d in enumerate(ranked)]
        lines.append(json.dumps({"query": query, "hits": hits}) + "\n")
        trec += [f"{qid} Q0 {h['docid']} {h['rank']} {h['score']} x\n" for h in hits]
    (tmp_path / "top100.jsonl").write_text("".join(lines))
    (tmp_path / "bm25.run").write_text("".join(trec))
    settings = dict(index_dir=tmp_path / "indexes", top_k=5, num_queries=2, verbose=False)
    results = {name: reproduce(cached_minilm, [folder], tmp_path / f"out-{name}", runs={folder: str(tmp_path / name)},
                               **settings) for name in ("top100.jsonl", "bm25.run")}
    assert results["top100.jsonl"] == results["bm25.run"]
    first_stages = [(tmp_path / f"out-{name}" / "datasets" / index_name(folder) / "first-stage.run").read_bytes()
                    for name in results]
    assert first_stages[0] == first_stages[1] and len(first_stages[0].splitlines()) == 10
    record = json.loads((tmp_path / "out-top100.jsonl" / "run_record.json").read_text())["datasets"][folder]
    assert record["first_stage"]["kind"] == "run file" and record["first_stage"]["path"].endswith("top100.jsonl")

    (tmp_path / "bad.jsonl").write_text(lines[0] + lines[1].replace(docnos[0], "no-such-doc"))
    with pytest.raises(ValueError, match=r"bad.jsonl:2: document 'no-such-doc' is not in the dataset's corpus"):
        reproduce(cached_minilm, [folder], tmp_path / "bad", runs={folder: str(tmp_path / "bad.jsonl")}, **settings)


def test_bad_arguments_are_named(cached_minilm, small_scifact, tmp_path):
    with pytest.raises(ValueError, match=r"'irds:beir/scifakt/test'.*close names: .*irds:beir/scifact/test"):
        resolve_dataset("irds:beir/scifakt/test")
    with pytest.raises(DatasetUnavailable, match="build its BEIR folder"):
        resolve_dataset("signal1m")
    run = tmp_path / "x.run"
    run.write_text("1 Q0 d 1 1.0 x\n")
    folder = str(small_scifact)
    with pytest.raises(ValueError, match="two run files for dataset"):
        cli.main(["reproduce", "--model", "all-minilm-l6-v2", "--dataset", folder, "--output", str(tmp_path / "o"),
                  "--run", f"{folder}={run}", "--run", f"{folder}={run}"])
    with pytest.raises(ValueError, match="is not one of the datasets"):
        cli.main(["reproduce", "--model", "all-minilm-l6-v2", "--dataset", folder, "--output", str(tmp_path / "o"),
                  "--run", f"{SCIFACT}={run}"])
    with held_by_another_process(tmp_path / "locked"), pytest.raises(ArtifactLocked):
        reproduce(cached_minilm, [folder], tmp_path / "locked", verbose=False)


def test_a_bad_run_argument_is_refused_before_the_model_loads(small_scifact, tmp_path):
    """``reproduce`` takes the model by name from the command line and checks ``--run`` before loading it."""
    run, folder = tmp_path / "x.run", str(small_scifact)
    run.write_text("1 Q0 d 1 1.0 x\n")
    command = ["reproduce", "--model", "no-such-model", "--dataset", folder, "--output", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="is not one of the datasets"):
        cli.main(command + ["--run", f"{SCIFACT}={run}"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        cli.main(command + ["--run", f"{folder}={tmp_path / 'missing.run'}"])
    assert not (tmp_path / "o").exists()


def test_table_puts_the_paper_figures_beside_ours():
    assert paper_row("Alibaba-NLP/E2Rank-4B") == "E2Rank-4B" and paper_row("all-minilm-l6-v2") is None
    datasets = [SuiteDataset(SCIFACT, SCIFACT, "beir/scifact/test"), SuiteDataset("mine", "mine", "beir/mine")]
    finished = {d.label: {"results": {"bm25": {"nDCG@10": 0.7}, "bm25>>e2rank": {"nDCG@10": 0.75}},
                          "record": {"first_stage": {}}} for d in datasets}
    table = results_table("Alibaba-NLP/E2Rank-0.6B", datasets, finished, {"robust04": "robust04: not here"})
    assert "| BM25 | 70.00 (67.89, +2.11) | 70.00 | 70.00 (67.89, +2.11) |" in table
    assert "| BM25 >> E2Rank-0.6B | 75.00 (73.43, +1.57) | 75.00 | 75.00 (73.43, +1.57) |" in table
    assert "BEIR avg (1 of 8)" in table and "skipped robust04: not here" in table
    assert "(" not in results_table("my-model", datasets, finished, {}).splitlines()[3].split("|")[2]


def test_query_task_is_read_alike_by_experiment_and_reproduce():
    """``--query-task``: 'dataset' is the authors' instruction for an instructed model, 'auto' the model's own."""
    from pyterrier_e2rank.cli.experiment import query_task_for
    from pyterrier_e2rank.model.text import dataset_query_task
    scifact_task = dataset_query_task("beir/scifact")
    assert scifact_task is not None
    assert query_task_for("dataset", "the default", SCIFACT) == scifact_task
    assert query_task_for("dataset", "the default", "corpus.tsv") == "the default"
    assert query_task_for("dataset", None, SCIFACT) is None  # an encoder without instructions
    assert query_task_for("auto", "the default", SCIFACT) == "the default"
    assert query_task_for("Find the claim", None, SCIFACT) == "Find the claim"
