"""The cost of the model fingerprint (every weight tensor hashed from the checkpoint files), against
the cost of loading the model, for all-MiniLM-L6-v2 and an E2Rank-0.6B-shaped checkpoint (28 layers,
bfloat16, random weights: the size is what matters)."""
import time
from pathlib import Path

from benchmarks.common import QWEN3_TOKENIZER
from pyterrier_e2rank.testing import qwen3_shaped


def measure(model_dir: str, label: str) -> dict:
    import torch

    from pyterrier_e2rank import E2Rank
    from pyterrier_e2rank.model import fingerprint as fp
    directory = fp.local_checkpoint_dir(model_dir)
    (directory / fp.CACHE_FILE).unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in fp.weight_files(directory))
    started = time.perf_counter()
    model = E2Rank(model_dir, dtype=torch.float32)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    fp.weights_digest(model_dir, model.backbone, not_loaded=model.weights_not_loaded)
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    model.fingerprint()
    fingerprint_s = time.perf_counter() - started
    cached = (directory / fp.CACHE_FILE).exists()
    started = time.perf_counter()
    fp.weights_digest(model_dir, model.backbone, not_loaded=model.weights_not_loaded)
    second_s = time.perf_counter() - started
    return {"model": label, "weights_mb": size / 2**20, "load_s": load_s, "digest_s": cold_s,
            "digest_mb_per_s": size / 2**20 / cold_s, "first_fingerprint_s": fingerprint_s,
            "second_digest_s": second_s, "cached_beside_checkpoint": cached, "ratio_to_load": cold_s / load_s}


def run(workdir: Path, *, minilm: str = "all-minilm-l6-v2") -> dict:
    from pyterrier_e2rank.model.loading import resolve_model_path
    import torch
    shaped = qwen3_shaped(Path(workdir) / "e2rank-0.6b-shape", QWEN3_TOKENIZER, num_layers=28, dtype=torch.bfloat16)
    return {"minilm": measure(resolve_model_path(minilm), minilm),
            "e2rank_0.6b_shape": measure(str(shaped), "E2Rank-0.6B shape (28 layers, bf16, random)")}
