"""Every transformer the model makes declares the inputs and outputs below to ``pt.inspect``, so PyTerrier can
validate a pipeline before it runs (PyTerrier's own checks of every transformer: test_transformer_conformance.py)."""
import pyterrier as pt
import pytest

VECTORS = ["query_vec", "query_vec_model"]
RANKED = [["qid", "docno", "query", "text", "rank"], ["qid", "docno", "query", "text", "score"]]
EXPECTED = {
    "query_encoder": ([["qid", "query"]], [["qid", "query"] + VECTORS]),
    "doc_encoder": ([["docno", "text"]], [["docno", "text", "doc_vec", "doc_vec_model"]]),
    "prompt_encoder": (RANKED, [["qid", "query"] + VECTORS] * 2),
    "reranker": ([["qid", "docno", "query", "rank"], ["qid", "docno", "query", "score"]],  # text: the index's
                 [["qid", "docno", "query", "score", "rank"]] * 2),
    "retriever": ([["qid", "query"]], [["qid", "query", "docno", "score", "rank"]]),
    "scorer": ([["qid", "docno", "query", "text"], ["qid", "docno", "query", "doc_vec"]],
               [["qid", "docno", "query", "text", "score", "rank"],
                ["qid", "docno", "query", "doc_vec", "score", "rank"]]),
}


@pytest.fixture(scope="module")
def transformers(minilm, tmp_path_factory):
    index = minilm.indexer(tmp_path_factory.mktemp("inspect") / "x.e2rank").index(
        [{"docno": "d1", "text": "protein folding"}, {"docno": "d2", "text": "gene therapy"}])
    return {"query_encoder": minilm.query_encoder(), "doc_encoder": minilm.doc_encoder(),
            "prompt_encoder": minilm.prompt_encoder(), "reranker": minilm.reranker(index=index),
            "retriever": minilm.retriever(index), "scorer": minilm.scorer()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_inputs_and_outputs_are_declared(transformers, name):
    transformer = transformers[name]
    inputs = pt.inspect.transformer_inputs(transformer)
    outputs = [pt.inspect.transformer_outputs(transformer, columns) for columns in inputs]
    assert (inputs, outputs) == EXPECTED[name]
