"""Writing indexes: the one corpus-encoding loop, and the atomic index writer it feeds.

``encode_corpus`` turns records (``docno`` with text, or with a ``doc_vec`` computed elsewhere) into
checked chunks of ``(docnos, vectors)``; every writer consumes it: ``IndexWriter`` (our FlexIndex),
and the Pyserini FAISS writer (``pyserini.write_faiss_index``).
"""
import contextlib
import json
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyterrier as pt
from npids import Lookup

from .checks import check_finite, identifier, positive_int, require_text, stack_vectors
from .index import DOCNOS, META, VECTORS, E2RankIndex, index_path, own_entries
from .io import atomic_directory


def encode_corpus(model, records: Iterable[dict], *, text_field: str = "text", chunk_size: int = 4096,
                  batch_size: Optional[int] = None, progress=None) -> Iterator[Tuple[List[str], np.ndarray]]:
    """``(docnos, vectors)`` per chunk of ``records``: a record's ``doc_vec`` is used as is, else its
    ``text_field`` is encoded. Identifiers, texts and vectors are checked, naming the record's position."""
    chunk_size = positive_int(chunk_size, "chunk_size")
    position = 0
    for chunk in _chunks(records, chunk_size):
        docnos, texts, given = [], [], []
        for record in chunk:
            where = f"document {position} of the corpus"
            if not isinstance(record, dict):
                raise TypeError(f"{where} is a {type(record).__name__}, not a dict with docno and {text_field!r}")
            docnos.append(identifier(record.get("docno"), "docno", where))
            if "doc_vec" in record:
                given.append(record["doc_vec"])
            elif text_field in record:
                texts.append(record[text_field])
            else:
                raise KeyError(f"{where} (docno {docnos[-1]!r}) has neither {text_field!r} nor 'doc_vec': "
                               f"{sorted(record)}")
            position += 1
        if given and texts:
            raise ValueError(f"documents {position - len(chunk)}..{position - 1} mix records with 'doc_vec' and "
                             f"records with {text_field!r}; give one or the other")
        if given:
            vectors = stack_vectors(pd.Series(given), docnos, model.dim, "doc_vec of docno")
            if progress is not None:
                progress.update(len(docnos))
        else:
            texts = require_text(pd.DataFrame({"docno": docnos, "text": texts}), "text", key="docno")
            vectors = model.encode_docs(texts, batch_size=batch_size, verbose=False, progress=progress)
        yield docnos, vectors


def _chunks(records: Iterable, size: int):
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class IndexWriter:
    """Writes (docnos, vectors) into a new index, used as a context manager::

        with IndexWriter(path, dim, model.fingerprint(), overwrite=False) as writer:
            writer.add(docnos, vectors)   # as often as needed
            index = writer.finish()

    The index is built in a private directory beside ``path`` (under a lock: a second writer of the
    same path gets ``ArtifactLocked``) and swapped in by ``finish()``; leaving the block without it,
    by an exception or a kill, leaves any old index as it was. ``encoder`` is the fingerprint of the
    model that made the vectors."""

    def __init__(self, path, dim: int, encoder: dict, *, overwrite: bool = False):
        self.path = Path(path)
        self.encoder = encoder
        self.dim = positive_int(dim, "dim")
        self.docnos: List[str] = []
        self._seen: Dict[str, int] = {}
        self._build = contextlib.ExitStack()
        self._staging = self._build.enter_context(
            atomic_directory(self.path, owned=own_entries, overwrite=overwrite, what="E2Rank index"))
        self._vectors = self._build.enter_context(open(self._staging / VECTORS, "wb"))

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
        if len(self.docnos) == 1:  # npids (FlexIndex's docno store) fails on a single docno
            raise ValueError(f"an index needs at least two documents; the corpus held one ({self.docnos[0]!r})")
        self._vectors.close()
        with Lookup.builder(self._staging / DOCNOS) as lookup:
            for docno in self.docnos:
                lookup.add(docno)
        meta = {"type": "dense_index", "format": "flex", "vec_size": self.dim, "doc_count": len(self.docnos),
                "package_hint": "pyterrier-e2rank", "e2rank": {"encoder": self.encoder}}
        (self._staging / META).write_text(json.dumps(meta, indent=2))
        self._build.close()  # swaps the complete index into place
        return E2RankIndex(self.path)


class E2RankIndexer(pt.Indexer):
    """Indexes records with ``docno`` and text (encoded here) or ``doc_vec`` (from ``doc_encoder()``),
    in chunks (RAM holds one); the index appears, or replaces the old one with ``overwrite``, only when
    the whole corpus is in."""

    def __init__(self, model, index, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text", overwrite: bool = False, chunk_size: int = 4096):
        self.model = model
        self.index_ = E2RankIndex(index_path(index))  # not opened: it may not exist, or be replaced
        self.batch_size = batch_size
        self.verbose = model.verbose if verbose is None else verbose
        self.text_field = text_field
        self.overwrite = overwrite
        self.chunk_size = positive_int(chunk_size, "chunk_size")

    def __repr__(self):
        return f"{self.model!r}.indexer({self.index_!r}, text_field={self.text_field!r}, overwrite={self.overwrite})"

    def index_inputs(self):
        return [["docno", self.text_field], ["docno", "doc_vec"]]

    def index(self, it: Iterable[dict]) -> E2RankIndex:
        if isinstance(it, pd.DataFrame):
            it = it.to_dict(orient="records")
        total = len(it) if hasattr(it, "__len__") else None
        with IndexWriter(self.index_.path, self.model.dim, self.model.fingerprint(), overwrite=self.overwrite) as writer:
            progress = pt.tqdm(desc="indexing", unit="doc", total=total) if self.verbose else None
            for docnos, vectors in encode_corpus(self.model, it, text_field=self.text_field, chunk_size=self.chunk_size,
                                                 batch_size=self.batch_size, progress=progress):
                writer.add(docnos, vectors)
            if progress is not None:
                progress.close()
            return writer.finish()
