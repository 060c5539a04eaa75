"""The benchmarks' own machinery on tiny settings (no timings asserted): exact search at scale agreeing with
brute force, and run.py's resume and sizes (the generative baseline is tested in tests/study/test_timing.py)."""
import argparse

import numpy as np
import pytest

from benchmarks import retrieval_scale, run
from benchmarks.common import machine


def test_retrieval_scale_matches_brute_force(tmp_path):
    result = retrieval_scale.run(tmp_path, num_docs=5000, dim=16, k=10, chunk=1500)
    assert result["num_docs"] == 5000 and result["latency_ms_per_query"] > 0
    assert result.get("faiss_same_top10", True)
    from pyterrier_e2rank.index.artifact import E2RankIndex
    from pyterrier_e2rank.index.retriever import E2RankRetriever
    index = E2RankIndex(tmp_path / "synthetic-5000x16")
    query = np.asarray(index.np_vecs()[42])[None]
    scores, rows = E2RankRetriever(index, num_results=10, block_size=700).search(query)
    assert rows[0, 0] == 42
    np.testing.assert_array_equal(rows[0], np.argsort(-(np.asarray(index.np_vecs()) @ query[0]), kind="stable")[:10])


def test_resume_keeps_finished_benchmarks_and_refuses_another_mode(tmp_path):
    finished = {name: {"ratio": 1.0} for name in ("rerank_reuse", "vs_generative", "encode_throughput",
                                                    "retrieval_scale", "fingerprint", "index_sharded", "sharding",
                                                    "reproduce", "cpu_inference", "ann",
                                                    "vectors", "append")}
    done = {"machine": machine(), "mode": "quick", "elapsed_s": {"ann": 3.0}, **finished}
    saved = []
    assert run.run_all(True, tmp_path, "unused", saved.append, done=dict(done)) == done  # nothing run again
    assert saved == []
    with pytest.raises(ValueError, match="another mode or machine"):
        run.run_all(False, tmp_path, "unused", done=dict(done))


def test_ann_sizes_are_read_and_checked():
    ann_size = run.ann_size
    assert ann_size("5000000x1024") == {"num_docs": 5_000_000, "dim": 1024, "hnsw_fp32": False}
    assert ann_size("1000000X384")["hnsw_fp32"] is True
    for bad in ("5M", "10x5", "1000000x0"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            ann_size(bad)
