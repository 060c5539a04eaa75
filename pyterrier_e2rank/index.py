"""A dense index on disk: document vectors (memory-mapped float32), their docnos, and the model
settings they were made with.

We write our own small artifact rather than reuse ``pyterrier_dr.FlexIndex``: the reranker must look
vectors up by ``docno`` and refuse vectors of another model, both of which need the encoder's
fingerprint stored beside the vectors, and pyterrier_dr would add a heavy dependency for ~150 lines.

Layout: ``pt_meta.json`` (type, format, count, dim, encoder fingerprint), ``vectors.f32`` (raw
row-major float32 ``[num_docs, dim]``), ``docnos.npy``.
"""
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from .checks import require_text

_META = "pt_meta.json"
_VECTORS = "vectors.f32"
_DOCNOS = "docnos.npy"


class IndexModelMismatch(ValueError):
    """The index was built with another model or other document settings than the one in use."""


def fingerprint_differences(stored: dict, model) -> list:
    """The settings (weights, pooling, lengths...) in which ``model`` differs from a stored fingerprint;
    the model's name alone does not count (a local copy of a hub model is the same model)."""
    current = model.fingerprint()
    return [k for k in stored if k != "model" and stored.get(k) != current.get(k)]


class E2RankIndex(pt.Artifact):
    """Document vectors by docno, with ``.retriever()`` (exact search) and ``.vectors(docnos)``."""

    ARTIFACT_TYPE = "dense_index"
    ARTIFACT_FORMAT = "e2rank"

    def __init__(self, path):
        super().__init__(path)
        self._vectors = None
        self._docnos = None
        self._row_of: Optional[Dict[str, int]] = None

    def __repr__(self):
        return f"E2RankIndex({str(self.path)!r})"

    def built(self) -> bool:
        return (self.path / _META).is_file()

    @property
    def meta(self) -> dict:
        if not self.built():
            raise FileNotFoundError(f"no E2Rank index at {self.path} (missing {_META}); build it with model.indexer(path)")
        return json.loads((self.path / _META).read_text())

    def __len__(self) -> int:
        return self.meta["num_docs"]

    @property
    def docnos(self) -> np.ndarray:
        if self._docnos is None:
            self._docnos = np.load(self.path / _DOCNOS, allow_pickle=False)
        return self._docnos

    @property
    def vectors_mmap(self) -> np.ndarray:
        """All vectors, memory-mapped read-only: nothing is loaded until rows are touched."""
        if self._vectors is None:
            meta = self.meta
            self._vectors = np.memmap(self.path / _VECTORS, dtype=np.float32, mode="r",
                                      shape=(meta["num_docs"], meta["dim"]))
        return self._vectors

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
            raise IndexModelMismatch(
                f"the index at {self.path} was built with model {stored['model']!r} and other settings than "
                f"{model.model_name_or_path!r} now in use (differing: {', '.join(differ)}); rebuild the index "
                f"with this model, or load the model it was built with")

    def retriever(self, *, num_results: int = 1000, verbose: bool = False) -> pt.Transformer:
        """Q frame with ``query_vec`` -> top ``num_results`` by exact dot product."""
        return E2RankRetriever(self, num_results=num_results, verbose=verbose)


class E2RankIndexer(pt.Indexer):
    """Encodes ``docno``/``text`` dicts in chunks and appends them to disk; RAM holds one chunk."""

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
        writer = IndexWriter(self.index_.path, self.model.dim, self.model.fingerprint(), overwrite=self.overwrite)
        total = len(it) if hasattr(it, "__len__") else None
        progress = pt.tqdm(desc="indexing", unit="doc", total=total) if self.verbose else None
        for chunk in _chunks(it, self.chunk_size):
            frame = pd.DataFrame(chunk)
            if "docno" not in frame.columns or self.text_field not in frame.columns:
                raise KeyError(f"indexing needs 'docno' and {self.text_field!r} fields; got {sorted(frame.columns)}")
            texts = require_text(frame, self.text_field, key="docno")
            vectors = self.model.encode_docs(texts, batch_size=self.batch_size, verbose=False, progress=progress)
            writer.add(frame["docno"].astype(str).tolist(), vectors)
        if progress is not None:
            progress.close()
        return writer.finish()


class IndexWriter:
    """Appends (docnos, vectors) to a new index directory; ``finish()`` writes the meta file that marks
    it complete. ``encoder`` is the fingerprint of the model that made the vectors
    (``model.fingerprint()``). Used by the indexer, and by anything that already has the vectors."""

    def __init__(self, path, dim: int, encoder: dict, *, overwrite: bool = False):
        self.path = Path(path)
        if (self.path / _META).exists():
            if not overwrite:
                raise FileExistsError(f"an index already exists at {self.path}; pass overwrite=True to replace it")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.encoder = encoder
        self.dim = dim
        self.docnos: List[str] = []
        self._vectors = open(self.path / _VECTORS, "wb")

    def add(self, docnos: Sequence[str], vectors: np.ndarray) -> None:
        if vectors.shape != (len(docnos), self.dim):
            raise ValueError(f"expected vectors of shape ({len(docnos)}, {self.dim}), got {vectors.shape}")
        self._vectors.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        self.docnos.extend(str(d) for d in docnos)

    def finish(self) -> E2RankIndex:
        self._vectors.close()
        if not self.docnos:
            raise ValueError("nothing to index: the corpus iterator was empty")
        if len(set(self.docnos)) != len(self.docnos):
            raise ValueError(f"duplicate docnos in the corpus ({len(self.docnos) - len(set(self.docnos))} repeated)")
        np.save(self.path / _DOCNOS, np.asarray(self.docnos))
        meta = {"type": E2RankIndex.ARTIFACT_TYPE, "format": E2RankIndex.ARTIFACT_FORMAT,
                "package_hint": "pyterrier-e2rank", "num_docs": len(self.docnos), "dim": self.dim,
                "encoder": self.encoder}
        tmp = self.path / (_META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.path / _META)
        return E2RankIndex(self.path)


class E2RankRetriever(pt.Transformer):
    """Exact dense retrieval: scans the memory-mapped vectors in blocks, keeps a running top-k."""

    def __init__(self, index: E2RankIndex, *, num_results: int = 1000, verbose: bool = False,
                 block_size: int = 65536):
        self.index = index
        self.num_results = num_results
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
        scores, rows = self.search(np.stack(queries["query_vec"].to_numpy()).astype(np.float32))
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
