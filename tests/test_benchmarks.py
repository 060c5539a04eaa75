"""The benchmarks' own machinery on tiny settings (no timings asserted): the generative baseline's
windows and permutations, and exact search at scale agreeing with brute force."""
import numpy as np

from benchmarks import retrieval_scale
from benchmarks.generative_baseline import GenerativeSlidingWindow


def test_generative_baseline_slides_back_to_front(tmp_path, make_tiny_qwen3):
    make_tiny_qwen3(tmp_path, num_layers=1, causal_lm=True)
    baseline = GenerativeSlidingWindow(tmp_path, tokens_per_passage=2)
    order = baseline.rerank("gene therapy", [f"passage {i}" for i in range(30)])
    assert sorted(order) == list(range(30))
    assert baseline.generated_tokens == 2 * 20 * 2  # windows [10, 30) then [0, 20), forced length


def test_retrieval_scale_matches_brute_force(tmp_path):
    result = retrieval_scale.run(tmp_path, num_docs=5000, dim=16, k=10, chunk=1500)
    assert result["num_docs"] == 5000 and result["latency_ms_per_query"] > 0
    assert result.get("faiss_same_top10", True)
    from pyterrier_e2rank.index import E2RankIndex
    from pyterrier_e2rank.retriever import E2RankRetriever
    index = E2RankIndex(tmp_path / "synthetic-5000x16")
    query = np.asarray(index.np_vecs()[42])[None]
    scores, rows = E2RankRetriever(index, num_results=10, block_size=700).search(query)
    assert rows[0, 0] == 42
    np.testing.assert_array_equal(rows[0], np.argsort(-(np.asarray(index.np_vecs()) @ query[0]), kind="stable")[:10])
