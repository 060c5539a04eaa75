"""The dense PRF baselines of ``e2rank study`` (study/prf.py) against a direct numpy computation."""
import numpy as np
import pandas as pd
import pytest
from pyterrier_dr import AveragePrf, VectorPrf

from pyterrier_e2rank.study.prf import PrfReranker

TEXTS = ["Antibodies bind to antigens.", "B cells produce antibodies.", "The Eiffel Tower is in Paris.",
         "Vaccines train the immune system.", "Paris is the capital of France."]


@pytest.mark.parametrize("prf, combine", [
    (AveragePrf(k=2), lambda q, top: np.vstack([q, top]).mean(axis=0)),
    (VectorPrf(k=3, alpha=0.7, beta=0.5), lambda q, top: 0.7 * q + 0.5 * top.mean(axis=0)),
])
def test_prf_reranker_is_the_direct_computation(minilm, prf, combine):
    """The PRF vector of the top k by rank (not by row order), every candidate scored by its dot product with it."""
    candidates = pd.DataFrame({"qid": ["q1"] * 5 + ["q2"] * 2, "query": ["what do antibodies do"] * 5 + ["paris"] * 2,
                               "docno": [f"d{i}" for i in range(5)] + ["d2", "d4"],
                               "text": TEXTS + [TEXTS[2], TEXTS[4]], "rank": [4, 0, 3, 1, 2, 1, 0]})
    out = PrfReranker(minilm, prf)(candidates)
    for qid, group in candidates.groupby("qid"):
        q = minilm.encode_queries([group["query"].iat[0]])[0]
        docs = minilm.encode_docs(group["text"].tolist())
        top = docs[np.argsort(group["rank"].to_numpy())[:prf.k]]
        expected = docs @ combine(q, top)
        got = out[out["qid"] == qid].set_index("docno").loc[group["docno"], "score"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        ranked = out[out["qid"] == qid].sort_values("rank")["docno"].tolist()
        assert ranked == group["docno"].to_numpy()[np.argsort(-expected)].tolist()
    assert set(out.columns) >= {"qid", "query", "docno", "text", "score", "rank"}
    assert not {"query_vec", "doc_vec"} & set(out.columns)
    assert len(PrfReranker(minilm, prf)(candidates.iloc[:0])) == 0
