"""E2Rank for Pyserini users: encoders, FAISS indexes, and reranking of Pyserini hits.

Importing this module starts no JVM and needs no Pyserini: the encoders follow Pyserini's interfaces
by duck typing (``FaissSearcher`` only calls ``encode``), and Pyserini itself (``faiss``, Lucene) is
imported inside the functions that need it. Works with Pyserini 0.2x and 1.x (see README).
"""
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from .index import E2RankIndex, IndexModelMismatch, IndexWriter, fingerprint_differences
from .text import join_title

_FAISS_META = "e2rank_meta.json"


class E2RankQueryEncoder:
    """Pyserini's query-encoder interface: ``encode(query) -> [d]``, ``encode_batch(queries) -> [n, d]``."""

    def __init__(self, model):
        self.model = model

    def __repr__(self):
        return f"E2RankQueryEncoder({self.model!r})"

    def encode(self, query: str, **kwargs) -> np.ndarray:
        return self.model.encode_queries([query])[0]

    def encode_batch(self, queries: Sequence[str], **kwargs) -> np.ndarray:
        return self.model.encode_queries(list(queries))


class E2RankDocumentEncoder:
    """Pyserini's document-encoder interface: ``encode(texts, titles=None, **kwargs) -> [n, d]``.

    ``titles`` are joined as ``title + " " + text`` (as in the PyTerrier path); Pyserini's other keyword
    arguments (``max_length``, ``fp16``, ...) are accepted and ignored: the model's own settings hold."""

    def __init__(self, model):
        self.model = model

    def __repr__(self):
        return f"E2RankDocumentEncoder({self.model!r})"

    def encode(self, texts: Sequence[str], titles: Optional[Sequence[str]] = None, **kwargs) -> np.ndarray:
        if titles is not None:
            texts = [join_title(title, text) for title, text in zip(titles, texts)]
        return self.model.encode_docs(list(texts))


# ---- collections and FAISS indexes ---------------------------------------------------------------

def read_jsonl_collection(path: Union[str, os.PathLike]) -> Iterator[dict]:
    """``{"docno", "text"}`` from a Pyserini JSONL collection (a file, or a directory of ``.jsonl[.gz]``).

    Records hold ``id`` (or ``_id``/``docid``) and either ``contents`` or ``title``/``text`` fields."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz", ".json"))) \
        if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .jsonl files in {path}")
    for file in files:
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    docno = next(str(record[k]) for k in ("id", "_id", "docid") if k in record)
                except (json.JSONDecodeError, StopIteration) as e:
                    raise ValueError(f"{file}:{number}: not a collection record with an id: {line[:80]!r}") from e
                text = record["contents"] if "contents" in record else join_title(record.get("title"), record.get("text"))
                yield {"docno": docno, "text": text}


def write_faiss_index(model, collection: Union[str, os.PathLike, Iterable[dict]], output_dir, *,
                      pyterrier_index=None, chunk_size: int = 4096, verbose: bool = False) -> str:
    """Encode a collection once into a FAISS directory (``index`` + ``docid``) that ``FaissSearcher``
    opens, and, if ``pyterrier_index`` is a path, into an ``E2RankIndex`` from the same vectors."""
    import faiss
    import pyterrier as pt
    docs = read_jsonl_collection(collection) if isinstance(collection, (str, os.PathLike)) else collection
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    faiss_index = faiss.IndexFlatIP(model.dim)
    writer = IndexWriter(pyterrier_index, model.dim, model.fingerprint()) if pyterrier_index is not None else None
    docids: List[str] = []
    progress = pt.tqdm(desc="encoding collection", unit="doc") if verbose else None
    chunk: List[dict] = []
    for doc in _then_flush(docs):
        if doc is not None:
            chunk.append(doc)
        if chunk and (doc is None or len(chunk) == chunk_size):
            vectors = model.encode_docs([d["text"] for d in chunk], progress=progress)
            faiss_index.add(vectors)
            ids = [d["docno"] for d in chunk]
            docids.extend(ids)
            if writer is not None:
                writer.add(ids, vectors)
            chunk = []
    if progress is not None:
        progress.close()
    if not docids:
        raise ValueError("nothing to index: the collection was empty")
    faiss.write_index(faiss_index, str(output_dir / "index"))
    (output_dir / "docid").write_text("".join(f"{d}\n" for d in docids))
    (output_dir / _FAISS_META).write_text(json.dumps({"encoder": model.fingerprint()}, indent=2))
    if writer is not None:
        writer.finish()
    return str(output_dir)


def _then_flush(items: Iterable) -> Iterator:
    yield from items
    yield None


class FaissVectors:
    """Document vectors of a FAISS directory written by ``write_faiss_index``, looked up by docid."""

    def __init__(self, index_dir, model=None):
        import faiss
        self.index_dir = Path(index_dir)
        self.index = faiss.read_index(str(self.index_dir / "index"))
        docids = (self.index_dir / "docid").read_text().split("\n")[:-1]
        self.row_of = {d: i for i, d in enumerate(docids)}
        meta_file = self.index_dir / _FAISS_META
        if model is not None and meta_file.exists():
            stored = json.loads(meta_file.read_text())["encoder"]
            differ = fingerprint_differences(stored, model)
            if differ:
                raise IndexModelMismatch(f"the FAISS index at {index_dir} was built with {stored['model']!r} and "
                                         f"other settings ({', '.join(differ)}) than {model.model_name_or_path!r}")

    def vectors(self, docids: Sequence[str]) -> np.ndarray:
        missing = [d for d in docids if d not in self.row_of]
        if missing:
            raise KeyError(f"{len(missing)} docid(s) are not in the FAISS index at {self.index_dir}: {missing[:5]}")
        return np.stack([self.index.reconstruct(self.row_of[d]) for d in docids]) if docids else \
            np.empty((0, self.index.d), dtype=np.float32)


def search_batch(searcher, encoder: E2RankQueryEncoder, queries: Sequence[str], qids: Sequence[str],
                 k: int = 10, threads: int = 1) -> Dict[str, list]:
    """``FaissSearcher.batch_search`` with the queries encoded in batches (Pyserini 0.2x encodes them one
    by one when given strings)."""
    return searcher.batch_search(encoder.encode_batch(queries), list(qids), k=k, threads=threads)


# ---- reranking Pyserini hits ---------------------------------------------------------------------

@dataclass
class RerankedHit:
    """A reranked hit, shaped like Pyserini's results (``docid``, ``score``), with its new ``rank`` (0-based)."""
    docid: str
    score: float
    rank: int


TextSource = Union["LuceneSearcher", str, os.PathLike, Callable[[str], str], Dict[str, str]]


def text_lookup(source: TextSource) -> Callable[[str], str]:
    """docid -> text, from a Lucene searcher or index directory (its stored raw documents), a JSONL
    collection (file or directory), a dict, or a callable."""
    if isinstance(source, dict):
        return source.__getitem__
    if isinstance(source, (str, os.PathLike)):
        if any(Path(source).glob("segments_*")):  # a Lucene index directory
            from pyserini.search.lucene import LuceneSearcher
            source = LuceneSearcher(str(source))
        else:
            return {d["docno"]: d["text"] for d in read_jsonl_collection(source)}.__getitem__
    if hasattr(source, "doc"):
        return lambda docid: _lucene_text(source, docid)
    if callable(source):
        return source
    raise TypeError(f"cannot read document text from {source!r}")


def _lucene_text(searcher, docid: str) -> str:
    doc = searcher.doc(docid)
    if doc is None:
        raise KeyError(f"docid {docid!r} is not in the Lucene index")
    raw = doc.raw()
    if raw is None:
        raise ValueError("the Lucene index stores no raw documents: index with --storeRaw, or pass a collection")
    try:
        record = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return record["contents"] if "contents" in record else join_title(record.get("title"), record.get("text"))


class HitReranker:
    """Reranks Pyserini hits with the E2Rank PRF reranker.

    Args:
        model: an ``E2Rank``.
        text: where candidate text comes from (see ``text_lookup``).
        vectors: stored document vectors: an ``E2RankIndex`` (or its path), or a FAISS directory written
            by ``write_faiss_index``; then a query costs one forward pass. ``None`` encodes candidates.
        **reranker_options: passed to ``model.reranker`` (``num_input_docs``, ``window``, ...).
    """

    def __init__(self, model, text: TextSource, *, vectors=None, **reranker_options):
        self.text = text_lookup(text)
        self.faiss_vectors = None
        index = None
        if vectors is not None:
            if isinstance(vectors, E2RankIndex) or (Path(vectors) / "pt_meta.json").exists():
                index = vectors
            else:
                self.faiss_vectors = FaissVectors(vectors, model)
        self.reranker = model.reranker(index=index, **reranker_options)

    def rerank(self, query: str, hits: Sequence, qid: str = "0") -> List[RerankedHit]:
        return self.rerank_batch([(qid, query, hits)])[qid]

    def rerank_batch(self, queries: Sequence[Tuple[str, str, Sequence]]) -> Dict[str, List[RerankedHit]]:
        """``[(qid, query, hits), ...]`` -> ``{qid: reranked hits}``; prompts are encoded in batches."""
        rows = [{"qid": str(qid), "query": query, "docno": str(hit.docid), "score": float(hit.score), "rank": rank}
                for qid, query, hits in queries for rank, hit in enumerate(hits)]
        frame = pd.DataFrame(rows, columns=["qid", "query", "docno", "score", "rank"])
        frame["text"] = [self.text(d) for d in frame["docno"]]
        if self.faiss_vectors is not None:
            frame["doc_vec"] = list(self.faiss_vectors.vectors(frame["docno"].tolist()))
        out = self.reranker(frame)
        reranked = {str(qid): [] for qid, _, _ in queries}
        for row in out.itertuples():
            reranked[row.qid].append(RerankedHit(row.docno, float(row.score), int(row.rank)))
        return reranked
