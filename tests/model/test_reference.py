"""The library against an independent, straightforward reading of pt_docs/specification.rst §2-§6 (one text at a time,
no padding, no batching), on a tiny random Qwen3 with the real Qwen3 tokenizer and chat template."""
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from fixtures.docs import make_docs

QUERY_TASK = "Given a web search query, retrieve relevant passages that answer the query"
RERANK_TASK = "Given a web search query and some relevant documents, rerank the documents that answer the query"

class Reference:
    """The authors' procedure, written out plainly."""

    def __init__(self, path):
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()

    @torch.inference_mode()
    def embed(self, text: str) -> np.ndarray:
        ids = self.tokenizer(text, return_tensors="pt")
        last = self.model(**ids).last_hidden_state[0, -1]
        return torch.nn.functional.normalize(last, dim=-1).numpy()

    def query(self, q: str) -> np.ndarray:
        return self.embed(f"Instruct: {QUERY_TASK}\nQuery:{q}<|endoftext|>")

    def doc(self, d: str) -> np.ndarray:
        return self.embed(" ".join(d.split()[:1024]) + "<|endoftext|>")

    def rerank_scores(self, q: str, docs, num_input_docs: int = 20) -> np.ndarray:
        cut = [" ".join(d.split()[:1024]) for d in docs]
        listing = "\n".join(f"[{i + 1}] {d}" for i, d in enumerate(cut[:num_input_docs]))
        content = f"{RERANK_TASK}:\nDocuments:\n{listing}\nSearch Query: {q}"
        prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                    add_generation_prompt=True, enable_thinking=False)
        assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        pseudo_query = self.embed(prompt)
        return np.array([self.doc(d) @ pseudo_query for d in docs])


@pytest.fixture(scope="module")
def reference(tiny_qwen_dir):
    return Reference(tiny_qwen_dir)


@pytest.fixture(scope="module")
def candidates():
    docs = make_docs(25)
    return pd.DataFrame({"qid": "q1", "query": "does gene therapy help cancer patients?",
                         "docno": [f"d{i}" for i in range(25)], "text": docs,
                         "score": np.linspace(10, 1, 25), "rank": np.arange(25)})


def test_query_vectors_match_reference(tiny_qwen, reference):
    queries = pd.DataFrame({"qid": ["1", "2", "3"],
                            "query": ["gene therapy", "what is the immune response to a virus in mice?", "Ünïcödé 蛋白质"]})
    out = tiny_qwen.query_encoder()(queries)
    for q, vec in zip(queries["query"], out["query_vec"]):
        np.testing.assert_allclose(vec, reference.query(q), atol=1e-4)


def test_doc_vectors_match_reference(tiny_qwen, reference, candidates):
    out = tiny_qwen.doc_encoder()(candidates[["docno", "text"]])
    for d, vec in zip(candidates["text"], out["doc_vec"]):
        np.testing.assert_allclose(vec, reference.doc(d), atol=1e-4)


def test_reranker_scores_match_reference(tiny_qwen, reference, candidates):
    expected = reference.rerank_scores(candidates["query"].iat[0], candidates["text"].tolist())
    out = tiny_qwen.reranker()(candidates.sample(frac=1, random_state=0))  # input order must not matter
    got = out.set_index("docno").loc[candidates["docno"], "score"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert out["rank"].tolist() == list(range(25))
    assert out["score"].is_monotonic_decreasing


@pytest.mark.parametrize("variant", ["19 documents", "readme prompt"])
def test_a_different_prompt_gives_different_scores(tiny_qwen, reference, candidates, variant):
    """Guards the test above: it can fail when the prompt is not exactly the published one."""
    expected = reference.rerank_scores(candidates["query"].iat[0], candidates["text"].tolist())
    reranker = tiny_qwen.reranker(num_input_docs=19) if variant == "19 documents" else \
        tiny_qwen.reranker(prompt_variant="readme")
    got = reranker(candidates).set_index("docno").loc[candidates["docno"], "score"].to_numpy()
    assert np.abs(got - expected).max() > 1e-3


def test_reference_prompt_uses_only_the_top_documents(tiny_qwen, reference, candidates):
    """Swapping the order of the 21st and later candidates must not change the pseudo-query."""
    reordered = candidates.copy()
    reordered.loc[20:, "rank"] = reordered.loc[20:, "rank"].to_numpy()[::-1]
    a = tiny_qwen.reranker()(candidates).set_index("docno")["score"]
    b = tiny_qwen.reranker()(reordered).set_index("docno")["score"]
    np.testing.assert_allclose(a.loc[candidates["docno"]], b.loc[candidates["docno"]], atol=1e-6)
