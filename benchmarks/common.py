"""What the benchmarks share: the machine, timers, SciFact candidates, the Qwen3 tokenizer of the random
Qwen3-shaped backbones (``pyterrier_e2rank.testing.qwen3_shaped``)."""
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch

#: The real Qwen3 tokenizer (in the team's ``../shared`` folder), for realistic token counts.
QWEN3_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "models" / "qwen3-tokenizer"


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": gpu}


@contextmanager
def timer(results: dict, key: str):
    started = time.perf_counter()
    yield
    results[key] = time.perf_counter() - started


def timed_cli(arguments: list, processes: int, log_dir: Path) -> float:
    """Seconds ``python -m pyterrier_e2rank.cli.main *arguments`` takes in one process, or under ``torchrun
    --standalone`` (rendezvous port chosen by the OS; each process's output in ``log_dir``) in ``processes``
    of ``cpu_count // processes`` threads each. torchrun's own options end at ``--`` (else it would read
    ``--run`` as its ``--run-path``)."""
    import subprocess
    import sys
    command, env = ["-m", "pyterrier_e2rank.cli.main", *arguments], dict(os.environ)
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), "--log-dir",
                   str(log_dir), "--redirects", "3", "-m", "pyterrier_e2rank.cli.main", "--", *arguments]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    started = time.perf_counter()
    subprocess.run([sys.executable, *command], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def bm25_candidates(num_queries: int, top_k: int, index_dir: Path, max_words=None):
    """SciFact test: BM25 (PISA) top ``top_k`` with text for the first ``num_queries`` queries."""
    import pyterrier as pt
    from pyterrier_e2rank.bm25 import pisa_bm25
    from pyterrier_e2rank.data import DocumentText
    from pyterrier_e2rank.model.text import truncate_words
    dataset = pt.get_dataset("irds:beir/scifact/test")
    topics = dataset.get_topics().head(num_queries)
    frame = (pisa_bm25(str(index_dir / "bm25.pisa"), dataset, num_results=top_k) >> DocumentText(dataset))(topics)
    if max_words is not None:
        frame["text"] = [truncate_words(t, max_words) for t in frame["text"]]
    return frame
