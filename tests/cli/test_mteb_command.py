"""``e2rank mteb``: two models side by side on a local SciFact subset, mteb's files kept and reused; bad input."""
import json

import pytest
from fixtures.scifact_subset import write_scifact_subset

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli.main import main

mteb = pytest.importorskip("mteb")
from pyterrier_e2rank.mteb_adapter import E2RankMTEB  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))


@pytest.mark.slow  # four model loads and two mteb runs: 10-20 s on 2 shared cores
def test_two_models_side_by_side_from_mteb_files(tiny_qwen_dir, other_tiny_qwen_dir, shared_path, tmp_path, capsys):
    subset = write_scifact_subset(shared_path("data", "scifact"), tmp_path / "scifact", num_queries=10, num_docs=20)
    models, output = [str(tiny_qwen_dir), str(other_tiny_qwen_dir)], tmp_path / "out"
    argv = ["mteb", "--model", models[0], "--model", models[1], "--tasks", str(subset), "--output", str(output)]
    assert main(argv) == 0
    results = json.loads((output / "results.json").read_text())
    assert list(results) == ["scifact"] and list(results["scifact"]) == models
    files = sorted((output / "mteb").rglob("scifact.json"))
    assert len(files) == 2  # one per model: other weights, another revision
    revision = E2RankMTEB(E2Rank(models[0], doc_max_words=None)).mteb_model_meta.revision  # no word cut by default
    assert revision in {f.parent.name for f in files}
    kept = {json.loads(f.read_text())["scores"]["test"][0]["ndcg_at_10"] for f in files}
    assert {scores["ndcg_at_10"] for scores in results["scifact"].values()} == kept
    table = (output / "results.md").read_text()
    assert table in capsys.readouterr().out
    assert f"| scifact | ndcg_at_10 | {results['scifact'][models[0]]['ndcg_at_10']:.4f} |" in table
    written = [f.stat().st_mtime_ns for f in files]
    assert main(argv) == 0  # again: mteb's results are reused, not recomputed
    assert [f.stat().st_mtime_ns for f in files] == written
    assert json.loads((output / "results.json").read_text()) == results


def test_bad_input_is_refused_naming_it(tiny_qwen_dir, tmp_path):
    with pytest.raises(ValueError, match="'NoSuchTask'"):
        main(["mteb", "--model", str(tiny_qwen_dir), "--tasks", "NoSuchTask", "--output", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="given twice"):
        main(["mteb", "--model", str(tiny_qwen_dir), "--model", str(tiny_qwen_dir), "--tasks", "SciFact",
              "--output", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        main(["mteb", "--model", str(tiny_qwen_dir), "--tasks", "SciFact", "--output", str(tmp_path / "out"),
              "--doc-max-words", "0"])
    assert not (tmp_path / "out").exists()
