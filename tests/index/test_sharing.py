"""Sharing an index: ``pt.Artifact.load`` opens it as an ``E2RankIndex`` (the ``pyterrier.artifact`` entry point of
its type and format, read from the installed metadata: after editing ``setup.cfg``, reinstall); ``build_package``
packs exactly the files the index reads; ``pt.Artifact.from_url`` (a package served on 127.0.0.1) and
``to_hf``/``from_hf`` (the hub's client and its URL pointed at a local folder and server: no hub here) give back
an index that keeps its model's fingerprint and refuses another model's queries like a local one."""
import functools
import json
import shutil
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pyterrier as pt
import pytest
from lz4.frame import LZ4FrameFile
from pyterrier_dr import FlexIndex

from pyterrier_e2rank import E2Rank, E2RankIndex, IndexModelMismatch

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "indexes" / "0.3.2" / "tiny-qwen3.e2rank"
DOCS = [{"docno": f"d{i}", "text": f"document {i} about {topic}"}
        for i, topic in enumerate(["gene therapy", "virus", "protein folding", "climate", "vaccines"] * 4)]
QUERIES = pd.DataFrame({"qid": ["q1", "q2"], "query": ["protein folding", "virus"]})


@pytest.fixture(autouse=True)
def pyterrier_home(tmp_path, monkeypatch):
    """``from_url`` downloads into PyTerrier's home: this test's own, not the user's."""
    monkeypatch.setenv("PYTERRIER_HOME", str(tmp_path / "pyterrier-home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture(scope="module")
def index(tiny_qwen, tmp_path_factory) -> E2RankIndex:
    return tiny_qwen.indexer(tmp_path_factory.mktemp("sharing") / "docs.e2rank").index(DOCS)


@pytest.fixture
def other(other_tiny_qwen_dir) -> E2Rank:
    return E2Rank(str(other_tiny_qwen_dir), batch_size=4)


@pytest.fixture
def serve(tmp_path):
    """``serve(directory)`` -> the base URL of an HTTP server of ``directory`` on 127.0.0.1 (a port the OS chose)."""
    servers = []

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    def start(directory: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def package_names(package: str) -> set:
    with LZ4FrameFile(package) as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
        return {member.name for member in archive if member.isfile()}


def assert_keeps_the_fingerprint(shared: E2RankIndex, index: E2RankIndex, model: E2Rank, other: E2Rank):
    """``shared`` is ``index`` (its vectors, its model), searched like it, and refuses another model's queries."""
    assert type(shared) is E2RankIndex and shared.path != index.path
    assert shared.fingerprint == index.fingerprint and shared.source == index.source
    pd.testing.assert_frame_equal(model.retriever(shared, num_results=5)(QUERIES),
                                  model.retriever(index, num_results=5)(QUERIES))
    with pytest.raises(IndexModelMismatch):
        other.retriever(shared)(QUERIES)
    with pytest.raises(IndexModelMismatch):
        shared.retriever()(other.query_encoder()(QUERIES))


def test_pt_artifact_load_opens_an_e2rank_index(index, tiny_qwen):
    meta = json.loads((index.path / "pt_meta.json").read_text())
    assert (meta["type"], meta["format"]) == (E2RankIndex.ARTIFACT_TYPE, E2RankIndex.ARTIFACT_FORMAT)
    loaded = pt.Artifact.load(str(index.path))
    assert type(loaded) is E2RankIndex and loaded == E2RankIndex(index.path)
    loaded.check_model(tiny_qwen)


def test_an_old_flex_index_still_opens_and_an_append_makes_it_ours(tiny_qwen, tmp_path):
    old = Path(shutil.copytree(OLD, tmp_path / "old.e2rank"))
    assert type(pt.Artifact.load(str(old))) is FlexIndex  # "dense_index.flex" is pyterrier-dr's
    E2RankIndex(old).check_model(tiny_qwen)
    assert len(tiny_qwen.retriever(old, num_results=3)(QUERIES)) == 6
    tiny_qwen.indexer(old, mode="append").index([{"docno": "new", "text": "a new document"}])
    assert type(pt.Artifact.load(str(old))) is E2RankIndex


def test_flex_index_searches_of_e2rank_index_take_untagged_query_vectors(index, tiny_qwen):
    """What pyterrier-dr's ``FlexIndex(path)`` did on a 0.3 index, ``E2RankIndex(path)`` (a FlexIndex) does: query
    vectors of unknown origin (e.g. a sentence-transformers encoder's) are the user's own, searched as given."""
    vectors = tiny_qwen.query_encoder()(QUERIES)[["qid", "query_vec"]]
    for retriever in (index.retriever(num_results=3), index.np_retriever(num_results=3)):
        assert len(retriever(vectors)) == 6


def test_a_package_holds_exactly_the_files_the_index_reads(index, tmp_path):
    index.faiss_flat_fp16_retriever()  # a structure of these vectors: the index's own, shipped
    own = {p.name for p in index.path.iterdir()}
    foreign = {"notes.txt": b"the user's", "flat_fp16.faiss": b"a 0.3 structure", ".pt_meta.json.lock": b"",
               "derived-0123456789abcdef-flat_fp16.faiss": b"a structure of other vectors"}
    for name, data in foreign.items():
        (index.path / name).write_bytes(data)
    try:
        package = index.build_package(str(tmp_path / "docs.tar.lz4"), verbose=False)
    finally:
        for name in foreign:
            (index.path / name).unlink()
    assert package_names(package) == own and {"pt_meta.json", "vecs.f4", "docnos.npids"} < own
    assert any(name.endswith("-flat_fp16.faiss") for name in own)


def test_from_url_gives_an_index_that_refuses_another_model(index, tiny_qwen, other, serve, tmp_path):
    (tmp_path / "www").mkdir()
    index.build_package(str(tmp_path / "www" / "docs.tar.lz4"), verbose=False)  # and its .json: size, sha256
    url = f"{serve(tmp_path / 'www')}/docs.tar.lz4"
    shared = pt.Artifact.from_url(url)
    assert_keeps_the_fingerprint(shared, index, tiny_qwen, other)
    assert E2RankIndex.from_url(url) == shared  # downloaded once, into PyTerrier's home


def test_to_hf_and_from_hf_round_trip_through_a_local_hub(index, tiny_qwen, other, serve, tmp_path, monkeypatch):
    """The hub's client writes to a folder (``hub/<repo>/<branch>``), which a local server serves where
    PyTerrier's ``hf:`` resolver points; the rest of ``to_hf``/``from_hf`` is PyTerrier's own."""
    import huggingface_hub
    hub = tmp_path / "hub"

    def upload_folder(*, repo_id, folder_path, repo_type, revision):
        assert repo_type == "dataset"
        shutil.copytree(folder_path, hub / repo_id / revision)
        return f"{hub / repo_id / revision}"
    for name in ("create_repo", "create_branch"):
        monkeypatch.setattr(huggingface_hub, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    index.to_hf("someone/docs-e2rank", branch="v1")
    readme = (hub / "someone" / "docs-e2rank" / "v1" / "README.md").read_text()
    assert f"pyterrier-artifact.{E2RankIndex.ARTIFACT_TYPE}.{E2RankIndex.ARTIFACT_FORMAT}" in readme

    base = serve(hub)
    monkeypatch.setattr("pyterrier._artifact._hf_url_resolver", lambda url: "{}/{}/{}/artifact.tar.lz4".format(
        base, *url.path.split("@")))
    shared = pt.Artifact.from_hf("someone/docs-e2rank@v1")
    assert_keeps_the_fingerprint(shared, index, tiny_qwen, other)
