"""retrieval_scale: exact dense retrieval over synthetic normalised vectors on disk (memory-mapped):
build time, memory, latency per query and per batch of 100 queries; pyterrier-dr's ``np_retriever``
on the same FlexIndex (our default retriever must stay the faster) and FAISS flat IP for comparison."""
import time
import tracemalloc

import numpy as np
import pandas as pd

from pyterrier_e2rank.index.indexer import IndexWriter
from pyterrier_e2rank.index.retriever import E2RankRetriever


def _normalised(rng, n, dim):
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run(workdir, *, num_docs: int, dim: int, k: int = 100, chunk: int = 100_000, with_faiss: bool = True) -> dict:
    rng = np.random.default_rng(0)
    path = workdir / f"synthetic-{num_docs}x{dim}"
    started = time.perf_counter()
    with IndexWriter(path, dim, {"model": "synthetic", "dim": dim}, overwrite=True) as writer:
        for start in range(0, num_docs, chunk):
            n = min(chunk, num_docs - start)
            writer.add([str(i) for i in range(start, start + n)], _normalised(rng, n, dim))
        index = writer.finish()
    build = time.perf_counter() - started

    retriever = E2RankRetriever(index, num_results=k)
    queries = _normalised(rng, 100, dim)
    retriever.search(queries[:1])  # warm the page cache, as a serving process would be
    tracemalloc.start()
    started = time.perf_counter()
    for q in queries[:5]:
        retriever.search(q[None])
    single = (time.perf_counter() - started) / 5
    started = time.perf_counter()
    scores, rows = retriever.search(queries)
    batch = time.perf_counter() - started
    heap_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    result = {
        "num_docs": num_docs, "dim": dim, "k": k, "index_bytes": num_docs * dim * 4, "build_s": build,
        "latency_ms_per_query": single * 1000, "latency_ms_per_batch_of_100": batch * 1000,
        "search_heap_peak_mb": heap_peak / 2**20, "matrix_mb": num_docs * dim * 4 / 2**20,
    }
    result.update(versus_flex_np_retriever(index, queries, k))
    if with_faiss:
        try:
            import faiss
        except ImportError:
            return result
        flat = faiss.IndexFlatIP(dim)
        flat.add(np.asarray(index.np_vecs()))
        started = time.perf_counter()
        for q in queries[:5]:
            flat.search(q[None], k)
        result["faiss_latency_ms_per_query"] = (time.perf_counter() - started) / 5 * 1000
        started = time.perf_counter()
        _, faiss_rows = flat.search(queries, k)
        result["faiss_latency_ms_per_batch_of_100"] = (time.perf_counter() - started) * 1000
        result["faiss_same_top10"] = bool((faiss_rows[:, :10] == rows[:, :10]).mean() > 0.99)
        del flat
    return result


def versus_flex_np_retriever(index, queries: np.ndarray, k: int) -> dict:
    """Both retrievers as transformers on the same index and query frames: ms per query (one-query
    frames) and per frame of 100 queries, and whether they return the same top 10."""
    frames = pd.DataFrame({"qid": [str(i) for i in range(len(queries))], "query_vec": list(queries)})
    timings = {}
    for name, retriever in (("ours", index.retriever(num_results=k)), ("flex_np", index.np_retriever(num_results=k))):
        retriever(frames.iloc[:1])  # warm
        started = time.perf_counter()
        for i in range(5):
            retriever(frames.iloc[i:i + 1])
        timings[f"{name}_ms_per_query"] = (time.perf_counter() - started) / 5 * 1000
        started = time.perf_counter()
        out = retriever(frames)
        timings[f"{name}_ms_per_100_queries"] = (time.perf_counter() - started) * 1000
        timings[f"{name}_top10"] = out[out["rank"] < 10].sort_values(["qid", "rank"])["docno"].tolist()
    same = timings.pop("ours_top10") == timings.pop("flex_np_top10")
    return {**timings, "flex_np_same_top10": same,
            "flex_np_ratio_per_query": timings["flex_np_ms_per_query"] / timings["ours_ms_per_query"]}
