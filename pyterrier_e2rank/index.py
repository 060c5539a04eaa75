"""A dense index on disk: document vectors (memory-mapped float32), their docnos, and the model
settings they were made with.

We write our own small artifact rather than reuse ``pyterrier_dr.FlexIndex``: the reranker must look
vectors up by ``docno`` and refuse vectors of another model, both of which need the encoder's
fingerprint stored beside the vectors, and pyterrier_dr would add a heavy dependency for ~150 lines.

Layout: ``pt_meta.json`` (type, format, count, dim, encoder fingerprint), ``vectors.f32`` (raw
row-major float32 ``[num_docs, dim]``), ``docnos.npy``.
"""
import contextlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from .checks import check_finite, identifier, positive_int, require_text, stack_vectors
from .io import CorruptArtifact, atomic_directory

_META = "pt_meta.json"
_VECTORS = "vectors.f32"
_DOCNOS = "docnos.npy"
_OWN_FILES = {_META, _VECTORS, _DOCNOS}


class IndexModelMismatch(ValueError):
    """The index was built with another model or other document settings than the one in use."""


def fingerprint_differences(stored: dict, model) -> list:
    """The settings (weights, pooling, lengths...) in which ``model`` differs from a stored fingerprint;
    the model's name alone does not count (a local copy of a hub model is the same model)."""
    current = model.fingerprint()
    return [k for k in sorted(set(stored) | set(current)) if k != "model" and stored.get(k) != current.get(k)]


def mismatch_message(what: str, stored: dict, model, differ: list) -> str:
    """Why ``model`` may not use vectors made by the model of ``stored``, and what to do."""
    if "fingerprint_version" in differ:
        return (f"{what} was written by an older pyterrier_e2rank whose model fingerprint cannot tell a "
                f"fine-tuned checkpoint from its base model; rebuild it with {model.model_name_or_path!r}")
    return (f"{what} was built with model {stored.get('model')!r} and other settings than "
            f"{model.model_name_or_path!r} now in use (differing: {', '.join(differ)}); rebuild it with this "
            f"model, or load the model it was built with")


class E2RankIndex(pt.Artifact):
    """Document vectors by docno, with ``.retriever()`` (exact search) and ``.vectors(docnos)``.

    Opened once, at first use: metadata, docnos and vectors are read from one version of the directory
    (a rebuild swapping in meanwhile is never mixed in) and checked against each other; files that
    disagree raise ``CorruptArtifact`` naming the path and what disagrees."""

    ARTIFACT_TYPE = "dense_index"
    ARTIFACT_FORMAT = "e2rank"

    def __init__(self, path):
        super().__init__(path)
        self._opened: Optional[tuple] = None
        self._row_of: Optional[Dict[str, int]] = None

    def __repr__(self):
        return f"E2RankIndex({str(self.path)!r})"

    def built(self) -> bool:
        return (self.path / _META).is_file()

    def _open(self) -> tuple:
        """``(meta, docnos, vectors)`` of one version of the index, verified."""
        if self._opened is None:
            if not self.built():
                raise FileNotFoundError(f"no E2Rank index at {self.path} (missing {_META}); build it with "
                                        f"model.indexer(path)")
            directory = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._opened = _read_verified(self.path, lambda name, flags: os.open(name, flags, dir_fd=directory))
            finally:
                os.close(directory)
        return self._opened

    @property
    def meta(self) -> dict:
        return self._open()[0]

    def __len__(self) -> int:
        return self.meta["num_docs"]

    @property
    def docnos(self) -> np.ndarray:
        return self._open()[1]

    @property
    def vectors_mmap(self) -> np.ndarray:
        """All vectors, memory-mapped read-only: nothing is loaded until rows are touched."""
        return self._open()[2]

    def vectors(self, docnos: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``docnos`` (never looked up by docid); a KeyError names absent ones."""
        if self._row_of is None:
            self._row_of = {d: i for i, d in enumerate(self.docnos.tolist())}
        rows = [self._row_of.get(str(d), -1) for d in docnos]
        missing = [d for d, r in zip(docnos, rows) if r < 0]
        if missing:
            raise KeyError(f"{len(missing)} docno(s) are not in the index at {self.path}: {missing[:5]}")
        return np.asarray(self.vectors_mmap[np.asarray(rows, dtype=np.int64)]) if rows else \
            np.empty((0, self.meta["dim"]), dtype=np.float32)

    def check_model(self, model) -> None:
        """Refuse a model whose document vectors would differ from the stored ones."""
        stored = self.meta["encoder"]
        differ = fingerprint_differences(stored, model)
        if differ:
            raise IndexModelMismatch(mismatch_message(f"the index at {self.path}", stored, model, differ))

    def retriever(self, *, num_results: int = 1000, verbose: bool = False) -> pt.Transformer:
        """Q frame with ``query_vec`` -> top ``num_results`` by exact dot product."""
        return E2RankRetriever(self, num_results=num_results, verbose=verbose)


def _read_verified(path: Path, opener) -> tuple:
    def corrupt(what: str) -> CorruptArtifact:
        return CorruptArtifact(f"the E2Rank index at {path} is damaged: {what}; rebuild it "
                               f"(model.indexer(path, overwrite=True))")
    try:
        with open(_META, "rb", opener=opener) as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise corrupt(f"{_META} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("encoder"), dict) or any(
            not isinstance(meta.get(k), int) or isinstance(meta.get(k), bool) or meta[k] < 1 for k in ("num_docs", "dim")):
        raise corrupt(f"{_META} lacks a positive 'num_docs' and 'dim' or an 'encoder' fingerprint")
    num_docs, dim = meta["num_docs"], meta["dim"]
    try:
        with open(_DOCNOS, "rb", opener=opener) as f:
            docnos = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise corrupt(f"{_DOCNOS} cannot be read ({e})") from None
    if docnos.shape != (num_docs,):
        raise corrupt(f"{_DOCNOS} holds {docnos.shape} docnos, the metadata says {num_docs}")
    vector_file = open(_VECTORS, "rb", opener=opener)
    with vector_file:
        size = os.fstat(vector_file.fileno()).st_size
        if size != num_docs * dim * 4:
            raise corrupt(f"{_VECTORS} has {size} bytes, not num_docs x dim x 4 = {num_docs} x {dim} x 4 = "
                          f"{num_docs * dim * 4}")
        vectors = np.memmap(vector_file, dtype=np.float32, mode="r", shape=(num_docs, dim))
    return meta, docnos, vectors


class E2RankIndexer(pt.Indexer):
    """Encodes ``docno``/``text`` dicts in chunks and appends them to disk; RAM holds one chunk. The
    index appears (or replaces the old one, with ``overwrite``) only when the whole corpus is in."""

    def __init__(self, model, index: E2RankIndex, *, batch_size: Optional[int] = None,
                 verbose: Optional[bool] = None, text_field: str = "text", overwrite: bool = False,
                 chunk_size: int = 4096):
        self.model = model
        self.index_ = index
        self.batch_size = batch_size
        self.verbose = model.verbose if verbose is None else verbose
        self.text_field = text_field
        self.overwrite = overwrite
        self.chunk_size = chunk_size

    def __repr__(self):
        return f"{self.model!r}.indexer({self.index_!r}, text_field={self.text_field!r}, overwrite={self.overwrite})"

    def index(self, it: Iterable[dict]) -> E2RankIndex:
        total = len(it) if hasattr(it, "__len__") else None
        with IndexWriter(self.index_.path, self.model.dim, self.model.fingerprint(), overwrite=self.overwrite) as writer:
            progress = pt.tqdm(desc="indexing", unit="doc", total=total) if self.verbose else None
            position = 0
            for chunk in _chunks(it, self.chunk_size):
                docnos, texts = [], []
                for doc in chunk:
                    if not isinstance(doc, dict) or self.text_field not in doc:
                        raise KeyError(f"document {position} of the corpus has no {self.text_field!r} field: "
                                       f"{str(doc)[:100]}")
                    docnos.append(identifier(doc.get("docno"), "docno", f"document {position} of the corpus"))
                    texts.append(doc[self.text_field])
                    position += 1
                texts = require_text(pd.DataFrame({"docno": docnos, "text": texts}), "text", key="docno")
                writer.add(docnos, self.model.encode_docs(texts, batch_size=self.batch_size, verbose=False,
                                                          progress=progress))
            if progress is not None:
                progress.close()
            return writer.finish()


class IndexWriter:
    """Writes (docnos, vectors) into a new index, used as a context manager::

        with IndexWriter(path, dim, model.fingerprint(), overwrite=False) as writer:
            writer.add(docnos, vectors)   # as often as needed
            index = writer.finish()

    The index is built in a private directory beside ``path`` (under a lock: a second writer of the
    same path gets ``ArtifactLocked``) and swapped in by ``finish()``; leaving the block without it,
    by an exception or a kill, leaves any old index as it was. ``encoder`` is the fingerprint of the
    model that made the vectors. Used by the indexer, and by anything that already has the vectors."""

    def __init__(self, path, dim: int, encoder: dict, *, overwrite: bool = False):
        self.path = Path(path)
        self.encoder = encoder
        self.dim = positive_int(dim, "dim")
        self.docnos: List[str] = []
        self._seen: Dict[str, int] = {}
        self._build = contextlib.ExitStack()
        staging = self._build.enter_context(
            atomic_directory(self.path, owned=lambda _: _OWN_FILES, overwrite=overwrite, what="E2Rank index"))
        self._staging = staging
        self._vectors = self._build.enter_context(open(staging / _VECTORS, "wb"))

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self._build.__exit__(*exc_info)  # without finish(): the new files are discarded, the old index kept

    def add(self, docnos: Sequence[str], vectors: np.ndarray) -> None:
        if vectors.shape != (len(docnos), self.dim):
            raise ValueError(f"expected vectors of shape ({len(docnos)}, {self.dim}), got {vectors.shape}")
        docnos = [identifier(d, "docno", f"document {len(self.docnos) + i}") for i, d in enumerate(docnos)]
        check_finite(vectors, docnos, "the vector of docno")
        for i, docno in enumerate(docnos):
            first = self._seen.setdefault(docno, len(self.docnos) + i)
            if first != len(self.docnos) + i:
                raise ValueError(f"duplicate docno {docno!r}: documents {first} and {len(self.docnos) + i} of the "
                                 f"corpus; nothing was written")
        self._vectors.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        self.docnos.extend(docnos)

    def finish(self) -> E2RankIndex:
        if not self.docnos:
            raise ValueError("nothing to index: the corpus iterator was empty")
        self._vectors.close()
        np.save(self._staging / _DOCNOS, np.asarray(self.docnos))
        meta = {"type": E2RankIndex.ARTIFACT_TYPE, "format": E2RankIndex.ARTIFACT_FORMAT,
                "package_hint": "pyterrier-e2rank", "num_docs": len(self.docnos), "dim": self.dim,
                "encoder": self.encoder}
        (self._staging / _META).write_text(json.dumps(meta, indent=2))
        self._build.close()  # swaps the complete index into place
        return E2RankIndex(self.path)


class E2RankRetriever(pt.Transformer):
    """Exact dense retrieval: scans the memory-mapped vectors in blocks, keeps a running top-k."""

    def __init__(self, index: E2RankIndex, *, num_results: int = 1000, verbose: bool = False,
                 block_size: int = 65536):
        self.index = index
        self.num_results = positive_int(num_results, "num_results")
        self.verbose = verbose
        self.block_size = block_size

    def __repr__(self):
        return f"{self.index!r}.retriever(num_results={self.num_results})"

    def fuse_rank_cutoff(self, k: int) -> Optional[pt.Transformer]:
        """``retriever % k`` asks for fewer results instead of cutting them afterwards."""
        return E2RankRetriever(self.index, num_results=min(k, self.num_results), verbose=self.verbose,
                               block_size=self.block_size)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query_vec"], context=self)
        queries = inp.reset_index(drop=True)
        if len(queries) == 0:
            return queries.drop(columns=["query_vec"]).assign(
                docno=pd.Series(dtype=str), score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        query_vectors = stack_vectors(queries["query_vec"], queries["qid"].tolist(), self.index.meta["dim"], "query_vec of qid")
        scores, rows = self.search(query_vectors)
        docnos = self.index.docnos
        k = rows.shape[1]
        out = queries.drop(columns=["query_vec"]).loc[np.repeat(np.arange(len(queries)), k)].reset_index(drop=True)
        out["docno"] = docnos[rows.ravel()]
        out["score"] = scores.ravel().astype(np.float64)
        out["rank"] = np.tile(np.arange(k), len(queries))
        return out

    def search(self, query_vectors: np.ndarray):
        """Top-k (scores, row ids) for each query, best first, over all vectors."""
        vectors = self.index.vectors_mmap
        k = min(self.num_results, len(vectors))
        best_scores = np.full((len(query_vectors), 0), -np.inf, dtype=np.float32)
        best_rows = np.zeros((len(query_vectors), 0), dtype=np.int64)
        starts = range(0, len(vectors), self.block_size)
        if self.verbose:
            starts = pt.tqdm(starts, desc="dense search", unit="block")
        for start in starts:
            block = np.asarray(vectors[start:start + self.block_size])
            scores = query_vectors @ block.T
            if scores.shape[1] > k:
                part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                scores = np.take_along_axis(scores, part, axis=1)
                rows = part + start
            else:
                rows = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_rows = np.concatenate([best_rows, rows], axis=1)
            if best_scores.shape[1] > k:
                part = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                best_scores = np.take_along_axis(best_scores, part, axis=1)
                best_rows = np.take_along_axis(best_rows, part, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_rows, order, axis=1)


def _chunks(it: Iterable[dict], size: int):
    chunk = []
    for doc in it:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
