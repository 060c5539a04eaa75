"""Encoder models with a sentence-transformers configuration: the library's vectors are ST's."""
import numpy as np
import pandas as pd

LONG = "retrieval " * 400  # beyond max_seq_length=256: both must truncate the same way
TEXTS = ["The quick brown fox.", "Gene therapy improves outcomes in some cancers.", "Ünïcödé — 蛋白质", LONG]


def test_minilm_follows_its_sentence_transformers_config(minilm):
    assert minilm.pooling.mode == "mean" and minilm.pooling.normalize and minilm.max_length == 256
    assert minilm.query_task is None  # no instruction unless given


def test_minilm_vectors_equal_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    docs = minilm.doc_encoder()(pd.DataFrame({"docno": list("abcd"), "text": TEXTS}))
    np.testing.assert_allclose(np.stack(docs["doc_vec"]), reference, atol=1e-5)
    queries = minilm.query_encoder()(pd.DataFrame({"qid": list("abcd"), "query": TEXTS}))
    np.testing.assert_allclose(np.stack(queries["query_vec"]), reference, atol=1e-5)


def test_minilm_prompt_fits_its_512_positions(minilm):
    docs = ["word " * 300] * 20
    prompt = minilm.listwise_prompt().render(minilm.tokenizer, "a query", docs)
    assert len(minilm.tokenizer(prompt)["input_ids"]) <= 512
    assert prompt.count("[") >= 20 and prompt.endswith("Search Query: a query")
