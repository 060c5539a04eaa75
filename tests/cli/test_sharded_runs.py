"""Commands on several processes (torchrun, gloo on CPU): ``rerank-run``, ``experiment`` and ``reproduce`` split
the queries across the processes and process 0 writes what one process writes; an error in one process is raised in
every process. Each process writes its own files (torchrun ``--log-dir``, report files); torchrun's
rendezvous port is chosen by the OS (``--standalone``)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.cli.main import main
from pyterrier_e2rank.cli.experiment import index_name
from pyterrier_e2rank.cli.runs import read_run, write_run
from pyterrier_e2rank.cli.sharding import query_blocks

from fixtures.docs import make_docs

QUERIES = {"q1": "gene therapy trial", "q2": "virus immune response", "q3": "brain blood dose",
           "q4": "mouse cancer cell", "q5": "human protein"}


def torchrun(*command, logs, timeout=600) -> subprocess.CompletedProcess:
    """``command`` on two processes; their output is in ``logs`` (one folder per process). torchrun's own
    options end at ``--``: without it, ``--run`` would be read as an abbreviation of torchrun's ``--run-path``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "--log-dir", str(logs), "--redirects", "3", *command],
                          capture_output=True, text=True, env=env, timeout=timeout)


def process_logs(logs) -> str:
    """Each process's output (its last 2000 characters), one after the other, named by its file."""
    return "\n".join(f"--- {path.relative_to(logs)}\n{path.read_text()[-2000:]}"
                     for path in sorted(logs.rglob("*.log")))


@pytest.fixture
def collection(tmp_path):
    """A BEIR folder of 30 documents and the 5 ``QUERIES``, 8 documents judged for each (grades 1 and 2, so
    that each query has measures of its own and a mean without some queries is another), and a run of 12
    documents for each."""
    folder = tmp_path / "corpus"
    (folder / "qrels").mkdir(parents=True)
    docs = make_docs(30, seed=7)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n"
                                                 for i, text in enumerate(docs)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    rng = np.random.default_rng(3)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\td{d}\t{rng.integers(1, 3)}\n" for q in QUERIES for d in rng.choice(30, size=8, replace=False)))
    run = pd.DataFrame([(q, f"d{d}", float(12 - r), r) for q in QUERIES
                        for r, d in enumerate(rng.choice(30, size=12, replace=False))],
                       columns=["qid", "docno", "score", "rank"])
    write_run(run, tmp_path / "first.run", tag="first")
    return folder


def test_queries_are_cut_into_contiguous_blocks_in_input_order():
    assert query_blocks(["b", "b", "a", "c", "a", "d", "e"], 2) == [["b", "a", "c"], ["d", "e"]]
    assert query_blocks(["q1", "q2"], 3) == [["q1"], ["q2"], []]
    assert query_blocks([], 2) == [[], []]


@pytest.mark.slow
def test_rerank_run_on_two_processes_writes_the_run_of_one(collection, minilm_dir, tmp_path):
    command = ["rerank-run", "--run", str(tmp_path / "first.run"), "--topics", str(collection), "--docs",
               str(collection), "--model", str(minilm_dir), "--top-k", "10", "--num-input-docs", "5"]
    assert main(command + ["--output", str(tmp_path / "one.run")]) == 0
    logs = tmp_path / "logs"
    done = torchrun("-m", "pyterrier_e2rank.cli.main", "--", *command, "--output", str(tmp_path / "two.run"),
                    logs=logs)
    assert done.returncode == 0, process_logs(logs)
    assert "process 0 of 2: 3 of 5 queries" in process_logs(logs)
    one, two = read_run(tmp_path / "one.run"), read_run(tmp_path / "two.run")
    assert two["qid"].unique().tolist() == list(QUERIES) and len(two) == 50
    assert two[["qid", "docno", "rank"]].equals(one[["qid", "docno", "rank"]])
    np.testing.assert_allclose(two["score"], one["score"], atol=1e-5)


@pytest.mark.slow
def test_experiment_on_two_processes_reports_the_results_of_one(collection, minilm_dir, tmp_path):
    """The two processes build their own indexes (BM25 by process 0, the dense index sharded), so that the
    results also say both builds are the one process's."""
    def command(name):
        return ["experiment", "--dataset", str(collection), "--model", str(minilm_dir), "--top-k", "10",
                "--num-input-docs", "5", "--bm25", "pisa", "--index-dir", str(tmp_path / f"indexes-{name}"),
                "--output", str(tmp_path / f"{name}.json")]
    assert main(command("one")) == 0
    logs = tmp_path / "logs"
    done = torchrun("-m", "pyterrier_e2rank.cli.main", "--", *command("two"), logs=logs)
    assert done.returncode == 0, process_logs(logs)
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert list(two) == list(one) == ["bm25", "bm25>>e2rank", "dense", "dense>>e2rank", "bm25>>e2rank-prf"]
    for system in one:
        assert two[system]["nDCG@10"] == pytest.approx(one[system]["nDCG@10"], abs=1e-9), system
        assert two[system]["R@100"] == pytest.approx(one[system]["R@100"], abs=1e-9), system
    assert one["bm25>>e2rank"]["nDCG@10"] != one["bm25"]["nDCG@10"]  # the reranker changed the ranking
    assert all(0 < one[system]["nDCG@10"] < 1 and 0 < one[system]["R@100"] < 1 for system in one)


@pytest.mark.slow
def test_reproduce_on_two_processes_writes_the_results_of_one(collection, minilm_dir, tmp_path):
    """Two datasets: the collection with PISA (built by process 0) and a copy of it with the pinned run, with
    the dense rows (the dense index built sharded). The texts encoded are those of both processes' blocks; a
    suite resumed with the pinned dataset's reranked queries committed (as a killed one leaves them) reranks
    nothing of it, every process deciding alike."""
    pinned = tmp_path / "pinned"
    shutil.copytree(collection, pinned)
    first = read_run(tmp_path / "first.run")

    def command(name):
        return ["reproduce", "--model", str(minilm_dir), "--dataset", str(collection), "--dataset", str(pinned),
                "--run", f"{pinned}={tmp_path / 'first.run'}", "--top-k", "10", "--num-input-docs", "5",
                "--index-dir", str(tmp_path / f"indexes-{name}"), "--output", str(tmp_path / name),
                "--dense"]
    assert main(command("one")) == 0
    logs = tmp_path / "logs"
    done = torchrun("-m", "pyterrier_e2rank.cli.main", "--", *command("two"), logs=logs)
    assert done.returncode == 0, process_logs(logs)
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    assert list(two) == list(one) == [str(collection), str(pinned)]
    for dataset in one:
        assert list(two[dataset]) == list(one[dataset]) == ["bm25", "bm25>>e2rank", "dense", "dense>>e2rank"]
        for system, measures in one[dataset].items():
            for measure, value in measures.items():
                assert two[dataset][system][measure] == pytest.approx(value, abs=1e-9), (dataset, system, measure)
        runs = [read_run(tmp_path / name / "datasets" / index_name(dataset) / "bm25-e2rank.run")
                for name in ("one", "two")]
        assert runs[1][["qid", "docno", "rank"]].equals(runs[0][["qid", "docno", "rank"]]) and len(runs[0]) == 50
        np.testing.assert_allclose(runs[1]["score"], runs[0]["score"], atol=1e-5)
    assert one[str(pinned)]["bm25>>e2rank"] != one[str(pinned)]["bm25"]  # the reranker changed the ranking

    candidates = first[first["rank"] < 10]
    records = [json.loads((tmp_path / name / "run_record.json").read_text()) for name in ("one", "two")]
    assert records[0]["datasets"][str(pinned)]["texts_encoded"] == candidates["docno"].nunique() + len(QUERIES)
    assert records[1]["datasets"][str(pinned)]["texts_encoded"] == sum(  # each process encodes its block's
        candidates[candidates["qid"].isin(block)]["docno"].nunique() + len(block)
        for block in query_blocks(list(QUERIES), 2))
    assert (records[0]["processes"], records[1]["processes"]) == (1, 2)

    folder = tmp_path / "two" / "datasets" / index_name(str(pinned))
    (folder / "results.json").unlink()  # its queries' reranked run committed, as a killed suite leaves it
    finished = tmp_path / "two" / "datasets" / index_name(str(collection)) / "results.json"
    stamp = finished.stat().st_mtime_ns
    shutil.rmtree(logs)
    done = torchrun("-m", "pyterrier_e2rank.cli.main", "--", *command("two"), logs=logs)
    assert done.returncode == 0, process_logs(logs)
    assert json.loads((tmp_path / "two" / "results.json").read_text()) == two and finished.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "two" / "run_record.json").read_text())["datasets"][str(pinned)][
        "texts_encoded"] == 0

_FAILING = """
import json, os, sys
import pandas as pd
import pyterrier as pt
from pyterrier_e2rank.cli.sharding import transform_by_query

def fail_on_q4(frame):
    if "q4" in set(frame["qid"]):
        raise KeyError("docno 'd9' of qid 'q4' is not in the collection")
    return frame.assign(score=1.0)

frame = pd.DataFrame({"qid": ["q1", "q2", "q3", "q4", "q5"], "query": ["a", "b", "c", "d", "e"]})
report = {"rank": int(os.environ["RANK"])}
try:
    transform_by_query(pt.apply.generic(fail_on_q4), frame)
except KeyError as e:
    report.update(error=str(e), notes=getattr(e, "__notes__", []))
with open(os.path.join(sys.argv[1], f"rank-{report['rank']}.json"), "w") as out:
    json.dump(report, out)
"""


@pytest.mark.slow
def test_an_error_in_one_process_is_raised_in_every_process(tmp_path):
    """q4 is in process 1's block: process 0 does not wait for its frame, both raise the KeyError, with a
    note naming process 1."""
    script, reports, logs = tmp_path / "failing.py", tmp_path / "reports", tmp_path / "logs"
    script.write_text(_FAILING)
    reports.mkdir()
    done = torchrun(str(script), str(reports), logs=logs, timeout=300)
    assert done.returncode == 0, process_logs(logs)
    note = "(raised by process 1 of 2, in its queries from qid 'q4')"
    assert [json.loads((reports / f"rank-{rank}.json").read_text()) for rank in (0, 1)] == [
        {"rank": rank, "error": "\"docno 'd9' of qid 'q4' is not in the collection\"", "notes": [note]}
        for rank in (0, 1)]


_DECIDING = """
import json, os, sys
from pyterrier_e2rank.cli.sharding import main_process_decides, main_process_first

rank = int(os.environ["RANK"])


def build():
    raise KeyError(f"built by process {rank}")


report = {"decided": main_process_decides(lambda: f"process {rank}'s decision"), "errors": []}
for block in ("decides", "first"):
    try:
        if block == "decides":
            main_process_decides(lambda: int(f"not a number in process {rank}"))
        else:
            main_process_first(build)
        report["errors"].append(None)
    except (ValueError, KeyError) as e:
        report["errors"].append([type(e).__name__, str(e), getattr(e, "__notes__", [])])
with open(os.path.join(sys.argv[1], f"rank-{rank}.json"), "w") as out:
    json.dump(report, out)
"""


@pytest.mark.slow
def test_process_0_decides_for_every_process_and_its_errors_are_raised_in_each(tmp_path):
    """Every process gets process 0's decision, or its error: none waits for process 0 in vain, and the
    others do not run the block that failed in process 0."""
    script, reports, logs = tmp_path / "deciding.py", tmp_path / "reports", tmp_path / "logs"
    script.write_text(_DECIDING)
    reports.mkdir()
    done = torchrun(str(script), str(reports), logs=logs, timeout=300)
    assert done.returncode == 0, process_logs(logs)
    note = ["(raised by process 0 of 2)"]
    assert [json.loads((reports / f"rank-{rank}.json").read_text()) for rank in (0, 1)] == [
        {"decided": "process 0's decision",
         "errors": [["ValueError", "invalid literal for int() with base 10: 'not a number in process 0'", note],
                    ["KeyError", "'built by process 0'", note]]}] * 2
