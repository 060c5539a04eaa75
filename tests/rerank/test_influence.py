"""feedback_influence: each prompt document left out in turn, checked against the pseudo-queries and rankings
computed here directly from the prompt strings and the model's encoders."""
import itertools

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.rerank.influence import INFLUENCE_COLUMNS, feedback_influence, rank_biased_overlap

from fixtures.docs import make_docs

TEXTS = make_docs(7, seed=5)


def candidates(qid="q1", query="gene therapy for cancer", n=7):
    return pd.DataFrame({"qid": qid, "query": query, "docno": [f"{qid}-d{i}" for i in range(n)],
                         "text": TEXTS[:n], "rank": range(n)})


def rbo_by_definition(first, second, p):
    """RBO_ext written from its definition: the overlap fraction at every depth, summed with weights."""
    k = len(first)
    agreement = [len(set(first[:d]) & set(second[:d])) / d for d in range(1, k + 1)]
    return agreement[-1] * p ** k + (1 - p) / p * sum(a * p ** d for d, a in enumerate(agreement, start=1))


def tau_by_pairs(a, b):
    pairs = list(itertools.combinations(range(len(a)), 2))
    return sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs) / len(pairs)


@pytest.mark.parametrize("model_name", ["tiny_qwen", "minilm"])
def test_values_equal_a_direct_computation(model_name, request):
    model = request.getfixturevalue(model_name)
    frame = pd.concat([candidates("q1", n=7), candidates("q2", query="virus immune response", n=6)])
    got = feedback_influence(model, frame, num_input_docs=3)
    assert list(got.columns) == list(INFLUENCE_COLUMNS)
    assert got[["qid", "prompt_position"]].values.tolist() == [["q1", 1], ["q1", 2], ["q1", 3],
                                                               ["q2", 1], ["q2", 2], ["q2", 3]]
    prompt = model.listwise_prompt(num_input_docs=3)
    for qid, rows in frame.groupby("qid", sort=False):
        query, texts = rows["query"].iat[0], rows["text"].tolist()
        docs = model.encode_docs(texts)
        full = model.encode_prompts([prompt.render(model.tokenizer, query, texts[:3])])[0]
        order = list(np.argsort(-(docs @ full)))
        for i in range(3):
            row = got[(got["qid"] == qid) & (got["prompt_position"] == i + 1)].iloc[0]
            kept = [t for j, t in enumerate(texts[:3]) if j != i]
            without = model.encode_prompts([prompt.render(model.tokenizer, query, kept)])[0]
            order_without = list(np.argsort(-(docs @ without)))
            assert row["docno"] == rows["docno"].iat[i]
            cos = full @ without / np.linalg.norm(full) / np.linalg.norm(without)
            assert row["pseudo_query_shift"] == pytest.approx(1 - cos, abs=1e-5)
            assert row["kendall_tau"] == pytest.approx(tau_by_pairs(docs @ full, docs @ without), abs=1e-6)
            assert row["rbo"] == pytest.approx(rbo_by_definition(order, order_without, 0.9), abs=1e-9)
            assert (row["rank"], row["rank_without"]) == (order.index(i), order_without.index(i))
            assert row["rank_change"] == order_without.index(i) - order.index(i)
    reranked = model.reranker(num_input_docs=3)(frame)
    ranks = dict(zip(reranked["docno"], reranked["rank"]))
    assert got["rank"].tolist() == [ranks[d] for d in got["docno"]]  # the full prompt is the reranker's


def test_costs_k_extra_prompts_per_query_fewer_candidates_than_num_input_docs_and_index_vectors(tiny_qwen, tmp_path):
    frame = pd.concat([candidates("q1", n=7), candidates("q2", query="virus immune response", n=2)])
    index = tiny_qwen.indexer(tmp_path / "dense").index(frame.drop_duplicates("docno")[["docno", "text"]]
                                                        .to_dict("records"))
    with tiny_qwen.counting() as used:
        got = feedback_influence(tiny_qwen, frame, index, num_input_docs=4)
    assert used.texts == (1 + 4) + (1 + 2)  # prompts only: the documents' vectors are the index's
    assert len(got) == 4 + 2
    without_index = feedback_influence(tiny_qwen, frame, num_input_docs=4)
    np.testing.assert_allclose(got["pseudo_query_shift"], without_index["pseudo_query_shift"], atol=1e-5)


def test_a_lone_candidate_leaves_the_query_alone_in_the_prompt(tiny_qwen):
    got = feedback_influence(tiny_qwen, candidates(n=1))
    assert len(got) == 1 and np.isnan(got["kendall_tau"].iat[0]) and got["rbo"].iat[0] == 1.0
    alone = tiny_qwen.listwise_prompt().render(tiny_qwen.tokenizer, "gene therapy for cancer", [])
    full = tiny_qwen.listwise_prompt().render(tiny_qwen.tokenizer, "gene therapy for cancer", TEXTS[:1])
    a, b = tiny_qwen.encode_prompts([full, alone])
    assert got["pseudo_query_shift"].iat[0] == pytest.approx(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b),
                                                             abs=1e-5)


def test_empty_frame_gives_empty_frame_with_the_columns(tiny_qwen):
    got = feedback_influence(tiny_qwen, candidates().iloc[:0])
    assert len(got) == 0 and list(got.columns) == list(INFLUENCE_COLUMNS)


@pytest.mark.parametrize("change, kwargs, message", [
    (lambda f: pd.concat([f, f.iloc[:1]]), {}, "lists docno 'q1-d0' 2 times"),
    (lambda f: f.drop(columns=["text"]), {}, "text"),
    (lambda f: f.assign(rank=[0, 1, 2, 5, 6, 7, 8]), {}, "not consecutive"),
    (lambda f: f, {"window": 4}, "sliding windows"),
    (lambda f: f, {"rbo_p": 1.0}, "rbo_p must be in"),
])
def test_bad_input_is_refused_naming_it(tiny_qwen, change, kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message):
        feedback_influence(tiny_qwen, change(candidates()), **kwargs)


def test_rank_biased_overlap_known_values():
    assert rank_biased_overlap(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert rank_biased_overlap(["a", "b"], ["b", "a"], p=0.5) == pytest.approx(0.5)  # 0.5**2 + (0 + 0.5**2)
    assert rank_biased_overlap(list("abcdef"), list("fbdaec"), p=0.8) == pytest.approx(
        rbo_by_definition(list("abcdef"), list("fbdaec"), 0.8))
