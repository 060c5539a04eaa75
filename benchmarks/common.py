"""What the benchmarks share: the machine, timers, SciFact candidates, and a Qwen3-shaped backbone."""
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
QWEN3_TOKENIZER = SHARED / "models" / "qwen3-tokenizer"

#: E2Rank-0.6B's backbone shape (Qwen3-0.6B), with ``num_hidden_layers`` chosen per run.
E2RANK_06B_SHAPE = dict(hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8,
                        head_dim=128, max_position_embeddings=32768, rope_theta=1000000, tie_word_embeddings=True)

#: A Qwen3 small enough for the tests on a CPU, with room for the long prompts they build.
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=8192)


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


def qwen3_shaped(directory: Path, num_layers: int, *, shape: dict = E2RANK_06B_SHAPE, causal_lm: bool = False,
                 seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """A random-weight Qwen3 of ``shape`` (E2Rank-0.6B's by default, ``TINY_SHAPE`` for the tests) with
    ``num_layers`` layers and the real Qwen3 tokenizer and chat template, so token counts and prompts are
    realistic; stored in ``dtype`` (the published checkpoints are bfloat16). The one builder that the tests
    and the benchmarks share; a directory that already holds a model is reused."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, Qwen3Config
    if not QWEN3_TOKENIZER.exists():
        raise FileNotFoundError(f"{QWEN3_TOKENIZER} is needed for realistic token counts")
    directory = Path(directory)
    if not (directory / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(QWEN3_TOKENIZER)
        config = Qwen3Config(vocab_size=len(tokenizer), num_hidden_layers=num_layers, **shape)
        torch.manual_seed(seed)
        model = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config).to(dtype)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory


def timed_cli(arguments: list, processes: int, log_dir: Path) -> float:
    """Seconds ``python -m pyterrier_e2rank.app.cli *arguments`` takes in one process, or under ``torchrun
    --standalone`` (rendezvous port chosen by the OS; each process's output in ``log_dir``) in ``processes``
    of ``cpu_count // processes`` threads each. torchrun's own options end at ``--`` (else it would read
    ``--run`` as its ``--run-path``)."""
    import subprocess
    import sys
    command, env = ["-m", "pyterrier_e2rank.app.cli", *arguments], dict(os.environ)
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), "--log-dir",
                   str(log_dir), "--redirects", "3", "-m", "pyterrier_e2rank.app.cli", "--", *arguments]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    started = time.perf_counter()
    subprocess.run([sys.executable, *command], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def bm25_candidates(num_queries: int, top_k: int, index_dir: Path, max_words=None):
    """SciFact test: BM25 (PISA) top ``top_k`` with text for the first ``num_queries`` queries."""
    import pyterrier as pt
    from pyterrier_e2rank.bm25 import pisa_bm25
    from pyterrier_e2rank.data import DocumentText
    from pyterrier_e2rank.core.text import truncate_words
    dataset = pt.get_dataset("irds:beir/scifact/test")
    topics = dataset.get_topics().head(num_queries)
    frame = (pisa_bm25(str(index_dir / "bm25.pisa"), dataset, num_results=top_k) >> DocumentText(dataset))(topics)
    if max_words is not None:
        frame["text"] = [truncate_words(t, max_words) for t in frame["text"]]
    return frame
