"""``e2rank study`` (study/runner.py, study/report.py, cli/study_command.py): the whole study on a small SciFact
folder with MiniLM and a tiny Qwen3 as the untrained second model; resumed without encoding again; changed
settings and foreign folders refused."""
import json

import pytest

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli import main as cli
from pyterrier_e2rank.cli.runs import evaluate_run, read_qrels, read_run, read_topics, rerank_run, write_run
from pyterrier_e2rank.study.runner import PRF_K, study

NUM_QUERIES, TOP_K = 2, 20
GRID = ["--grid-prompt-docs", "0", "2", "5", "--grid-depths", "5", "30"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def given_run(small_scifact, tmp_path_factory):
    """A run file of the folder's first queries: its first 25 documents, in corpus order."""
    import pandas as pd
    docnos = [json.loads(line)["_id"] for line in open(small_scifact / "corpus.jsonl")][:25]
    qids = [json.loads(line)["_id"] for line in open(small_scifact / "queries.jsonl")]
    run = pd.DataFrame([(q, d, -float(r), r) for q in qids for r, d in enumerate(docnos)],
                       columns=["qid", "docno", "score", "rank"])
    path = tmp_path_factory.mktemp("given") / "given.run"
    write_run(run, path, tag="given")
    return path


@pytest.mark.slow
def test_study_end_to_end_and_resumed(minilm_dir, tiny_qwen_dir, small_scifact, given_run, tmp_path):
    folder, out = str(small_scifact), tmp_path / "study"
    options = ["--dataset", folder, "--output", str(out), "--index-dir", str(tmp_path / "indexes"), "--num-queries",
               str(NUM_QUERIES), "--top-k", str(TOP_K), *GRID, "--timing-queries", "1",
               "--first-stage", f"given={given_run}"]
    assert cli.main(["study", "--model", str(minilm_dir), "--model", str(tiny_qwen_dir), *options]) == 0

    results = json.loads((out / "results.json").read_text())
    second = f"@{tiny_qwen_dir.name}"
    prf = [f"{kind}-prf-k{k}" for kind in ("average", "vector") for k in PRF_K]
    stages = ("bm25", "dense", "given")
    expected = {*stages, *(f"{s}>>{r}{m}" for s in stages for r in ("rerank-embedding", "rerank-e2rank")
                           for m in ("", second)), *(f"{s}>>{p}" for s in stages for p in prf)}
    assert list(results) == [folder] and set(results[folder]) == expected
    assert all(list(v) == ["nDCG@10"] and 0 <= v["nDCG@10"] <= 1 for v in results[folder].values())

    # the first stages and the reranking are what the library's own pieces give on the same candidates
    qrels = read_qrels(folder)
    given = read_run(given_run)
    given = given[given["qid"].isin(given["qid"].unique()[:NUM_QUERIES]) & (given["rank"] < TOP_K)]
    qrels = qrels[qrels["query_id"].isin(set(given["qid"]))]
    assert results[folder]["given"]["nDCG@10"] == pytest.approx(evaluate_run(given, qrels, ["nDCG@10"])["nDCG@10"])
    minilm = E2Rank(str(minilm_dir), batch_size=16)
    reranked = rerank_run(minilm, given, read_topics(folder), folder, top_k=TOP_K, num_input_docs=20)
    assert results[folder]["given>>rerank-e2rank"]["nDCG@10"] == pytest.approx(
        evaluate_run(reranked, qrels, ["nDCG@10"])["nDCG@10"])

    report = (out / "report.md").read_text()
    for heading in ("### a)", "### b)", "### c)", "### d)", "### e)", "### f)"):
        assert heading in report
    assert "| bm25>>average-prf-k3 |" in report and "| given |" in report and "| dense>>rerank-e2rank |" in report
    gain = results[folder]["bm25>>rerank-e2rank"]["nDCG@10"] - results[folder]["bm25>>rerank-embedding"]["nDCG@10"]
    assert f"| bm25 | `{minilm_dir}` | " in report and f"| {gain:+.4f} |" in report
    assert "| k | depth 5 | depth 30 |" in report and "training's share" in report and "Give a second" not in report
    figures = sorted((out / "figures").iterdir())
    assert len(figures) == 2 and all(f.read_bytes().startswith(PNG) and f"](figures/{f.name})" in report
                                      for f in figures)
    grid = json.loads(next((out / "steps").glob("*/grid.json")).read_text())
    assert {(row["k"], row["depth"]) for row in grid} == {(k, d) for k in (0, 2, 5) for d in (5, 30)}
    timing = json.loads(next((out / "steps").glob("*/timing.json")).read_text())
    assert [row["queries"] for row in timing] == [1, 1] and f"| {timing[0]['system']} |" in report

    # resumed with the same settings: every step read back, nothing encoded
    models = [minilm, E2Rank(str(tiny_qwen_dir), batch_size=16)]
    before = sum(m.stats.texts for m in models)
    again = study(models, [folder], out, first_stages={"given": str(given_run)}, index_dir=tmp_path / "indexes",
                  num_queries=NUM_QUERIES, top_k=TOP_K, prompt_docs=(0, 2, 5), depths=(5, 30), timing_queries=1,
                  verbose=False)
    assert again == results and sum(m.stats.texts for m in models) == before
    with pytest.raises(ValueError, match=r"\(a study\) was begun with other top_k \(\[20\], now \[10\]\).*--overwrite"):
        study(models, [folder], out, first_stages={"given": str(given_run)}, index_dir=tmp_path / "indexes",
              num_queries=NUM_QUERIES, top_k=10, prompt_docs=(0, 2, 5), depths=(5, 30), timing_queries=1,
              verbose=False)


def test_study_refuses_bad_arguments_and_foreign_folders(minilm, small_scifact, given_run, tmp_path):
    folder = str(small_scifact)
    with pytest.raises(ValueError, match=r"--first-stage bm25=.*not one of \('bm25', 'dense'\)"):
        study(minilm, [folder], tmp_path / "o", first_stages={"bm25": str(given_run)})
    with pytest.raises(FileNotFoundError, match=r"--first-stage mine=.*no such file"):
        study(minilm, [folder], tmp_path / "o", first_stages={"mine": str(tmp_path / "missing.run")})
    with pytest.raises(ValueError, match=r"--first-stage 'mine': expected NAME=PATH \(a name, '=', a run file\)"):
        cli.main(["study", "--model", "m", "--dataset", folder, "--output", str(tmp_path / "o"),
                  "--first-stage", "mine"])
    with pytest.raises(ValueError, match=r"--first-stage 'mine=b.run': the name 'mine' was given already "
                                         r"\(for 'a.run'\)"):
        cli.main(["study", "--model", "m", "--dataset", folder, "--output", str(tmp_path / "o"),
                  "--first-stage", "mine=a.run", "--first-stage", "mine=b.run"])
    with pytest.raises(ValueError, match=r"unknown measure 'nDCG@ten'"):
        study(minilm, [folder], tmp_path / "o", measures=["nDCG@ten"])
    with pytest.raises(ValueError, match=r"models: give one model, or two"):
        study([minilm] * 3, [folder], tmp_path / "o")
    with pytest.raises(ValueError, match=r"the output .*steps' is the input index_dir"):
        study(minilm, [folder], tmp_path / "o", index_dir=tmp_path / "o" / "steps")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "report.md").write_text("someone else's\n")
    with pytest.raises(FileExistsError, match=r"holds report.md but no settings.json of e2rank study"):
        study(minilm, [folder], foreign, index_dir=tmp_path / "indexes")
    assert sorted(p.name for p in foreign.iterdir()) == ["report.md"]


@pytest.mark.parametrize("top_k, num_input_docs, held", [(5, 20, 5), (100, 20, 20)])
def test_the_report_says_how_many_candidates_the_prompt_holds(top_k, num_input_docs, held):
    from pyterrier_e2rank.study.report import _intro
    intro = _intro({"models": ["m"], "top_k": top_k, "num_input_docs": num_input_docs})
    assert f"top {top_k} candidates" in intro and f"prompt holds the first {held} of them." in intro
