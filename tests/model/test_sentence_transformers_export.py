"""``E2Rank.save_sentence_transformers``: ``SentenceTransformer(directory)`` gives the model's query and document
vectors (and, with ``add_special_tokens=False``, its listwise prompt vectors), ``E2Rank(directory)`` its identity."""
import json

import numpy as np
import pytest

from pyterrier_e2rank import E2Rank, truncate_words

QUERIES = ["what do antibodies do", "Ünïcödé — 蛋白质?", " ".join(["gene"] * 40)]
#: Documents as E2Rank writes them (pt_docs/specification.rst §4: whitespace runs as one space, <= 1,024 words).
DOCS = ["Antibodies bind antigens.", "B cells make antibodies in the lymph nodes.", "蛋白质 蛋白质 end",
        " ".join(["word"] * 300)]
#: How the listwise prompt is encoded through sentence-transformers: without the appended <|endoftext|>.
NO_EOS = {"text": {"add_special_tokens": False}}


def identity(model: E2Rank) -> dict:
    return {key: value for key, value in model.fingerprint().items() if key != "model"}


def export(model: E2Rank, directory):
    from sentence_transformers import SentenceTransformer
    model.save_sentence_transformers(directory)
    return SentenceTransformer(str(directory), device="cpu")


@pytest.mark.slow
def test_tiny_qwen_export_gives_its_vectors_and_identity(tiny_qwen, tmp_path):
    st = export(tiny_qwen, tmp_path / "st")
    assert st.prompts["query"] == f"Instruct: {tiny_qwen.query_task}\nQuery:" and st.max_seq_length == 8192
    assert st.tokenizer.padding_side == "left"
    np.testing.assert_allclose(st.encode_query(QUERIES, batch_size=2), tiny_qwen.encode_queries(QUERIES), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(DOCS, batch_size=2), tiny_qwen.encode_docs(DOCS), atol=1e-5)
    prompt = tiny_qwen.listwise_prompt().render(tiny_qwen.tokenizer, QUERIES[0], DOCS)
    np.testing.assert_allclose(st.encode([prompt], processing_kwargs=NO_EOS), tiny_qwen.encode_prompts([prompt]),
                               atol=1e-5)
    raw = "  Antibodies\n bind\tantigens.  "  # E2Rank rewrites it; sentence-transformers needs it rewritten
    assert not np.allclose(st.encode_document([raw]), tiny_qwen.encode_docs([raw]), atol=1e-5)
    np.testing.assert_allclose(st.encode_document([truncate_words(raw)]), tiny_qwen.encode_docs([raw]), atol=1e-5)
    assert identity(E2Rank(str(tmp_path / "st"))) == identity(tiny_qwen)


@pytest.mark.slow
def test_cut_texts_end_with_endoftext_as_e2ranks(tiny_qwen_dir, tmp_path):
    model = E2Rank(str(tiny_qwen_dir), device="cpu", max_length=12, doc_max_words=2)  # documents: 8 tokens
    st = export(model, tmp_path / "st")
    long_docs = ["supercalifragilisticexpialidocious antidisestablishmentarianism", "ÜñïçødéÜñïçødé ξψζ"]
    assert all(len(model.tokenizer(doc)["input_ids"]) > 8 for doc in long_docs)
    np.testing.assert_allclose(st.encode_query(QUERIES), model.encode_queries(QUERIES), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(long_docs), model.encode_docs(long_docs), atol=1e-5)
    assert identity(E2Rank(str(tmp_path / "st"), doc_max_words=2)) == identity(model)


def test_minilm_export_keeps_its_pooling_and_length(minilm, tmp_path):
    st = export(minilm, tmp_path / "st")
    texts = DOCS + [" ".join(["retrieval"] * 400)]  # beyond max_seq_length=256
    assert not st.prompts.get("query") and st.max_seq_length == 256  # no instruction
    np.testing.assert_allclose(st.encode_query(texts), minilm.encode_queries(texts), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(texts), minilm.encode_docs(texts), atol=1e-5)
    assert identity(E2Rank(str(tmp_path / "st"))) == identity(minilm)


def test_a_tokenizer_that_appends_nothing_is_refused(tiny_qwen, tmp_path, monkeypatch):
    from transformers.tokenization_utils_tokenizers import TokenizersBackend
    monkeypatch.setattr(TokenizersBackend, "update_post_processor", lambda self: None)
    with pytest.raises(ValueError, match="its tokenizer .* gives"):
        tiny_qwen.save_sentence_transformers(tmp_path / "st")
    assert not (tmp_path / "st").exists()


def test_an_export_is_replaced_only_when_asked(tiny_qwen, tiny_qwen_dir, tmp_path):
    tiny_qwen.save_sentence_transformers(tmp_path / "st")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny_qwen.save_sentence_transformers(tmp_path / "st")
    tiny_qwen.save_sentence_transformers(tmp_path / "st", overwrite=True)
    assert json.loads((tmp_path / "st" / "modules.json").read_text())[1]["path"] == "1_Pooling"
    with pytest.raises(ValueError, match="is the input model"):
        tiny_qwen.save_sentence_transformers(tiny_qwen_dir, overwrite=True)
