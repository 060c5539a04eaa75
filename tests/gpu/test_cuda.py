"""The CUDA path, for a GPU machine: ``bash scripts/run.sh test tests/gpu -s`` (skipped without CUDA).

bfloat16 on the GPU must rank like the float32 CPU reference; left padding must give no NaN with SDPA
(and flash-attention 2 when installed); the batch size must not move scores beyond bfloat16's
tolerance; peak memory at batch 32 and 128 for an E2Rank-0.6B-shaped model is printed and bounded.
Throughput against a raw forward pass is a benchmark (``benchmarks/encode_throughput.py`` on CUDA),
not a test.

The checks are shared with the CPU's bfloat16 run (``tests/fixtures/bf16_checks.py``).
"""
import importlib.util

import numpy as np
import pytest
import torch

from fixtures.bf16_checks import (check_batch_size_does_not_move_scores, check_bf16_ranks_like_float32,
                                  check_bf16_reranker_matches_float32, check_left_padding_gives_no_nan)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run `bash scripts/run.sh test tests/gpu -s` on one)")


@pytest.fixture(scope="module")
def models(tiny_qwen_dir):
    from pyterrier_e2rank import E2Rank
    cpu = E2Rank(str(tiny_qwen_dir), device="cpu", dtype=torch.float32, batch_size=8)
    gpu = E2Rank(str(tiny_qwen_dir), device="cuda", batch_size=8)
    assert gpu.dtype == torch.bfloat16  # the default on CUDA
    return cpu, gpu


def test_bf16_on_cuda_ranks_like_float32_on_cpu(models):
    print(f"top 10 compared on {check_bf16_ranks_like_float32(*models)} queries")


def test_reranker_on_cuda_matches_cpu(models):
    check_bf16_reranker_matches_float32(*models)


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_left_padding_gives_no_nan_and_matches_one_at_a_time(tiny_qwen_dir, attention):
    from pyterrier_e2rank import E2Rank
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    model = E2Rank(str(tiny_qwen_dir), device="cuda", batch_size=16, attn_implementation=attention)
    check_left_padding_gives_no_nan(model)


def test_batch_size_does_not_move_scores_beyond_bf16(models):
    check_batch_size_does_not_move_scores(models[1])


@pytest.mark.parametrize("batch_size", [32, 128])
def test_peak_memory_of_an_e2rank_06b_shaped_model(tmp_path_factory, shared_path, batch_size):
    from pyterrier_e2rank import E2Rank
    from pyterrier_e2rank.testing import qwen3_shaped
    directory = qwen3_shaped(tmp_path_factory.getbasetemp() / "e2rank-0.6b-shape",
                             shared_path("models", "qwen3-tokenizer"), num_layers=28, dtype=torch.bfloat16)
    model = E2Rank(str(directory), device="cuda", batch_size=batch_size)
    docs = [" ".join(["protein cell gene therapy trial"] * 100)] * batch_size  # ~500 tokens each
    torch.cuda.reset_peak_memory_stats()
    vectors = model.encode_docs(docs)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    print(f"batch {batch_size}: peak {peak_gib:.2f} GiB")
    assert np.isfinite(vectors).all()
    assert peak_gib < 40  # weights 1.2 GiB; activations grow with the batch, under inference mode
