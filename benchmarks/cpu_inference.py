"""cpu_inference: documents/s of ``E2Rank(backend="onnx", quantize="int8")`` against float32 PyTorch on the CPU,
for all-MiniLM-L6-v2 and an E2Rank-0.6B-shaped Qwen3 (layers cut); and the SciFact nDCG@10 it costs (MiniLM,
dense over the pooled documents and BM25 >> E2Rank reranking, first ``num_queries`` test queries)."""
import itertools
import time

import ir_measures
import pandas as pd

from benchmarks.common import bm25_candidates
from tests.fixtures.qwen3 import qwen3_shaped
from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.data import corpus_iter

FAST = {"backend": "onnx", "quantize": "int8"}


def _docs_per_s(model: E2Rank, texts: list) -> float:
    model.encode_docs(texts[:model.batch_size])  # warm-up
    started = time.perf_counter()
    model.encode_docs(texts)
    return len(texts) / (time.perf_counter() - started)


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
    qwen = str(qwen3_shaped(workdir / f"qwen3-0.6b-shape-{qwen_layers}l", qwen_layers))
    speed = {}
    for label, path in (("all-minilm-l6-v2", "all-minilm-l6-v2"), ("qwen3-0.6b-shaped", qwen)):
        base = _docs_per_s(E2Rank(path, device="cpu", batch_size=batch_size), texts)
        fast = _docs_per_s(E2Rank(path, device="cpu", batch_size=batch_size, **FAST), texts)
        speed[label] = {"docs_per_s_torch_float32": base, "docs_per_s_onnx_int8": fast, "ratio": fast / base}

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
            for name, options in (("torch-float32", {}), ("onnx-int8", FAST))}
    deltas = {k: ndcg["onnx-int8"][k] - ndcg["torch-float32"][k] for k in ndcg["torch-float32"]}
    return {"setting": "backend='onnx', quantize='int8' vs float32 torch, CPU", "documents": len(texts),
            "qwen_layers": qwen_layers, "queries": len(topics), "pooled_documents": len(pool),
            "speedup": min(s["ratio"] for s in speed.values()), "by_model": speed,
            "scifact_ndcg10_delta": max(deltas.values(), key=abs), "scifact_ndcg10": ndcg,
            "scifact_ndcg10_deltas": deltas}
