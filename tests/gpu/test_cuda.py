"""The CUDA path, for a GPU machine: ``bash scripts/run.sh test tests/gpu -s`` (skipped without CUDA).

bfloat16 on the GPU must rank like the float32 CPU reference; left padding must give no NaN with SDPA
(and flash-attention 2 when installed); the batch size must not move scores beyond bfloat16's
tolerance; peak memory at batch 32 and 128 for an E2Rank-0.6B-shaped model is printed and bounded.
Throughput against a raw forward pass is a benchmark (``benchmarks/encode_throughput.py`` on CUDA),
not a test.

Tolerance: bfloat16 keeps 8 bits of mantissa (relative error ~4e-3 per operation); over a 2-layer
model and a 64-dimensional normalised vector, cosines move by up to ~2e-2. Rankings are compared
where the float32 scores are separated by more than that.
"""
import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures.docs import make_docs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run `bash scripts/run.sh test tests/gpu -s` on one)")

BF16_TOLERANCE = 2e-2
QUERIES = ["gene therapy for cancer", "virus immune response", "brain blood dose", "protein cell trial"]


@pytest.fixture(scope="module")
def models(tiny_qwen_dir):
    from pyterrier_e2rank import E2Rank
    cpu = E2Rank(str(tiny_qwen_dir), device="cpu", dtype=torch.float32, batch_size=8)
    gpu = E2Rank(str(tiny_qwen_dir), device="cuda", batch_size=8)
    assert gpu.dtype == torch.bfloat16  # the default on CUDA
    return cpu, gpu


def _separated_top10(scores: np.ndarray) -> set:
    """The reference top 10, if the 10th and 11th are further apart than bf16 can blur; else ``None``."""
    order = np.argsort(-scores)
    return set(order[:10]) if scores[order[9]] - scores[order[10]] > BF16_TOLERANCE else None


def test_bf16_on_cuda_ranks_like_float32_on_cpu(models):
    cpu, gpu = models
    docs = make_docs(200, seed=5)
    reference = cpu.encode_queries(QUERIES) @ cpu.encode_docs(docs).T
    on_gpu = gpu.encode_queries(QUERIES) @ gpu.encode_docs(docs).T
    assert np.abs(on_gpu - reference).max() < BF16_TOLERANCE
    compared = 0
    for ref, got in zip(reference, on_gpu):
        top = _separated_top10(ref)
        if top is not None:
            compared += 1
            assert set(np.argsort(-got)[:10]) == top
    print(f"top 10 compared on {compared} of {len(QUERIES)} queries; max |bf16 - fp32| = "
          f"{np.abs(on_gpu - reference).max():.4f}")


def test_reranker_on_cuda_matches_cpu(models):
    cpu, gpu = models
    docs = make_docs(30, seed=6)
    frame = pd.DataFrame({"qid": "q", "query": QUERIES[0], "docno": [f"d{i}" for i in range(30)], "text": docs,
                          "rank": range(30)})
    reference = cpu.reranker(num_input_docs=10)(frame).sort_values("docno")["score"].to_numpy()
    got = gpu.reranker(num_input_docs=10)(frame).sort_values("docno")["score"].to_numpy()
    assert np.abs(got - reference).max() < BF16_TOLERANCE


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_left_padding_gives_no_nan_and_matches_one_at_a_time(tiny_qwen_dir, attention):
    from pyterrier_e2rank import E2Rank
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    model = E2Rank(str(tiny_qwen_dir), device="cuda", batch_size=16, attn_implementation=attention)
    texts = ["gene", " ".join(["protein cell gene"] * 300), "virus immune response in mice"]  # 1 to ~900 tokens
    batched = model.encode_docs(texts)
    assert np.isfinite(batched).all()
    alone = np.stack([model.encode_docs([t], batch_size=1)[0] for t in texts])
    assert np.abs(batched - alone).max() < BF16_TOLERANCE


def test_batch_size_does_not_move_scores_beyond_bf16(models):
    _, gpu = models
    docs = make_docs(64, seed=7)
    one = gpu.encode_docs(docs, batch_size=1)
    many = gpu.encode_docs(docs, batch_size=32)
    assert np.abs(one - many).max() < BF16_TOLERANCE


@pytest.mark.parametrize("batch_size", [32, 128])
def test_peak_memory_of_an_e2rank_06b_shaped_model(tmp_path_factory, batch_size):
    from fixtures.qwen3 import qwen3_shaped

    from pyterrier_e2rank import E2Rank
    directory = qwen3_shaped(tmp_path_factory.getbasetemp() / "e2rank-0.6b-shape", num_layers=28,
                             dtype=torch.bfloat16)
    model = E2Rank(str(directory), device="cuda", batch_size=batch_size)
    docs = [" ".join(["protein cell gene therapy trial"] * 100)] * batch_size  # ~500 tokens each
    torch.cuda.reset_peak_memory_stats()
    vectors = model.encode_docs(docs)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    print(f"batch {batch_size}: peak {peak_gib:.2f} GiB")
    assert np.isfinite(vectors).all()
    assert peak_gib < 40  # weights 1.2 GiB; activations grow with the batch, under inference mode
