"""The dense index: pyterrier-dr's FlexIndex layout, carrying the fingerprint of the model that made
its vectors.

Layout (FlexIndex's): ``pt_meta.json`` (``type``, ``format: flex``, ``vec_size``, ``doc_count``, and our
``e2rank`` key with the encoder fingerprint), ``vecs.f4`` (row-major float32), ``docnos.npids``.
pyterrier-dr opens it as a plain ``FlexIndex``; ``E2RankIndex`` adds what E2Rank needs on top:
vectors looked up by ``docno`` only (never by an incoming ``docid``: BM25 engines emit their own),
another model's vectors refused, files verified against the metadata when opened, and our exact
retriever as the default (faster than ``np_retriever`` on the same vectors: ``benchmarks/``).
Everything else of FlexIndex (FAISS HNSW/IVF, GAR/LADR, corpus graphs) is inherited.
"""
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyterrier as pt
from npids import Lookup
from pyterrier_dr import FlexIndex

from .equality import EqualBySettings
from .io import CorruptArtifact

META = "pt_meta.json"
VECTORS = "vecs.f4"
DOCNOS = "docnos.npids"
#: pyterrier_e2rank 0.1's own layout, recognised to say how to move on.
LEGACY_FILES = ("vectors.f32", "docnos.npy")
#: Structures FlexIndex derives from the vectors and keeps inside the index (stale once they change), and
#: the lock and private file of an ANN build of ours (``ann.py``) that a kill left behind.
DERIVED_PATTERNS = ("*.faiss", "*.graph", "corpusgraph_k*", "*.scann", "*.voyager", "*.flatnav", "kannolo_hnsw-*",
                    ".*.faiss.lock", ".*.faiss.*.tmp")


class IndexModelMismatch(ValueError):
    """The index was built with another model or other document settings than the one in use."""


def own_entries(directory: Path) -> set:
    """The entries of an index directory that belong to the index (an overwrite replaces them)."""
    derived = {p.name for pattern in DERIVED_PATTERNS for p in directory.glob(pattern)}
    return {META, VECTORS, DOCNOS, *LEGACY_FILES} | derived


def fingerprint_differences(stored: dict, current: dict) -> list:
    """The settings (weights, pooling, lengths...) in which two model fingerprints differ; the model's name
    alone does not count (a local copy of a hub model is the same model)."""
    return [k for k in sorted(set(stored) | set(current)) if k != "model" and stored.get(k) != current.get(k)]


def check_fingerprint(stored: Optional[dict], current: dict, what: str) -> None:
    """Refuse the model of fingerprint ``current`` (``model.fingerprint()``) on vectors made by the model of
    ``stored`` (``None``: made by an unknown one)."""
    if stored is None:
        raise IndexModelMismatch(f"{what} carries no E2Rank model fingerprint, so the model that made its vectors "
                                 f"is unknown; build it with model.indexer(path) (or write_faiss_index)")
    differ = fingerprint_differences(stored, current)
    if "fingerprint_version" in differ:
        raise IndexModelMismatch(f"{what} was written by an older pyterrier_e2rank whose model fingerprint cannot "
                                 f"tell a fine-tuned checkpoint from its base model; rebuild it with "
                                 f"{current.get('model')!r}")
    if differ:
        raise IndexModelMismatch(f"{what} was built with model {stored.get('model')!r} and other settings than "
                                 f"{current.get('model')!r} now in use (differing: {', '.join(differ)}); rebuild "
                                 f"it with this model, or load the model it was built with")


class E2RankIndex(FlexIndex):
    """A FlexIndex of E2Rank document vectors: ``.retriever()`` (exact search), ``.vectors(docnos)``,
    ``.vec_loader()``, ``.check_model(model)``, and FlexIndex's ANN and adaptive retrievers.

    Opened once, at first use: metadata, docnos and vectors are read from one version of the directory
    (a rebuild swapping in meanwhile is never mixed in) and checked against each other; files that
    disagree raise ``CorruptArtifact`` naming the path and what disagrees."""

    def __init__(self, path, *, verbose: bool = False):
        super().__init__(path, sim_fn="dot", verbose=verbose)

    def __repr__(self):
        return f"E2RankIndex({str(self.path)!r})"

    def __eq__(self, other):
        return isinstance(other, E2RankIndex) and Path(self.path).resolve() == Path(other.path).resolve()

    def __hash__(self):
        return hash((E2RankIndex, Path(self.path).resolve()))

    def built(self) -> bool:
        return (Path(self.path) / META).is_file()

    def payload(self, return_dvecs: bool = True, return_docnos: bool = True):
        """FlexIndex's ``[docnos, vectors, meta]`` (as asked), opened and verified once."""
        if self._meta is None:
            self._docnos, self._dvecs, self._meta = _open_verified(Path(self.path))
        return [x for x, wanted in ((self._docnos, return_docnos), (self._dvecs, return_dvecs), (self._meta, True))
                if wanted]

    @property
    def meta(self) -> dict:
        return self.payload(return_dvecs=False, return_docnos=False)[0]

    @property
    def dim(self) -> int:
        return self.meta["vec_size"]

    @property
    def fingerprint(self):
        """The fingerprint of the model that made the vectors (``None`` for a plain FlexIndex)."""
        return self.meta.get("e2rank", {}).get("encoder")

    @property
    def corpus_stamp(self):
        """What the vectors were made from (``data.corpus_stamp``), if the indexer was told; else ``None``."""
        return self.meta.get("e2rank", {}).get("corpus")

    def vectors(self, docnos: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``docnos``; a KeyError names the absent ones."""
        docnos = [str(d) for d in docnos]
        if not docnos:
            return np.empty((0, self.dim), dtype=np.float32)
        lookup, vectors = self.payload(return_dvecs=True, return_docnos=True)[:2]
        rows = np.asarray(lookup.inv[docnos], dtype=np.int64)
        if (rows < 0).any():
            missing = [d for d, r in zip(docnos, rows) if r < 0]
            raise KeyError(f"{len(missing)} docno(s) are not in the index at {self.path}: {missing[:5]}")
        return np.asarray(vectors[rows])

    def check_model(self, model) -> None:
        """Refuse a model whose document vectors would differ from the stored ones."""
        check_fingerprint(self.fingerprint, model.fingerprint(), f"the index at {self.path}")

    def retriever(self, *, num_results: int = 1000, verbose: bool = False) -> pt.Transformer:
        """Q frame with ``query_vec`` -> top ``num_results`` by exact dot product (``E2RankRetriever``)."""
        from .retriever import E2RankRetriever
        return E2RankRetriever(self, num_results=num_results, verbose=verbose)

    def faiss_ivfpq_retriever(self, **options) -> pt.Transformer:
        """IVF-PQ search (``n_list``, ``m``, ``nbits``, ``n_probe``, ``refine``, ...): ``ann.ivfpq_retriever``."""
        from .ann import ivfpq_retriever
        return ivfpq_retriever(self, **options)

    def faiss_hnsw_fp16_retriever(self, **options) -> pt.Transformer:
        """HNSW over float16 vectors (``neighbours``, ``ef_construction``, ``ef_search``):
        ``ann.hnsw_fp16_retriever``."""
        from .ann import hnsw_fp16_retriever
        return hnsw_fp16_retriever(self, **options)

    def faiss_flat_fp16_retriever(self, **options) -> pt.Transformer:
        """Exhaustive search over float16 vectors (half the RAM): ``ann.flat_fp16_retriever``."""
        from .ann import flat_fp16_retriever
        return flat_fp16_retriever(self, **options)

    def vec_loader(self) -> pt.Transformer:
        """Adds ``doc_vec`` by ``docno`` (FlexIndex's loader prefers an incoming ``docid``, which after a
        BM25 stage is the BM25 engine's own id, not a row of this index)."""
        return DocnoVectorLoader(self)

    def indexer(self, *args, **kwargs):
        raise TypeError(f"an E2Rank index records the model that made its vectors: build {self.path} with "
                        f"model.indexer(path) (it also takes doc_vec frames from model.doc_encoder())")


def index_path(index: Union[str, os.PathLike, FlexIndex]) -> Path:
    """The directory of an index given as an index, a FlexIndex or a path."""
    return Path(index.index_path if isinstance(index, FlexIndex) else index)


def as_index(index: Union[str, os.PathLike, FlexIndex]) -> E2RankIndex:
    """An ``E2RankIndex`` to read, from an index, a FlexIndex or a path (the one coercion everything uses)."""
    if isinstance(index, E2RankIndex):
        return index
    path = index_path(index)
    if any((path / name).exists() for name in LEGACY_FILES) and not (path / VECTORS).exists():
        raise CorruptArtifact(f"the index at {path} is in pyterrier_e2rank 0.1's own layout, which 0.2 replaced by "
                              f"pyterrier-dr's FlexIndex layout (and a fingerprint that sees fine-tuning): rebuild it "
                              f"with model.indexer({str(path)!r}, overwrite=True)")
    return E2RankIndex(path)


class DocnoVectorLoader(EqualBySettings, pt.Transformer):
    """Adds each row's stored ``doc_vec``, looked up by ``docno``, tagged with the index's model
    (``provenance``). A ``doc_vec`` the frame already carries is passed on if it is this index's model's,
    else refused (never replaced silently)."""

    def __init__(self, index: E2RankIndex):
        self.index = index

    def __repr__(self):
        return f"{self.index!r}.vec_loader()"

    def _settings(self) -> tuple:
        return (self.index,)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        from . import provenance
        pt.validate.columns(inp, includes=["docno"], context=self)
        if self.index.fingerprint is not None and provenance.carried(
                inp, "doc_vec", self.index.fingerprint, lambda i, recipe: recipe.split(":")[0] == "doc", self,
                key="docno", fix="drop the column to load the index's vectors"):
            return inp
        if "doc_vec" in inp.columns:
            raise ValueError(f"{self!r}: the frame already carries a 'doc_vec' column, which is never replaced "
                             f"silently: drop it to load the index's vectors")
        loaded = inp.assign(doc_vec=list(self.index.vectors(inp["docno"].tolist())))
        return provenance.tagged(loaded, "doc_vec", self.index.fingerprint, provenance.STORED)


def _open_verified(path: Path):
    """``(docnos, vectors, meta)`` of one version of the index directory, checked against each other."""
    if not (path / META).is_file():
        raise FileNotFoundError(f"no E2Rank index at {path} (missing {META}); build it with model.indexer(path)")
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:  # names resolved in the directory opened, even if a rebuild swaps another in meanwhile
        base = Path(f"/proc/self/fd/{directory}") if os.path.isdir("/proc/self/fd") else path
        return _read_verified(path, base)
    finally:
        os.close(directory)


def _read_verified(path: Path, base: Path):
    def corrupt(what: str) -> CorruptArtifact:
        return CorruptArtifact(f"the index at {path} is damaged: {what}; rebuild it (model.indexer(path, "
                               f"overwrite=True))")
    try:
        meta = json.loads((base / META).read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise corrupt(f"{META} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "flex" or any(
            not isinstance(meta.get(k), int) or isinstance(meta.get(k), bool) or meta[k] < 1
            for k in ("doc_count", "vec_size")):
        raise corrupt(f"{META} is not a FlexIndex's (format 'flex' with positive 'doc_count' and 'vec_size')")
    count, dim = meta["doc_count"], meta["vec_size"]
    try:
        docnos = Lookup(base / DOCNOS)
    except Exception as e:  # npids raises several types for a damaged file
        raise corrupt(f"{DOCNOS} cannot be read ({type(e).__name__}: {e})") from None
    if len(docnos) != count:
        raise corrupt(f"{DOCNOS} holds {len(docnos)} docnos, the metadata says {count}")
    with open(base / VECTORS, "rb") as vector_file:
        size = os.fstat(vector_file.fileno()).st_size
        if size != count * dim * 4:
            raise corrupt(f"{VECTORS} has {size} bytes, not doc_count x vec_size x 4 = {count} x {dim} x 4 = "
                          f"{count * dim * 4}")
        vectors = np.memmap(vector_file, dtype=np.float32, mode="r", shape=(count, dim))
    return docnos, vectors, meta

