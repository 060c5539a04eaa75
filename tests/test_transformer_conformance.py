"""Every public transformer passes PyTerrier's own checks, ``pt.testing.TransformerTestCase``: ``pt.inspect``
finds its input and output columns (by running it on frames without rows) and its schematic draws with a label
of at most 20 characters. What inspection reports is what a run on real rows returns, and each stage has the
label listed here. A check that does not apply is skipped saying why; the list of transformers is complete
(``test_every_public_transformer_is_checked``)."""
import inspect
import unittest
from types import SimpleNamespace

import pandas as pd
import pyterrier as pt
import pytest

import pyterrier_e2rank
from pyterrier_e2rank import DocumentText, E2Rank, E2RankIndex, pisa_bm25
from pyterrier_e2rank.index.artifact import NOT_TRANSFORMERS
from pyterrier_e2rank.rerank.vectors import DotProduct
from fixtures.docs import TOPIC_DOCS
from fixtures.exports import importable_exports

DOCS = TOPIC_DOCS.head(8)
CHECKS = ("test_inspect_io", "test_schematic")
#: pyterrier-dr's searches that an ``E2RankIndex`` refuses.
REFUSED = ("scann_retriever", "voyager_retriever", "flatnav_retriever", "kannolo_hnsw_retriever")

#: How each public transformer is made (``e``: the module's ``stages``), and its schematic label.
CASES = {
    "E2Rank.query_encoder": (lambda e: e.model.query_encoder(), "E2RankQueryEncoder"),
    "E2Rank.doc_encoder": (lambda e: e.model.doc_encoder(), "E2RankDocEncoder"),
    "E2Rank.indexer": (lambda e: e.model.indexer(e.tmp / "new"), "E2RankIndexer"),
    "E2Rank.retriever": (lambda e: e.model.retriever(e.index), None),  # a pipeline: query_encoder >> retriever
    "E2Rank.scorer": (lambda e: e.model.scorer(), "E2RankScorer"),
    "E2Rank.scorer(index)": (lambda e: e.model.scorer(e.index), "E2RankScorer"),
    "E2Rank.prompt_encoder": (lambda e: e.model.prompt_encoder(), "E2RankPromptEncoder"),
    "E2Rank.prompt_encoder(cache)": (lambda e: e.model.prompt_encoder(cache=e.tmp / "prompts"), "E2RankPromptEncoder"),
    "E2Rank.reranker": (lambda e: e.model.reranker(), "E2RankReranker"),
    "E2Rank.reranker(index)": (lambda e: e.model.reranker(index=e.index), "E2RankReranker"),
    "E2Rank.reranker(window)": (lambda e: e.model.reranker(window=2), "E2RankReranker"),
    "pyterrier_e2rank.PromptRenderer": (lambda e: e.model.prompt_encoder().renderer, "PromptRenderer"),
    "pyterrier_e2rank.PromptVectorEncoder": (lambda e: e.model.prompt_encoder().vec_encoder, "PromptVectorEncoder"),
    "pyterrier_e2rank.PromptVectorCache": (lambda e: e.model.prompt_encoder(cache=e.tmp / "prompts").vec_encoder,
                                           "PromptVectorCache"),
    "pyterrier_e2rank.CandidateVectors": (lambda e: e.model.reranker().vec_loader, "CandidateVectors"),
    "pyterrier_e2rank.DotProduct": (lambda e: DotProduct(), "DotProduct"),
    "pyterrier_e2rank.DocumentText": (lambda e: DocumentText(e.corpus), "DocumentText"),
    "pyterrier_e2rank.pisa_bm25": (lambda e: pisa_bm25(e.pisa), "BM25 (PISA)"),
    "pyterrier_e2rank.terrier_bm25": (None, None),
    "E2RankIndex": (lambda e: e.index, "E2RankIndex"),
    "E2RankIndex.retriever": (lambda e: e.index.retriever(), "E2RankRetriever"),
    "E2RankIndex.text_loader": (lambda e: e.index.text_loader(), "TextLoader"),
    "E2RankIndex.vec_loader": (lambda e: e.index.vec_loader(), "DocnoVectorLoader"),
    "E2RankIndex.np_vec_loader": (lambda e: e.index.np_vec_loader(), "DocnoVectorLoader"),
    "E2RankIndex.scorer": (lambda e: e.index.scorer(), "NumpyScorer"),
    "E2RankIndex.np_scorer": (lambda e: e.index.np_scorer(), "NumpyScorer"),
    "E2RankIndex.torch_scorer": (lambda e: e.index.torch_scorer(), "TorchScorer"),
    "E2RankIndex.np_retriever": (lambda e: e.index.np_retriever(), "NumpyRetriever"),
    "E2RankIndex.torch_retriever": (lambda e: e.index.torch_retriever(), "TorchRetriever"),
    "E2RankIndex.faiss_flat_retriever": (lambda e: e.index.faiss_flat_retriever(), "FaissRetriever"),
    "E2RankIndex.faiss_hnsw_retriever": (lambda e: e.index.faiss_hnsw_retriever(), "FaissRetriever"),
    "E2RankIndex.faiss_ivf_retriever": (lambda e: e.index.faiss_ivf_retriever(n_list=2, train_sample=8),
                                        "FaissRetriever"),
    "E2RankIndex.faiss_ivfpq_retriever": (lambda e: e.index.faiss_ivfpq_retriever(n_list=2, nbits=2),
                                          "FaissAnnRetriever"),
    "E2RankIndex.faiss_flat_fp16_retriever": (lambda e: e.index.faiss_flat_fp16_retriever(), "FaissAnnRetriever"),
    "E2RankIndex.faiss_hnsw_fp16_retriever": (lambda e: e.index.faiss_hnsw_fp16_retriever(), "FaissAnnRetriever"),
    "E2RankIndex.int8_retriever": (lambda e: e.index.int8_retriever(), "FaissAnnRetriever"),
    "E2RankIndex.binary_retriever": (lambda e: e.index.binary_retriever(), "FaissAnnRetriever"),
    "E2RankIndex.gar": (lambda e: e.index.gar(k=4), "FlexGar"),
    "E2RankIndex.ladr": (lambda e: e.index.ladr(k=4), "LadrPreemptive"),
    "E2RankIndex.pre_ladr": (lambda e: e.index.pre_ladr(k=4), "LadrPreemptive"),
    "E2RankIndex.ladr_proactive": (lambda e: e.index.ladr_proactive(k=4), "LadrPreemptive"),
    "E2RankIndex.ada_ladr": (lambda e: e.index.ada_ladr(k=4), "LadrAdaptive"),
    "E2RankIndex.ladr_adaptive": (lambda e: e.index.ladr_adaptive(k=4), "LadrAdaptive"),
    "E2RankIndex.mmr": (lambda e: e.index.mmr(), None),
    **{f"E2RankIndex.{name}": (lambda e, name=name: getattr(e.index, name)(), None) for name in REFUSED},
}

INDEXER = ("an indexer: pt.inspect.transformer_inputs runs a transformer on a frame without rows, an indexer "
           "declares index_inputs() instead (test_inspection_is_what_a_run_returns indexes each)")
MMR = ("pyterrier-dr's mmr() (its vec_loader >> MmrScorer) unchanged: PyTerrier infers a pipeline's inputs from its "
       "first stage, which takes any frame with docno, and MmrScorer declares (qid, docno, doc_vec) but reads score")
#: Checks that do not apply, and why (``"*"``: none applies).
SKIPPED = {
    ("E2Rank.indexer", "test_inspect_io"): INDEXER,
    ("E2RankIndex.mmr", "*"): MMR,
    ("pyterrier_e2rank.terrier_bm25", "*"): "PyTerrier's own pt.terrier.Retriever, returned unchanged (PyTerrier's "
                                            "tests check it); its index needs Java",
    **{(f"E2RankIndex.{name}", "*"): "refused (NotImplementedError): an E2RankIndex serves only the structures it "
                                     "stores by the digest of its vectors" for name in REFUSED},
}


@pytest.fixture(scope="module", autouse=True)
def offline_documentation():
    """A schematic links each stage to PyTerrier's online documentation (its ``objects.inv``, downloaded): here
    an empty inventory, so the tests never reach the internet (no links; the rest is the same)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pt.documentation, "_cached_objects_inv", pt.documentation._cached_objects_inv or {})
        patch.setenv("PT_TEST_TRANSFORMER_REPORTS", "0")  # TransformerTestCase's report, a warning per class
        yield


@pytest.fixture(scope="module")
def stages(tiny_qwen, tmp_path_factory):
    """The tiny Qwen3, an index of ``DOCS`` with its model, the same documents as a corpus file and a PISA
    index, and a value for each column a frame can hold (one query, two candidates)."""
    tmp = tmp_path_factory.mktemp("conformance")
    index = tiny_qwen.indexer(tmp / "dense").index(DOCS.to_dict("records"))
    corpus = tmp / "corpus.tsv"
    DOCS.to_csv(corpus, sep="\t", index=False)
    pisa = str(tmp / "pisa")
    pisa_bm25(pisa, pyterrier_e2rank.dataset(corpus))
    texts = DOCS["text"].head(2).tolist()
    query_vec = tiny_qwen.encode_queries(["gene therapy"])[0]
    values = {"qid": "q1", "query": "gene therapy", "docno": DOCS["docno"].head(2).tolist(), "docid": [0, 1],
              "text": texts, "query_vec": [query_vec, query_vec], "doc_vec": list(tiny_qwen.encode_docs(texts)),
              "score": [2.0, 1.0], "rank": [0, 1], "prompt": "a prompt", "query_toks": [{"gene": 1.0}]}
    return SimpleNamespace(model=tiny_qwen, index=index, corpus=corpus, pisa=pisa, tmp=tmp, values=values)


def make(name: str, stages):
    """The transformer of case ``name``; a skip naming the reason where no check applies."""
    build = CASES[name][0]
    if name.split(".")[-1] in REFUSED:
        with pytest.raises(NotImplementedError):
            build(stages)
    if (name, "*") in SKIPPED:
        pytest.skip(SKIPPED[name, "*"])
    return build(stages)


def frame(columns, values) -> pd.DataFrame:
    """Rows with ``columns``: one query's two candidates, or one query."""
    rows = 2 if {"docno", "docid"} & set(columns) else 1
    return pd.DataFrame({c: (values[c] if isinstance(values[c], list) else [values[c]] * 2)[:rows] for c in columns})


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", list(CASES))
def test_pyterrier_checks(stages, name, check):
    """PyTerrier's own check ``check`` of ``TransformerTestCase``, as it runs it."""
    transformer = make(name, stages)
    if (name, check) in SKIPPED:
        pytest.skip(SKIPPED[name, check])
    result = unittest.TestResult()
    unittest.TestSuite([pt.testing.transformer_test_class(lambda: transformer)(check)]).run(result)
    assert result.testsRun == 1
    assert not result.failures + result.errors, "\n".join(text for _, text in result.failures + result.errors)


@pytest.mark.parametrize("name", list(CASES))
def test_inspection_is_what_a_run_returns(stages, name):
    """Each input configuration ``pt.inspect`` reports, given real rows, gives the columns it reports (an
    indexer indexes them)."""
    transformer = make(name, stages)
    if pt.inspect.transformer_type(transformer) == pt.inspect.TransformerType.indexer:
        for number, columns in enumerate(pt.inspect.indexer_inputs(transformer)):
            index = stages.model.indexer(stages.tmp / f"indexed-{number}").index(frame(columns, stages.values))
            assert index.meta["doc_count"] == 2, columns
        return
    configurations = pt.inspect.transformer_inputs(transformer)
    for columns in configurations:
        out = transformer(frame(columns, stages.values))
        assert len(out), columns
        assert list(out.columns) == pt.inspect.transformer_outputs(transformer, columns), columns


def test_schematic_labels(stages):
    """The label each stage is drawn with (a pipeline has none of its own)."""
    labels = {}
    for name, (build, _) in CASES.items():
        if (name, "*") not in SKIPPED:
            labels[name] = pt.schematic.transformer_schematic(build(stages)).get("label")
    assert labels == {name: label for name, (_, label) in CASES.items() if (name, "*") not in SKIPPED}


def test_every_public_transformer_is_checked(stages):
    """Every factory of ``E2Rank`` and ``E2RankIndex`` that hands out a transformer, and every exported
    transformer factory, is a case above; every exported transformer class is made by one."""
    def makes_transformer(function):
        returned = inspect.signature(function).return_annotation
        return isinstance(returned, type) and issubclass(returned, pt.Transformer)
    wanted = {f"E2Rank.{name}" for name, method in vars(E2Rank).items() if callable(method) and not
              name.startswith("_") and makes_transformer(method)}
    wanted |= {f"E2RankIndex.{name}" for name in dir(E2RankIndex) if not name.startswith("_") and name not in
               NOT_TRANSFORMERS and inspect.isfunction(inspect.getattr_static(E2RankIndex, name))}
    exported = importable_exports()
    wanted |= {f"pyterrier_e2rank.{name}" for name, value in exported.items()
               if inspect.isfunction(value) and makes_transformer(value)}
    assert wanted - set(CASES) == set()
    classes = {value for value in exported.values() if isinstance(value, type) and issubclass(value, pt.Transformer)}
    made = {type(build(stages)) for name, (build, _) in CASES.items() if (name, "*") not in SKIPPED}
    assert classes - made == set()
