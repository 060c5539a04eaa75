"""``E2Rank(backend="onnx", quantize="int8")``: the exported backbone computes the PyTorch vectors (float32
within 1e-5; int8 close), for encoders and for Qwen3 decoders (left padding, last-token pooling, listwise
prompts); its vectors are marked in the fingerprint and never mixed with PyTorch's; unsupported
combinations are refused naming both."""
import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures.docs import make_docs
from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.core.provenance import IndexModelMismatch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", params=["minilm", "tiny_qwen"])
def pair(request, minilm_dir, tiny_qwen_dir):
    """(float32 PyTorch, onnx float32, onnx int8) models of one checkpoint."""
    path = str(minilm_dir if request.param == "minilm" else tiny_qwen_dir)
    return tuple(E2Rank(path, device="cpu", batch_size=8, **options) for options in
                 ({}, {"backend": "onnx"}, {"backend": "onnx", "quantize": "int8"}))


def test_exported_vectors_match_pytorch(pair):
    reference, exported, quantized = pair
    docs = make_docs(40, seed=3)  # lengths 3 to 1024 words: padding on the model's side in every batch
    expected = reference.encode_docs(docs)
    assert np.abs(exported.encode_docs(docs) - expected).max() < 1e-4
    cosines = (quantized.encode_docs(docs) * expected).sum(1)
    assert cosines.min() > 0.95, cosines.min()
    queries = ["gene therapy for cancer", "virus"]
    assert np.abs(exported.encode_queries(queries) - reference.encode_queries(queries)).max() < 1e-4


def test_exported_batches_like_one_at_a_time(pair):
    """float32 exactly; int8 within its per-batch activation scale (a vector depends on its batch mates)."""
    _, exported, quantized = pair
    docs = make_docs(12, seed=4)
    for model in (exported, quantized):
        alone = np.stack([model.encode_docs([d], batch_size=1)[0] for d in docs])
        batched = model.encode_docs(docs, batch_size=12)
        if model is exported:
            assert np.abs(batched - alone).max() < 1e-4
        else:
            assert (batched * alone).sum(1).min() > 0.98


def test_exported_reranker_ranks_like_pytorch(pair):
    reference, exported, _ = pair
    docs = make_docs(20, seed=6)
    frame = pd.DataFrame({"qid": "q", "query": "gene therapy", "docno": [f"d{i}" for i in range(20)],
                          "text": docs, "rank": range(20)})
    expected = reference.reranker(num_input_docs=5)(frame).sort_values("docno")["score"].to_numpy()
    got = exported.reranker(num_input_docs=5)(frame).sort_values("docno")["score"].to_numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_exported_vectors_are_marked_and_never_mixed_with_pytorch(pair, tmp_path):
    reference, exported, quantized = pair
    assert "inference" not in reference.fingerprint()  # float32 PyTorch indexes keep their identity
    assert exported.fingerprint()["inference"] == "onnx"
    assert quantized.fingerprint()["inference"] == "onnx-int8"
    assert reference != quantized
    docs = pd.DataFrame({"docno": ["a", "b", "c", "d"], "text": make_docs(4, seed=1)})
    reference.indexer(tmp_path / "index").index(docs.to_dict("records"))
    with pytest.raises(IndexModelMismatch, match="inference"):
        quantized.retriever(tmp_path / "index")
    vectors = quantized.doc_encoder()(docs)
    with pytest.raises(IndexModelMismatch, match="inference"):
        reference.scorer()(reference.query_encoder()(pd.DataFrame({"qid": ["q"], "query": ["gene"]}))
                           .merge(vectors, how="cross"))


def test_exported_model_refuses_gradients(pair):
    _, exported, _ = pair
    with pytest.raises(RuntimeError, match="backend='onnx' computes no gradients"):
        exported.embed(exported.tokenize_docs(["gene"]))


@pytest.mark.parametrize("options, message", [
    ({"backend": "openvino"}, r"backend='openvino' is not supported \(model type 'bert', quantize=None\)"),
    ({"backend": "onnx", "quantize": "int4"}, r"quantize='int4' is not supported for backend='onnx'"),
    ({"quantize": "int8"}, r"quantize='int8' is not supported for backend='torch' \(model type 'bert'\)"),
    ({"backend": "onnx", "dtype": torch.bfloat16}, r"backend='onnx', quantize=None runs on the CPU in float32"),
])
def test_unsupported_backend_or_quantization_is_refused_naming_both(minilm_dir, options, message):
    with pytest.raises(ValueError, match=message):
        E2Rank(str(minilm_dir), device="cpu", **options)


def test_missing_onnx_package_names_its_pip_line(minilm_dir, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"needs the package\(s\) \['onnx'\]: pip install 'pyterrier-e2rank\[cpu\]'"):
        E2Rank(str(minilm_dir), device="cpu", backend="onnx", quantize="int8")
