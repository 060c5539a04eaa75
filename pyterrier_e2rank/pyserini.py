"""E2Rank for Pyserini users: encoders, FAISS indexes, and reranking of Pyserini hits. Importing it starts
no JVM and needs no Pyserini: the encoders follow Pyserini's interfaces by duck typing."""
import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyterrier_alpha as pta

from .checks import identifier
from pyterrier_dr import FlexIndex

from .index.artifact import as_index
from .index.indexer import IndexWriter, UniqueIds, encode_corpus
from .io import CorruptArtifact, atomic_directory, numbered_lines, read_json_object, refuse_output_as_input
from .model.provenance import check_fingerprint
from .records import is_jsonl, jsonl_record, read_records
from .model.text import join_title

_FAISS_META = "e2rank_meta.json"
_FAISS_FILES = frozenset({"index", "docid", _FAISS_META})


class _Encoder:
    """An encoder of a loaded ``E2Rank``, or of one loaded from a name or directory with ``model_options``
    (Pyserini's constructor style); ``TypeError`` for options given with a loaded model."""

    def __init__(self, model, **model_options):
        from .model.e2rank import E2Rank
        if isinstance(model, E2Rank) and model_options:
            raise TypeError(f"model options {sorted(model_options)} apply to a model name or directory, not to a "
                            f"loaded {model!r}")
        self.model = model if isinstance(model, E2Rank) else E2Rank(model, **model_options)

    def __repr__(self):
        return f"{type(self).__name__}({self.model!r})"


class E2RankPyseriniQueryEncoder(_Encoder):
    """Pyserini's query-encoder interface: ``encode(query) -> [d]``, ``encode_batch(queries) -> [n, d]``."""

    def encode(self, query: str, **kwargs) -> np.ndarray:
        return self.model.encode_queries([query])[0]

    def encode_batch(self, queries: Sequence[str], **kwargs) -> np.ndarray:
        return self.model.encode_queries(list(queries))


class E2RankPyseriniDocumentEncoder(_Encoder):
    """Pyserini's document-encoder interface: ``encode(texts, titles=None, **kwargs) -> [n, d]``, titles joined;
    Pyserini's other keyword arguments (``max_length``, ``fp16``, ...) are ignored: the model's settings hold."""

    def encode(self, texts: Sequence[str], titles: Optional[Sequence[str]] = None, **kwargs) -> np.ndarray:
        if titles is not None:
            texts = [join_title(title, text) for title, text in zip(titles, texts)]
        return self.model.encode_docs(list(texts))


# ---- collections and FAISS indexes ---------------------------------------------------------------

def read_jsonl_collection(path: Union[str, os.PathLike]) -> Iterator[dict]:
    """``{"docno", "text"}`` from a Pyserini collection, a file or a directory of ``.jsonl[.gz]`` files
    (``records``: a bad record raises naming ``file:line``)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if is_jsonl(p)) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .jsonl files in {path}")
    for file in files:
        for _, record in read_records(file, "document"):
            yield {"docno": record["id"], "text": record["text"]}


def write_faiss_index(model, collection: Union[str, os.PathLike, Iterable[dict]], output_dir, *,
                      pyterrier_index=None, overwrite: bool = False, chunk_size: int = 4096,
                      verbose: bool = False) -> str:
    """Encodes a collection once into a FAISS directory (``index``, ``docid``, the encoder's fingerprint) that
    ``FaissSearcher`` opens and, given ``pyterrier_index``, an ``E2RankIndex`` of the same vectors (and text); both
    built aside and swapped in when complete. Returns ``output_dir``. Raises ``ValueError`` for a bad or repeated
    docid, ``FileExistsError`` for an existing index without ``overwrite`` or a directory of other files."""
    import faiss
    import pyterrier as pt
    path = collection if isinstance(collection, (str, os.PathLike)) else None
    refuse_output_as_input(output_dir, collection=path, pyterrier_index=pyterrier_index)
    if pyterrier_index is not None:
        refuse_output_as_input(pyterrier_index, collection=path, faiss_index=output_dir)
    docs = collection if path is None else read_jsonl_collection(path)
    with contextlib.ExitStack() as build:
        staging = build.enter_context(atomic_directory(output_dir, owned=lambda _: _FAISS_FILES,
                                                       overwrite=overwrite, what="FAISS index"))
        writer = build.enter_context(IndexWriter(pyterrier_index, model.dim, model.fingerprint(),
                                                 overwrite=overwrite)) if pyterrier_index is not None else None
        faiss_index = faiss.IndexFlatIP(model.dim)
        docids: List[str] = []
        unique = UniqueIds("docid", "collection")
        progress = build.enter_context(pt.tqdm(desc="encoding collection", unit="doc")) if verbose else None
        for chunk in encode_corpus(model, docs, chunk_size=chunk_size, progress=progress):
            unique.add(chunk.docnos)
            faiss_index.add(chunk.vectors)
            docids.extend(chunk.docnos)
            if writer is not None:
                writer.add(chunk.docnos, chunk.vectors, chunk.texts)
        if not docids:
            raise ValueError("nothing to index: the collection was empty")
        faiss.write_index(faiss_index, str(staging / "index"))
        (staging / "docid").write_text("".join(f"{d}\n" for d in docids), encoding="utf-8")
        (staging / _FAISS_META).write_text(json.dumps({"encoder": model.fingerprint()}, indent=2))
        if writer is not None:
            writer.finish()
    return str(output_dir)


class FaissVectors:
    """Document vectors of a FAISS directory written by ``write_faiss_index``, looked up by docid; with a
    ``model``, its stored encoder fingerprint must be the model's. Raises ``CorruptArtifact`` naming bad files."""

    def __init__(self, index_dir, model=None):
        import faiss
        self.index_dir = Path(index_dir)
        for name in ("index", "docid"):
            if not (self.index_dir / name).is_file():
                raise FileNotFoundError(f"no FAISS index at {self.index_dir} (missing {name!r})")
        meta = read_json_object(self.index_dir / _FAISS_META, "an E2Rank FAISS meta file")
        stored = None if meta is None else meta.get("encoder")
        if meta is not None and not isinstance(stored, dict):
            raise CorruptArtifact(f"{self.index_dir / _FAISS_META} is not an E2Rank FAISS meta file: its 'encoder' "
                                  f"fingerprint is {stored!r}, not an object; rebuild the index")
        if model is not None:
            check_fingerprint(stored, model.fingerprint(), f"the FAISS index at {self.index_dir}")
        self.index = faiss.read_index(str(self.index_dir / "index"))
        docid_file = self.index_dir / "docid"
        docids = [line for _, line in numbered_lines(docid_file, error=CorruptArtifact, skip_blank=False)]
        if len(docids) != self.index.ntotal:
            raise CorruptArtifact(f"the FAISS index at {self.index_dir} holds {self.index.ntotal} vectors but its "
                                  f"docid file {len(docids)} docids: the files disagree; rebuild the index")
        self.row_of = {d: i for i, d in enumerate(docids)}
        if len(self.row_of) != len(docids):
            raise CorruptArtifact(f"the docid file of the FAISS index at {self.index_dir} repeats "
                                  f"{len(docids) - len(self.row_of)} docid(s): rows cannot be told apart")

    def vectors(self, docids: Sequence[str]) -> np.ndarray:
        missing = [d for d in docids if d not in self.row_of]
        if missing:
            raise KeyError(f"{len(missing)} docid(s) are not in the FAISS index at {self.index_dir}: {missing[:5]}")
        return self.index.reconstruct_batch([self.row_of[d] for d in docids])


def search_batch(searcher, encoder: E2RankPyseriniQueryEncoder, queries: Sequence[str], qids: Sequence[str],
                 k: int = 10, threads: int = 1) -> Dict[str, list]:
    """``FaissSearcher.batch_search`` with the queries encoded in batches, FAISS's OpenMP thread count (which
    Pyserini sets for the whole process) put back afterwards."""
    import faiss
    vectors = encoder.encode_batch(queries)
    before = faiss.omp_get_max_threads()
    try:
        return searcher.batch_search(vectors, list(qids), k=k, threads=threads)
    finally:
        faiss.omp_set_num_threads(before)


# ---- reranking Pyserini hits ---------------------------------------------------------------------

@dataclass
class RerankedHit:
    """A reranked hit, shaped like Pyserini's results (``docid``, ``score``), with its new ``rank`` (0-based)."""
    docid: str
    score: float
    rank: int


TextSource = Union["LuceneSearcher", str, os.PathLike, Callable[[str], str], Dict[str, str]]


def text_lookup(source: TextSource) -> Callable[[str], str]:
    """docid -> text from a Lucene searcher or index directory (raw documents stored), a JSONL collection, a
    dict or a callable; a docid the source lacks raises a ``KeyError`` naming it and the source."""
    if isinstance(source, dict):
        return _naming_missing(source.__getitem__, f"the text dict ({len(source)} documents)")
    if isinstance(source, (str, os.PathLike)):
        if any(Path(source).glob("segments_*")):  # a Lucene index directory
            from pyserini.search.lucene import LuceneSearcher
            return _naming_missing(partial(_lucene_text, LuceneSearcher(str(source))), f"the Lucene index {source}")
        texts = {d["docno"]: d["text"] for d in read_jsonl_collection(source)}
        return _naming_missing(texts.__getitem__, f"the collection {source}")
    if hasattr(source, "doc"):
        return _naming_missing(partial(_lucene_text, source), f"the Lucene searcher {source!r}")
    if callable(source):
        return _naming_missing(source, f"the text source {source!r}")
    raise TypeError(f"cannot read document text from {source!r}")


def _naming_missing(get: Callable[[str], str], source_name: str) -> Callable[[str], str]:
    """``get`` whose KeyError names the docid and the source (a bare ``KeyError: 'd7'`` says neither)."""
    def lookup(docid: str) -> str:
        try:
            return get(docid)
        except KeyError as e:
            raise KeyError(f"docid {docid!r} is not in {source_name}") from e
    return lookup


def _lucene_text(searcher, docid: str) -> str:
    doc = searcher.doc(docid)
    if doc is None:
        raise KeyError(docid)
    raw = doc.raw()
    if raw is None:
        raise ValueError("the Lucene index stores no raw documents: index with --storeRaw, or pass a collection")
    try:
        json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return jsonl_record(raw, "document", f"the stored raw document {docid!r} of {searcher!r}")["text"]


class HitReranker:
    """Reranks Pyserini hits with ``model``'s PRF reranker (``reranker_options``), the candidates' text from
    ``text`` (``text_lookup``), their vectors from ``vectors`` (an ``E2RankIndex`` or its path, or a FAISS
    directory of ``write_faiss_index``) or, with ``None``, encoded."""

    def __init__(self, model, text: TextSource, *, vectors=None, **reranker_options):
        self.text = text_lookup(text)
        self.faiss_vectors = None
        index = None
        if vectors is not None:
            if isinstance(vectors, FlexIndex) or (Path(vectors) / "pt_meta.json").exists():
                index = as_index(vectors)
            else:
                self.faiss_vectors = FaissVectors(vectors, model)
        self.reranker = model.reranker(index=index, **reranker_options)

    def rerank(self, query: str, hits: Sequence, qid: str = "0") -> List[RerankedHit]:
        (reranked,) = self.rerank_batch([(qid, query, hits)]).values()
        return reranked

    def rerank_batch(self, queries: Sequence[Tuple[str, str, Sequence]]) -> Dict[str, List[RerankedHit]]:
        """``[(qid, query, hits), ...]`` -> ``{qid: reranked hits}``, prompts encoded in batches; ``ValueError``
        naming a qid given twice or a docid repeated in one query's hits."""
        qids = [identifier(qid, "qid", f"queries[{i}]") for i, (qid, _, _) in enumerate(queries)]
        repeated = sorted(qid for qid, count in Counter(qids).items() if count > 1)
        if repeated:
            raise ValueError(f"qid(s) {repeated[:5]} given more than once to rerank_batch: each query's hits "
                             f"come in one entry")
        builder = pta.DataFrameBuilder(["qid", "query", "docno", "score", "rank"])
        for qid, (_, query, hits) in zip(qids, queries):
            if hits:  # an empty list would be taken for one row's value
                builder.extend({"qid": qid, "query": query, "score": [float(hit.score) for hit in hits],
                                "docno": [identifier(hit.docid, "docid", f"hit {rank} of qid {qid!r}")
                                          for rank, hit in enumerate(hits)], "rank": list(range(len(hits)))})
        frame = builder.to_df()
        frame["text"] = [self.text(d) for d in frame["docno"]]
        if self.faiss_vectors is not None:
            frame["doc_vec"] = list(self.faiss_vectors.vectors(frame["docno"].tolist()))
        out = self.reranker(frame)
        reranked = {qid: [] for qid in qids}
        for row in out.itertuples():
            reranked[row.qid].append(RerankedHit(row.docno, float(row.score), int(row.rank)))
        return reranked
