"""The bfloat16 path in the normal suite: the numerical checks of ``tests/gpu/test_cuda.py`` (shared, in
``tests/fixtures/bf16_checks.py``) on the CPU, ``E2Rank(..., dtype=torch.bfloat16)`` against float32, for the
tiny Qwen3 under SDPA (left padding, last-token pooling) and for MiniLM.

The CPU's bfloat16 kernels (oneDNN/AVX-512 where present, else upcast) accumulate in float32 as CUDA's do;
scores moved by under ``BF16_TOLERANCE`` here too, so the same tolerance applies. (CUDA alone has
flash-attention 2 and memory peaks: those stay in ``tests/gpu``.)
"""
import pytest
import torch

from fixtures.bf16_checks import (check_batch_size_does_not_move_scores, check_bf16_ranks_like_float32,
                                  check_bf16_reranker_matches_float32, check_left_padding_gives_no_nan)


@pytest.fixture(scope="module", params=["tiny_qwen", "minilm"])
def models(request, tiny_qwen_dir, minilm_dir):
    from pyterrier_e2rank import E2Rank
    path = str(tiny_qwen_dir if request.param == "tiny_qwen" else minilm_dir)
    return tuple(E2Rank(path, device="cpu", dtype=dtype, batch_size=8, attn_implementation="sdpa")
                 for dtype in (torch.float32, torch.bfloat16))


def test_bf16_on_cpu_ranks_like_float32(models):
    assert models[1].backbone.dtype == torch.bfloat16
    check_bf16_ranks_like_float32(*models)


def test_bf16_reranker_on_cpu_matches_float32(models):
    check_bf16_reranker_matches_float32(*models)


def test_bf16_left_padding_on_cpu_gives_no_nan(models):
    check_left_padding_gives_no_nan(models[1])


def test_bf16_batch_size_on_cpu_does_not_move_scores(models):
    check_batch_size_does_not_move_scores(models[1])
