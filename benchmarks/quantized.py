"""vectors and append: the compressed vector formats (``pyterrier_e2rank.index.ann``) against exact
search, and the cost of appending documents to an index against rebuilding it.

vectors: on the clustered synthetic vectors of ``benchmarks/ann.py`` (same mixture, queries and recall
definition), ``memory_ratio`` = the float32 ``vecs.f4`` over the stored codes (what a search process
holds in RAM; rescoring reads only the candidates' rows of ``vecs.f4``), recall@100 against exact search,
with and without rescoring; on SciFact (MiniLM vectors), nDCG@10 minus exact. The headline settings:
int8 with ``rescore=INT8_RESCORE`` candidates, binary with ``rescore=BINARY_RESCORE``.

append: SciFact's corpus (or its first ``num_docs`` documents) with MiniLM, both timed with encoding:
appending the last 1% to an index of the other 99%, over building the index of all of them."""
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.ann import _recall, ndcg10, scifact_index, DOCS_PER_CENTRE
from pyterrier_e2rank.testing import build_clustered_index, clustered

INT8_RESCORE = 200
BINARY_RESCORE = 1000
RESCORES = (None, 200, 400, 1000)


def vectors(workdir, *, num_docs: int, dim: int, num_queries: int = 100, k: int = 100) -> dict:
    """``{"int8": ..., "binary": ..., "scifact": ...}``: memory ratio and recall@100 (headline setting, and
    ``by_rescore``) at ``num_docs`` x ``dim``, and the SciFact nDCG@10 deltas."""
    path = Path(workdir) / f"quantized-{num_docs}x{dim}"
    index, centres = build_clustered_index(path, num_docs=num_docs, dim=dim,
                                           num_centres=max(1, num_docs // DOCS_PER_CENTRE))
    queries = clustered(np.random.default_rng(1), num_queries, dim, centres)
    frame = pd.DataFrame({"qid": [str(i) for i in range(num_queries)], "query_vec": list(queries)})
    exact_top = index.retriever(num_results=k)(frame).groupby("qid")["docno"].apply(set).to_dict()
    float32 = (path / "vecs.f4").stat().st_size
    result = {"measured_at": f"{num_docs:,} x {dim}"}
    for kind, headline in (("int8", INT8_RESCORE), ("binary", BINARY_RESCORE)):
        make = getattr(index, f"{kind}_retriever")
        started = time.perf_counter()
        codes = make(num_results=k)
        build_s = time.perf_counter() - started
        by_rescore = {str(r): _recall(make(num_results=k, rescore=r)(frame), exact_top, k) for r in RESCORES}
        result[kind] = {"memory_ratio": float32 / codes.path.stat().st_size,
                        "recall_at_100": by_rescore[str(headline)], "rescore": headline,
                        "recall_at_100_by_rescore": by_rescore, "build_s": build_s}
        index._cache.clear()
    shutil.rmtree(path)
    sci = scifact(workdir)
    for kind in ("int8", "binary"):
        result[kind]["scifact_ndcg10_delta"] = sci["ndcg10_delta"][kind]
    result["scifact"] = sci
    return result


def scifact(workdir) -> dict:
    """nDCG@10 on SciFact test (MiniLM) of exact search and of both formats at their headline settings."""
    index, queries, qrels = scifact_index(workdir, name="scifact-quantized")
    systems = {"exact": index.retriever(num_results=100),
               "int8": index.int8_retriever(num_results=100, rescore=INT8_RESCORE),
               "binary": index.binary_retriever(num_results=100, rescore=BINARY_RESCORE)}
    scores = {name: ndcg10(retriever, queries, qrels) for name, retriever in systems.items()}
    shutil.rmtree(index.path)
    return {"ndcg10": scores, "ndcg10_delta": {n: s - scores["exact"] for n, s in scores.items() if n != "exact"}}


def append(workdir, *, num_docs=None, fraction: float = 0.01) -> dict:
    """Wall time of appending the last ``fraction`` of SciFact's first ``num_docs`` documents (all: None) to an
    index of the others, over that of building the index of them all; both encode their documents."""
    import pyterrier as pt
    from pyterrier_e2rank import E2Rank
    from pyterrier_e2rank.data import corpus_iter
    model = E2Rank("all-minilm-l6-v2")
    documents = list(corpus_iter(pt.get_dataset("irds:beir/scifact/test")))[:num_docs]
    split = len(documents) - max(1, round(fraction * len(documents)))
    grown, rebuilt = Path(workdir) / "append-grown", Path(workdir) / "append-rebuilt"
    model.indexer(grown, mode="overwrite", verbose=False).index(documents[:split])
    model.encode_docs(["warm up"])
    started = time.perf_counter()
    model.indexer(rebuilt, mode="overwrite", verbose=False).index(documents)
    rebuild_s = time.perf_counter() - started
    started = time.perf_counter()
    index = model.indexer(grown, mode="append", verbose=False).index(documents[split:])
    append_s = time.perf_counter() - started
    same = list(index.docnos()) == [d["docno"] for d in documents]
    shutil.rmtree(grown)
    shutil.rmtree(rebuilt)
    return {"num_docs": len(documents), "appended": len(documents) - split, "cost_ratio": append_s / rebuild_s,
            "same_docnos_as_rebuild": same, "note": "both timed with encoding (MiniLM, CPU); wall time ratio"}
