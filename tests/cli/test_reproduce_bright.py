"""BRIGHT through the commands: ``e2rank reproduce --suite bright`` and ``--dataset bright/<domain>`` on a local
copy (``--bright-dir``, ``--bright-query``), excluded ids removed and counted, and the paper's BRIGHT average in the
table (cli/reproduce.py, suite.py, paper.py, experiment.py)."""
import json
import math

import ir_measures
import pytest
from ir_measures import nDCG

from pyterrier_e2rank.cli import main as cli
from pyterrier_e2rank.cli.experiment import index_name
from pyterrier_e2rank.cli.paper import BRIGHT_SUITE, SuiteDataset, results_table
from pyterrier_e2rank.cli.runs import read_run

from fixtures.bright import examples_and_documents, write_bright_copy

#: nDCG@10 of BM25 on each domain of the copy: q1's excluded near copy removed, its gold document first;
#: q2's and q3's gold documents second.
WITH_EXCLUSION = (1 + 2 / math.log2(3)) / 3
WITHOUT = 1 / math.log2(3)


def _ndcg(run, qrels) -> float:
    return ir_measures.calc_aggregate([nDCG @ 10], qrels, run.rename(columns={"qid": "query_id", "docno": "doc_id"}))[
        nDCG @ 10]


def test_reproduce_suite_bright_removes_the_excluded_ids(tiny_qwen_dir, tmp_path, capsys):
    copy, out = write_bright_copy(tmp_path / "copy", "parquet"), tmp_path / "out"
    assert cli.main(["reproduce", "--model", str(tiny_qwen_dir), "--suite", "bright", "--bright-dir", str(copy),
                     "--top-k", "5", "--index-dir", str(tmp_path / "indexes"), "--output", str(out),
                     "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    record = json.loads((out / "run_record.json").read_text())
    assert list(results) == ["bright/biology", "bright/leetcode"]
    for domain in ("biology", "leetcode"):
        label = f"bright/{domain}"
        examples, _ = examples_and_documents(domain)
        qrels = [ir_measures.Qrel(e["id"], g, 1) for e in examples for g in e["gold_ids"]]
        raw = read_run(out / "datasets" / index_name(label) / "first-stage.run")  # as retrieved, excluded ids in
        kept = raw[raw["docno"] != f"{domain}/copy-0"]  # q1's excluded id, removed by hand
        assert _ndcg(raw, qrels) == pytest.approx(WITHOUT)
        capsys.readouterr()
        cli.main(["eval-run", "--run", str(out / "datasets" / index_name(label) / "first-stage.run"), "--qrels", label,
                  "--bright-dir", str(copy), "--metrics", "nDCG@10"])  # as it evaluates any run: nothing removed
        assert capsys.readouterr().out == f"nDCG@10\t{WITHOUT:.4f}\n"
        assert results[label]["bm25"]["nDCG@10"] == pytest.approx(_ndcg(kept, qrels)) == pytest.approx(WITH_EXCLUSION)
        assert record["datasets"][label]["first_stage"]["excluded_ids"]["removed"] == 1
        reranked = read_run(out / "datasets" / index_name(label) / "bm25-e2rank.run")
        assert f"{domain}/copy-0" not in set(reranked[reranked["qid"] == "q1"]["docno"])  # nor in its prompt
    table = (out / "results.md").read_text()
    assert "| bright/biology | bright/leetcode | BRIGHT avg (2 of 12) |" in table and "BEIR avg" not in table
    assert f"| BM25 | {100 * WITH_EXCLUSION:.2f} | {100 * WITH_EXCLUSION:.2f} | {100 * WITH_EXCLUSION:.2f} |" in table
    assert "bright/biology: 1 documents of the queries' excluded_ids removed" in table
    assert "skipped bright/aops: FileNotFoundError:" in table and "lacks the domain 'aops'" in table


@pytest.mark.slow
def test_a_domain_in_experiment_and_reproduce_with_its_reasoning_or_one_candidate(tiny_qwen_dir, tmp_path, capsys):
    copy = write_bright_copy(tmp_path / "copy", "jsonl", domains=("biology",))
    common = ["--model", str(tiny_qwen_dir), "--dataset", "bright/biology", "--bright-dir", str(copy),
              "--index-dir", str(tmp_path / "indexes"), "--device", "cpu"]
    assert cli.main(["reproduce", *common, "--bright-query", "reasoning", "--output", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "run_record.json").read_text())["datasets"]["bright/biology"]
    assert record["source"].endswith("/reasoning")
    assert "queries: the reasoning field" in (tmp_path / "out" / "results.md").read_text()
    # the reasoning texts find the gold documents first (the query texts: WITH_EXCLUSION)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["bright/biology"]["bm25"]["nDCG@10"] == 1.0
    # one candidate: q1's excluded near copy is replaced by the next, its gold document; q2's and q3's are not gold
    assert cli.main(["reproduce", *common, "--top-k", "1", "--output", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "results.json").read_text())["bright/biology"]
    assert one["bm25"]["nDCG@10"] == pytest.approx(1 / 3)
    capsys.readouterr()
    assert cli.main(["experiment", *common, "--top-k", "1", "--output", str(tmp_path / "experiment.json")]) == 0
    assert "BRIGHT's excluded_ids: 1 documents of 1 queries removed from every ranking" in capsys.readouterr().out
    experiment = json.loads((tmp_path / "experiment.json").read_text())
    assert experiment["bm25"]["nDCG@10"] == experiment["bm25>>e2rank"]["nDCG@10"] == pytest.approx(1 / 3)


def test_the_paper_average_is_beside_ours_only_over_all_twelve_domains():
    datasets = [SuiteDataset(label, f"irds:local/{label}", label) for label in BRIGHT_SUITE]
    finished = {d.label: {"results": {"bm25": {"nDCG@10": 0.1}, "bm25>>e2rank": {"nDCG@10": 0.2}},
                          "record": {"first_stage": {}}} for d in datasets}
    table = results_table("Alibaba-NLP/E2Rank-4B", datasets, finished, {})
    assert "BRIGHT avg (12 of 12) |" in table and "only the average is compared" in table
    assert "| 10.00 (13.70, -3.70) |" in table and "| 20.00 (22.30, -2.30) |" in table
    assert "in brackets the paper's figure" in table
    eleven = results_table("Alibaba-NLP/E2Rank-4B", datasets[:11], finished, {})
    assert "(" not in eleven.splitlines()[2] and "brackets" not in eleven  # no figure to compare: no such note
