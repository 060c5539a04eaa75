"""cpu_inference: documents/s of every CPU option of ``E2Rank`` against float32 PyTorch, for all-MiniLM-L6-v2
and an E2Rank-0.6B-shaped Qwen3 (layers cut), with the cosine of its vectors to float32's; and the SciFact
nDCG@10 that the recommended option (``FAST``) and int8 cost (MiniLM, dense over the pooled documents and
BM25 >> E2Rank reranking, first ``num_queries`` test queries). The goal's keys (``speedup``,
``scifact_ndcg10_delta``) are ``FAST``'s."""
import itertools
import time

import ir_measures
import numpy as np
import pandas as pd
import torch

from benchmarks.common import QWEN3_TOKENIZER, bm25_candidates
from pyterrier_e2rank.testing import qwen3_shaped
from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.data import corpus_iter

#: Every CPU option besides the float32 PyTorch default, by name.
OPTIONS = {"torch-bfloat16": {"dtype": torch.bfloat16}, "onnx": {"backend": "onnx"},
           "onnx-int8": {"backend": "onnx", "quantize": "int8"}, "openvino": {"backend": "openvino"},
           "openvino-f32": {"backend": "openvino", "dtype": torch.float32}}
#: The option the README recommends on a CPU, and the one measured against the goal.
FAST = "openvino"
#: The options whose SciFact nDCG@10 is measured (each encodes the pooled documents once more).
NDCG_OPTIONS = (FAST, "onnx-int8")


def _docs_per_s(model: E2Rank, texts: list):
    """(documents/s, vectors) of encoding ``texts`` after a warm-up batch."""
    model.encode_docs(texts[:model.batch_size])
    started = time.perf_counter()
    vectors = model.encode_docs(texts)
    return len(texts) / (time.perf_counter() - started), vectors


def _ndcg(model: E2Rank, candidates: pd.DataFrame, pool: pd.DataFrame, topics: pd.DataFrame, qrels) -> dict:
    doc_vecs = model.encode_docs(pool["text"].tolist())  # cached: the reranker reuses them
    scores = model.encode_queries(topics["query"].tolist()) @ doc_vecs.T
    dense = pd.DataFrame([(qid, docno, float(s)) for qid, row in zip(topics["qid"], scores)
                          for docno, s in zip(pool["docno"], row)], columns=["query_id", "doc_id", "score"])
    reranked = model.reranker()(candidates).rename(columns={"qid": "query_id", "docno": "doc_id"})
    measure = ir_measures.nDCG @ 10
    return {name: ir_measures.calc_aggregate([measure], qrels, run[["query_id", "doc_id", "score"]])[measure]
            for name, run in (("dense", dense), ("bm25>>e2rank", reranked))}


def run(workdir, *, num_docs: int, qwen_layers: int, num_queries: int, batch_size: int = 16) -> dict:
    texts = [d["text"] for d in itertools.islice(corpus_iter("irds:beir/scifact/test"), num_docs)]
    qwen = str(qwen3_shaped(workdir / f"qwen3-0.6b-shape-{qwen_layers}l", QWEN3_TOKENIZER, qwen_layers))
    by_model = {}
    for label, path in (("all-minilm-l6-v2", "all-minilm-l6-v2"), ("qwen3-0.6b-shaped", qwen)):
        base, reference = _docs_per_s(E2Rank(path, device="cpu", batch_size=batch_size), texts)
        by_model[label] = {"docs_per_s_torch_float32": base}
        for name, options in OPTIONS.items():
            model = E2Rank(path, device="cpu", batch_size=batch_size, **options)
            rate, vectors = _docs_per_s(model, texts)
            cosines = (vectors * reference).sum(1)
            by_model[label][name] = {"ratio": rate / base, "docs_per_s": rate, "precision": model.precision,
                                     "cosine_min": float(cosines.min()), "cosine_mean": float(np.mean(cosines))}

    candidates = bm25_candidates(num_queries, 100, workdir)
    import pyterrier as pt
    dataset = pt.get_dataset("irds:beir/scifact/test")
    topics = candidates[["qid", "query"]].drop_duplicates("qid")
    qrels = dataset.get_qrels().rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    qrels = qrels[qrels["query_id"].isin(topics["qid"])]
    wanted = set(candidates["docno"]) | set(qrels["doc_id"])
    pool = pd.DataFrame([{"docno": d["docno"], "text": d["text"]} for d in corpus_iter("irds:beir/scifact/test")
                         if d["docno"] in wanted])
    ndcg = {name: _ndcg(E2Rank("all-minilm-l6-v2", device="cpu", batch_size=batch_size, cache_doc_vectors=True,
                               **options), candidates, pool, topics, qrels)
            for name, options in (("torch-float32", {}), *((n, OPTIONS[n]) for n in NDCG_OPTIONS))}
    deltas = {option: {k: ndcg[option][k] - ndcg["torch-float32"][k] for k in ndcg["torch-float32"]}
              for option in NDCG_OPTIONS}
    return {"setting": f"{FAST} ({OPTIONS[FAST]}) vs float32 torch, CPU", "documents": len(texts),
            "qwen_layers": qwen_layers, "queries": len(topics), "pooled_documents": len(pool),
            "speedup": min(m[FAST]["ratio"] for m in by_model.values()), "by_model": by_model,
            "scifact_ndcg10_delta": max(deltas[FAST].values(), key=abs), "scifact_ndcg10": ndcg,
            "scifact_ndcg10_deltas": deltas}
