"""The exported CPU backends: ``E2Rank(backend="openvino")`` (bfloat16 where the CPU has it, else float32),
``backend="onnx"`` (float32) and ``backend="onnx", quantize="int8"`` compute the PyTorch vectors (float32
within 1e-4, bfloat16 within cosine 0.999, int8 close; on SciFact documents the cosines
``backends.PROMISED_COSINE`` promises), for encoders and for Qwen3 decoders (left padding,
last-token pooling, listwise prompts); their vectors are marked in the fingerprint, and the float32 ones share
PyTorch's identity (OpenVINO's bfloat16 and int8 stay apart); unsupported combinations are refused naming both,
a missing package with its pip line."""
import importlib.util
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures.docs import make_docs
from pyterrier_e2rank import E2Rank, E2RankIndex
from pyterrier_e2rank.model.backends import PROMISED_COSINE, SHARES_PYTORCH_IDENTITY
from pyterrier_e2rank.model.provenance import IndexModelMismatch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
openvino = pytest.importorskip("openvino")

#: The options of each exported model, and the largest difference allowed from float32 PyTorch's vectors
#: (absolute) or the smallest cosine to them. OpenVINO's default precision is bfloat16 on a CPU with
#: AVX-512 BF16 or AMX (float32 elsewhere, where the bound is far looser than needed).
EXPORTED = {"onnx": ({"backend": "onnx"}, {"max_abs": 1e-4}),
            "openvino": ({"backend": "openvino"}, {"min_cos": 0.999}),
            "openvino-f32": ({"backend": "openvino", "dtype": torch.float32}, {"max_abs": 1e-4}),
            "onnx-int8": ({"backend": "onnx", "quantize": "int8"}, {"min_cos": 0.95})}


@pytest.fixture(scope="module", params=["minilm", "tiny_qwen"])
def models(request, minilm_dir, tiny_qwen_dir):
    """Float32 PyTorch (``"torch"``), bfloat16 PyTorch and every exported model of one checkpoint, by name."""
    path = str(minilm_dir if request.param == "minilm" else tiny_qwen_dir)
    built = {name: E2Rank(path, device="cpu", batch_size=8, **options) for name, (options, _) in EXPORTED.items()}
    return {"torch": E2Rank(path, device="cpu", batch_size=8),
            "torch-bfloat16": E2Rank(path, device="cpu", batch_size=8, dtype=torch.bfloat16), **built}


@pytest.fixture(scope="module")
def pytorch_docs(models):
    """``pytorch_docs(texts, batch_size=None)``: float32 PyTorch's vectors of ``texts``, computed once per
    checkpoint (the reference every backend is compared with)."""
    computed = {}

    def encode(texts, batch_size=None):
        key = (tuple(texts), batch_size)
        if key not in computed:
            computed[key] = models["torch"].encode_docs(texts, batch_size=batch_size)
        return computed[key]
    return encode


#: Two batches of 16 whole SciFact documents (256 MiniLM tokens each): those of the two whose MiniLM int8 vectors
#: were farthest from float32's over the whole corpus encoded in batches of 16 (length-sorted, as ``E2Rank``
#: batches: cosine 0.98814 for 30861948, 0.98951 for 13777138). An int8 vector depends on its batch mates.
FARTHEST_INT8_BATCHES = (
    ("30543439", "30580263", "30639847", "30658796", "30714190", "30720103", "30786800", "30805636", "30813140",
     "30835854", "30844602", "30861948", "30884033", "30908508", "30915421", "30919024"),
    ("13717103", "13732033", "13734012", "13760557", "13764090", "13765757", "13768432", "13770184", "13774178",
     "13777138", "13777706", "13778710", "13780287", "13782317", "13791044", "13791206"))


@pytest.fixture(scope="module")
def scifact_batches(shared_path) -> list:
    """``FARTHEST_INT8_BATCHES`` as texts (title joined)."""
    import gzip
    import json
    from pyterrier_e2rank.model.text import join_title
    with gzip.open(shared_path("data", "scifact", "corpus.jsonl.gz"), "rt") as corpus:
        texts = {r["_id"]: join_title(r["title"], r["text"]) for r in map(json.loads, corpus)}
    return [[texts[docno] for docno in batch] for batch in FARTHEST_INT8_BATCHES]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROMISED_COSINE))
def test_the_promised_cosines_hold_on_scifact_documents(models, pytorch_docs, scifact_batches, name):
    """README, docstrings and --quantize help promised int8 vectors within cosine 0.99 where SciFact gave 0.9881."""
    for batch in scifact_batches:
        reference = pytorch_docs(batch, batch_size=16)
        cosines = (models[name].encode_docs(batch, batch_size=16) * reference).sum(1)
        assert cosines.min() >= PROMISED_COSINE[name], cosines.min()


def _close(got: np.ndarray, expected: np.ndarray, bound: dict) -> None:
    if "max_abs" in bound:
        assert np.abs(got - expected).max() < bound["max_abs"]
    else:
        cosines = (got * expected).sum(1)
        assert cosines.min() > bound["min_cos"], cosines.min()


@pytest.mark.parametrize("name", EXPORTED)
def test_exported_vectors_match_pytorch(models, pytorch_docs, name):
    reference, exported = models["torch"], models[name]
    docs = make_docs(40, seed=3)  # lengths 3 to 1024 words: padding on the model's side in every batch
    bound = EXPORTED[name][1]
    _close(exported.encode_docs(docs), pytorch_docs(docs), bound)
    queries = ["gene therapy for cancer", "virus"]
    _close(exported.encode_queries(queries), reference.encode_queries(queries), bound)


@pytest.mark.parametrize("name", EXPORTED)
def test_exported_batches_like_one_at_a_time(models, name):
    """float32 exactly; bfloat16 within its rounding; int8 within its per-batch activation scale (a vector
    depends on its batch mates)."""
    model = models[name]
    docs = make_docs(12, seed=4)
    alone = np.stack([model.encode_docs([d], batch_size=1)[0] for d in docs])
    batched = model.encode_docs(docs, batch_size=12)
    _close(batched, alone, {"onnx-int8": {"min_cos": 0.98}}.get(name, EXPORTED[name][1]))


@pytest.mark.parametrize("name, tolerance", [("onnx", 1e-4), ("openvino-f32", 1e-4), ("openvino", 5e-3)])
def test_exported_reranker_scores_like_pytorch(models, name, tolerance):
    """The listwise prompt (query and top candidates in one text) through the exported backbone."""
    docs = make_docs(20, seed=6)
    frame = pd.DataFrame({"qid": "q", "query": "gene therapy", "docno": [f"d{i}" for i in range(20)],
                          "text": docs, "rank": range(20)})
    expected, got = (models[key].reranker(num_input_docs=5)(frame).sort_values("docno")["score"].to_numpy()
                     for key in ("torch", name))
    assert np.abs(got - expected).max() < tolerance


def test_the_identity_rule_shares_exactly_the_float32_exports(models):
    """An inference method shares PyTorch's identity exactly when it computes in float32 (as PyTorch's vectors
    within 1e-4, tested above), and the table names every method a model can be built with."""
    for name in EXPORTED:
        model = models[name]
        assert SHARES_PYTORCH_IDENTITY[model.inference] == (model.precision == "f32"), name
    assert set(SHARES_PYTORCH_IDENTITY) == {"onnx", "onnx-int8", "openvino", "openvino-bf16"}


def test_float32_backends_share_pytorchs_identity_and_int8_stays_apart(models, tmp_path):
    """A PyTorch index serves OpenVINO's and ONNX Runtime's float32 queries and vectors, and an OpenVINO index
    PyTorch's; int8 vectors are refused both ways. Fingerprints still record how the vectors were computed."""
    reference = models["torch"]
    compiled = models["openvino"].exported.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    assert "inference" not in reference.fingerprint()  # float32 PyTorch indexes keep their identity
    assert {name: models[name].fingerprint()["inference"] for name in EXPORTED} == {
        "onnx": "onnx", "openvino": "openvino" if compiled == "f32" else f"openvino-{compiled}",
        "openvino-f32": "openvino", "onnx-int8": "onnx-int8"}
    assert (models["openvino"].precision, models["openvino-f32"].precision, models["torch"].precision) == (
        compiled, "f32", "float32")
    assert reference != models["onnx-int8"] and models["openvino-f32"] != models["onnx"] != reference
    assert (models["openvino"] == models["openvino-f32"]) == (compiled == "f32")  # equal: interchangeable
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(6)], "text": make_docs(6, seed=1)})
    torch_index = _index_of(reference, docs, tmp_path / "index")
    query = pd.DataFrame({"qid": ["q"], "query": [docs["text"][4][:200]]})
    expected = reference.reranker(num_input_docs=2, index=torch_index)(_retrieved(reference, torch_index, query, docs))
    for name in ("onnx", "openvino-f32"):
        retrieved = _retrieved(models[name], torch_index, query, docs)
        assert retrieved["docno"].iloc[0] == "d4", name
        reranked = models[name].reranker(num_input_docs=2, index=torch_index)(retrieved)
        assert np.abs(reranked.sort_values("docno")["score"].to_numpy()
                      - expected.sort_values("docno")["score"].to_numpy()).max() < 5e-3, name
        built = _index_of(models[name], docs, tmp_path / name)
        assert E2RankIndex(built).fingerprint["inference"] == name.removesuffix("-f32")
        assert _retrieved(reference, built, query, docs)["docno"].iloc[0] == "d4", name  # PyTorch queries it
        scored = reference.scorer()(reference.query_encoder()(query).merge(models[name].doc_encoder()(docs),
                                                                           how="cross"))
        assert scored.sort_values("score")["docno"].iloc[-1] == "d4", name
    name = reference.model_name_or_path
    with pytest.raises(IndexModelMismatch, match=rf"built with model '{re.escape(name)}' with other settings than "
                                                 rf"now: compute as it does \(below\), or rebuild it with this model "
                                                 rf"\(differing, built vs now: inference None vs 'onnx-int8'; "
                                                 rf"vectors like these come from E2Rank\(\.\.\., "
                                                 rf"backend='torch'\), E2Rank\(\.\.\., backend='openvino', "
                                                 rf"dtype=torch.float32\) or E2Rank\(\.\.\., backend='onnx'\) "
                                                 rf"\(command lines: --backend torch, --backend openvino --dtype "
                                                 rf"float32 or --backend onnx\)\)$"):
        models["onnx-int8"].retriever(torch_index)
    int8_index = _index_of(models["onnx-int8"], docs, tmp_path / "int8")
    for other in ("torch", "openvino"):
        with pytest.raises(IndexModelMismatch, match=r"inference .*E2Rank\(\.\.\., backend='onnx', "
                                                     r"quantize='int8'\) \(command lines: --backend onnx --quantize "
                                                     r"int8\)"):
            models[other].retriever(int8_index)
    vectors = models["onnx-int8"].doc_encoder()(docs)
    with pytest.raises(IndexModelMismatch, match="inference"):
        reference.scorer()(reference.query_encoder()(query).merge(vectors, how="cross"))


def _retrieved(model: E2Rank, index, query: pd.DataFrame, docs: pd.DataFrame) -> pd.DataFrame:
    """The top 3 of ``index`` for ``query`` encoded by ``model``, with their text."""
    return (model.query_encoder() >> model.retriever(index, num_results=3))(query).merge(docs, on="docno")


def _index_of(model: E2Rank, docs: pd.DataFrame, path):
    return model.indexer(path).index(docs.to_dict("records")).path


def test_openvino_bfloat16_keeps_its_own_identity(models, tmp_path):
    """OpenVINO's bfloat16 vectors (SciFact nDCG@10 up to 0.003 from float32's) are refused on a float32 index,
    naming the calls that compute like it, and the other way round; an index they built serves them."""
    bfloat16 = models["openvino"]
    if bfloat16.precision != "bf16":
        pytest.skip("this CPU has no bfloat16 arithmetic, so OpenVINO computes in float32 here")
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(8)], "text": make_docs(8, seed=2)})
    float32_index = _index_of(models["openvino-f32"], docs, tmp_path / "f32")
    with pytest.raises(IndexModelMismatch, match=r"inference 'openvino' vs 'openvino-bf16'; .*E2Rank\(\.\.\., "
                                                 r"backend='openvino', dtype=torch.float32\)"):
        bfloat16.retriever(float32_index)
    path = _index_of(bfloat16, docs, tmp_path / "bf16")
    query = pd.DataFrame({"qid": ["q"], "query": [docs["text"][5][:200]]})
    assert (bfloat16.query_encoder() >> bfloat16.retriever(path, num_results=3))(query)["docno"].iloc[0] == "d5"
    with pytest.raises(IndexModelMismatch, match=r"E2Rank\(\.\.\., backend='openvino', dtype=torch.bfloat16\)"):
        models["torch"].retriever(path)


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_exported_model_refuses_gradients(models, name):
    exported = models[name]
    with pytest.raises(RuntimeError, match=f"backend='{name}' computes no gradients"):
        exported.embed(exported.tokenize_docs(["gene"]))


@pytest.mark.parametrize("options, message", [
    ({"backend": "tensorrt"}, r"backend='tensorrt', quantize=None \(model type 'bert'\) is not supported"),
    ({"backend": "onnx", "device": "cuda"}, r"backend='onnx', quantize=None \(model type 'bert'\) runs on the CPU "
                                            r"only, not on device 'cuda': pass device='cpu' \(--device cpu\)"),
    ({"backend": "onnx", "quantize": "int4"}, r"backend='onnx', quantize='int4' \(model type 'bert'\) is not "
                                              r"supported"),
    ({"quantize": "int8"}, r"backend='torch', quantize='int8' \(model type 'bert'\) is not supported; "
                           r"offered: .*backend='onnx', quantize='int8'"),
    ({"backend": "openvino", "quantize": "int8"}, r"backend='openvino', quantize='int8' \(model type 'bert'\) is "
                                                  r"not supported"),
    ({"backend": "onnx", "dtype": torch.bfloat16}, r"backend='onnx', quantize=None \(model type 'bert'\) computes "
                                                   r"in torch.float32, not in dtype=torch.bfloat16: pass no dtype"),
    ({"backend": "openvino", "dtype": torch.float16}, r"backend='openvino', quantize=None \(model type 'bert'\) "
                                                      r"computes in torch.float32 or torch.bfloat16, not in "
                                                      r"dtype=torch.float16"),
])
def test_unsupported_backend_or_quantization_is_refused_naming_both(minilm_dir, options, message):
    with pytest.raises(ValueError, match=message):
        E2Rank(str(minilm_dir), **{"device": "cpu", **options})


def test_openvino_on_a_cpu_without_bfloat16_computes_float32_and_refuses_bfloat16(minilm_dir, monkeypatch):
    get_property = openvino.Core.get_property
    monkeypatch.setattr(openvino.Core, "get_property", lambda self, device, name: ["FP32", "INT8"]
                        if name == "OPTIMIZATION_CAPABILITIES" else get_property(self, device, name))
    model = E2Rank(str(minilm_dir), device="cpu", backend="openvino")
    assert (model.precision, model.inference) == ("f32", "openvino")
    with pytest.raises(ValueError, match=r"dtype=torch.bfloat16: this CPU .* has no bfloat16 arithmetic"):
        E2Rank(str(minilm_dir), device="cpu", backend="openvino", dtype=torch.bfloat16)


@pytest.mark.parametrize("backend, package", [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_missing_package_names_its_pip_line(minilm_dir, monkeypatch, backend, package):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else find_spec(name, *a))
    message = (rf"backend='{backend}', quantize=None needs the package\(s\) \['{package}'\]: "
               rf"pip install 'pyterrier-e2rank\[cpu\]'  \(or: pip install onnx {package}\)")
    with pytest.raises(ImportError, match=message):
        E2Rank(str(minilm_dir), device="cpu", backend=backend)


def test_repr_reads_like_the_constructor(models):
    assert repr(models["openvino-f32"]).endswith(", batch_size=8, backend='openvino', dtype=torch.float32)")
    assert repr(models["openvino"]).endswith(", batch_size=8, backend='openvino')")
    assert repr(models["onnx-int8"]).endswith(", batch_size=8, backend='onnx', quantize='int8')")
    assert repr(models["torch"]).endswith(", batch_size=8)")


def test_the_command_lines_take_the_backend(minilm_dir, tmp_path, capsys, monkeypatch):
    """``e2rank index --backend openvino --dtype float32`` writes vectors marked as OpenVINO's; a quantization the
    backend does not offer is one line on stderr, exit status 2, and nothing written."""
    import sys
    from pyterrier_e2rank.cli.main import console
    collection = tmp_path / "docs.jsonl"
    collection.write_text("".join(f'{{"id": "d{i}", "contents": "text {i}"}}\n' for i in range(3)))
    command = ["e2rank", "index", "--collection", str(collection), "--model", str(minilm_dir), "--quiet",
               "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", [*command, "--output", str(tmp_path / "index"), "--backend", "openvino",
                                      "--dtype", "float32"])
    assert console() == 0
    assert E2RankIndex(tmp_path / "index").fingerprint["inference"] == "openvino"
    monkeypatch.setattr(sys, "argv", [*command, "--output", str(tmp_path / "other"), "--quantize", "int8"])
    assert console() == 2
    assert "backend='torch', quantize='int8' (model type 'bert') is not supported" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_quantizing_silences_only_its_own_advice(minilm_dir, caplog):
    """ONNX Runtime's advice to pre-process the graph is dropped while quantizing; the root logger's
    warnings still reach their handlers afterwards (its level and cache untouched)."""
    import logging
    caplog.set_level(logging.WARNING)  # through setLevel: an empty isEnabledFor cache
    E2Rank(str(minilm_dir), device="cpu", backend="onnx", quantize="int8")
    logging.warning("a warning of the user's after quantizing")
    assert "pre-processing" not in caplog.text
    assert "a warning of the user's after quantizing" in caplog.text


def test_the_experiment_keeps_one_dense_index_per_identity(models, tmp_path):
    """``e2rank experiment`` reuses PyTorch's dense index for a backend sharing its identity and builds int8's
    beside it (``dense.<model>.onnx-int8``), never over it."""
    from pyterrier_e2rank.cli.experiment import dense_index_for
    folder = tmp_path / "corpus"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(f'{{"_id": "d{i}", "text": "{text}"}}\n'
                                                 for i, text in enumerate(make_docs(6, seed=3))))
    (folder / "queries.jsonl").write_text('{"_id": "q", "text": "gene"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td1\t1\n")
    first = dense_index_for(models["torch"], folder, tmp_path / "indexes", verbose=False)
    built = (first.path / "pt_meta.json").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a rebuild warns
        assert dense_index_for(models["onnx"], folder, tmp_path / "indexes", verbose=False).path == first.path
        int8 = dense_index_for(models["onnx-int8"], folder, tmp_path / "indexes", verbose=False)
    assert int8.path.name == f"{first.path.name}.onnx-int8" and int8.fingerprint["inference"] == "onnx-int8"
    assert (first.path / "pt_meta.json").stat().st_mtime_ns == built
