"""Writing indexes: the one corpus-encoding loop, and the atomic index writer it feeds.

``encode_corpus`` turns records (``docno`` with text, or with a ``doc_vec`` computed elsewhere) into
checked chunks of ``(docnos, vectors)``; every writer consumes it: ``IndexWriter`` (our FlexIndex),
and the Pyserini FAISS writer (``pyserini.write_faiss_index``).
"""
import atexit
import contextlib
import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..checks import MISSING_TEXT, check_finite, document_texts, identifier, positive_int, stack_vectors
from .docnos import build_docnos
from .artifact import DOCNOS, META, VECTORS, E2RankIndex, as_index, index_path, own_entries
from ..io import CorruptArtifact, atomic_directory, atomic_file, check_replaceable, writer_lock


def encode_corpus(model, records: Iterable[dict], *, text_field: str = "text", chunk_size: int = 4096,
                  batch_size: Optional[int] = None, progress=None,
                  wanted: Optional[Callable[[int, str], bool]] = None,
                  missing_text: str = "error") -> Iterator["EncodedChunk"]:
    """An ``EncodedChunk`` per ``chunk_size`` records: a record's ``doc_vec`` is used as is, else its
    ``text_field`` is encoded (length-sorted batches). Identifiers, texts and vectors are checked,
    naming the record's position. Empty texts are embedded as the empty text and counted in one warning
    at the end; missing ones (``None``, NaN) are refused unless ``missing_text="empty"``
    (``checks.document_texts``). A ``doc_vec`` tagged by another model (``doc_vec_model``, as
    ``doc_encoder()`` writes it: see ``provenance``) raises ``IndexModelMismatch`` naming both, so an index
    never stores another model's vectors under ``model``'s fingerprint; untagged vectors are the user's
    own, stored as given. ``wanted(chunk_id, digest)`` may skip a chunk (a shard of another
    process, or one committed before a restart); ``digest`` covers its docnos and content, so a changed
    corpus is never mistaken for a committed chunk."""
    chunk_size = positive_int(chunk_size, "chunk_size")
    position, empty = 0, []
    for chunk_id, chunk in enumerate(_chunks(records, chunk_size)):
        docnos, texts, given, given_tags = [], [], [], []
        for record in chunk:
            where = f"document {position} of the corpus"
            if not isinstance(record, dict):
                raise TypeError(f"{where} is a {type(record).__name__}, not a dict with docno and {text_field!r}")
            docnos.append(identifier(record.get("docno"), "docno", where))
            if "doc_vec" in record:
                given.append(record["doc_vec"])
                given_tags.append(provenance.record_tag(record, "doc_vec"))
            elif text_field in record:
                texts.append(record[text_field])
            else:
                raise KeyError(f"{where} (docno {docnos[-1]!r}) has neither {text_field!r} nor 'doc_vec': "
                               f"{sorted(record)}")
            position += 1
        if given and texts:
            raise ValueError(f"documents {position - len(chunk)}..{position - 1} mix records with 'doc_vec' and "
                             f"records with {text_field!r}; give one or the other")
        provenance.check_tags(given_tags, docnos, model.fingerprint(), "doc_vec of docno",
                              f"the indexer of {model.model_name_or_path!r}",
                              fix="index the vectors with the indexer of the model that made them, or give text")
        digest = _digest(docnos, texts, given)
        if wanted is not None and not wanted(chunk_id, digest):
            continue
        if given:
            vectors = stack_vectors(pd.Series(given), docnos, model.dim, "doc_vec of docno")
            if progress is not None:
                progress.update(len(docnos))
        else:
            texts, chunk_empty = document_texts(docnos, texts, missing_text=missing_text)
            empty.extend(chunk_empty)
            vectors = model.encode_docs(texts, batch_size=batch_size, verbose=False, progress=progress)
        yield EncodedChunk(chunk_id, docnos, vectors, digest)
    if empty:
        warnings.warn(f"{len(empty)} document(s) with empty {text_field!r} were indexed as the empty text "
                      f"(docnos {empty[:5]}{' ...' if len(empty) > 5 else ''})", stacklevel=2)


class EncodedChunk(NamedTuple):
    chunk_id: int
    docnos: List[str]
    vectors: np.ndarray
    digest: str


def _digest(docnos: List[str], texts: list, given: list) -> str:
    digest = hashlib.sha256()
    for docno in docnos:
        digest.update(docno.encode() + b"\0")
    for text in texts:
        digest.update(str(text).encode("utf-8", "surrogatepass") + b"\0")
    for vector in given:
        digest.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _chunks(records: Iterable, size: int):
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class UniqueIds:
    """The first position of every id added so far; an id added twice is refused with both positions
    (a repeated docno would give one document two vectors, or another document's)."""

    def __init__(self, what: str, source: str):
        self.what, self.source = what, source
        self._first: Dict[str, int] = {}

    def add(self, ids: Sequence[str]) -> None:
        for id_ in ids:
            position = len(self._first)
            first = self._first.setdefault(id_, position)
            if first != position:
                raise ValueError(f"duplicate {self.what}: {self.what} {id_!r} repeated: documents {first} and "
                                 f"{position} of the {self.source}; nothing was written")


class IndexWriter:
    """Writes (docnos, vectors) into a new index, used as a context manager::

        with IndexWriter(path, dim, model.fingerprint(), overwrite=False) as writer:
            writer.add(docnos, vectors)   # as often as needed
            index = writer.finish()

    The index is built in a private directory beside ``path`` (under a lock: a second writer of the
    same path gets ``ArtifactLocked``) and swapped in by ``finish()``; leaving the block without it,
    by an exception or a kill, leaves any old index as it was. ``encoder`` is the fingerprint of the
    model that made the vectors; ``corpus_stamp`` (``data.corpus_stamp``), what they were made from. The
    metadata also records ``digest``, the SHA-256 of the docnos and vectors (computed as they are written):
    the identity every structure derived from them records."""

    def __init__(self, path, dim: int, encoder: dict, *, overwrite: bool = False,
                 corpus_stamp: Optional[dict] = None):
        self.path = Path(path)
        self.encoder = encoder
        self.corpus_stamp = corpus_stamp
        self.dim = positive_int(dim, "dim")
        self.docnos: List[str] = []
        self._unique = UniqueIds("docno", "corpus")
        self._build = contextlib.ExitStack()
        self._staging = self._build.enter_context(
            atomic_directory(self.path, owned=own_entries, overwrite=overwrite, what="E2Rank index"))
        self._vectors = self._build.enter_context(open(self._staging / VECTORS, "wb"))
        self._digest = hashlib.sha256()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self._build.__exit__(*exc_info)  # without finish(): the new files are discarded, the old index kept

    def add(self, docnos: Sequence[str], vectors: np.ndarray) -> None:
        if vectors.shape != (len(docnos), self.dim):
            raise ValueError(f"expected vectors of shape ({len(docnos)}, {self.dim}), got {vectors.shape}")
        docnos = [identifier(d, "docno", f"document {len(self.docnos) + i}") for i, d in enumerate(docnos)]
        check_finite(vectors, docnos, "the vector of docno")
        self._unique.add(docnos)
        data = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        self._vectors.write(data)
        self._digest.update(data)
        self.docnos.extend(docnos)

    def finish(self) -> E2RankIndex:
        if not self.docnos:
            raise ValueError("nothing to index: the corpus iterator was empty")
        self._vectors.close()
        build_docnos(self._staging / DOCNOS, self.docnos)
        for docno in self.docnos:
            self._digest.update(docno.encode("utf-8", "surrogatepass") + b"\0")
        meta = {"type": "dense_index", "format": "flex", "vec_size": self.dim, "doc_count": len(self.docnos),
                "package_hint": "pyterrier-e2rank", "e2rank": {"encoder": self.encoder,
                                                               "digest": self._digest.hexdigest()}}
        if self.corpus_stamp is not None:
            meta["e2rank"]["corpus"] = self.corpus_stamp
        (self._staging / META).write_text(json.dumps(meta, indent=2))
        self._build.close()  # swaps the complete index into place
        return E2RankIndex(self.path)


class E2RankIndexer(pt.Indexer):
    """Indexes records with ``docno`` and text (encoded here) or ``doc_vec`` (from ``doc_encoder()``).

    The corpus is encoded in chunks of ``chunk_size`` documents, each committed to disk beside the
    target (``.<name>.chunks/``) as soon as it is encoded: a build killed and started again on the same
    output resumes after its last committed chunk (a chunk whose documents changed, made by another model
    or with other settings, or damaged, is encoded again: ``ChunkStore``).
    Under ``torchrun``/``accelerate launch`` (``torch.distributed`` initialised, or ``WORLD_SIZE`` > 1)
    each process encodes every ``world_size``-th chunk, and process 0 merges them, in corpus order,
    into the index: the same index as one process builds. The index appears (or replaces the old one,
    with ``overwrite``) only when the whole corpus is in; merging needs the chunks' disk space twice.

    An empty document is indexed as the model embeds the empty text (one warning counts them); a
    missing text (``None``, NaN) is an error naming the docno, unless ``missing_text="empty"``.
    ``corpus_stamp`` (``data.corpus_stamp``) is stored with the index (``E2RankIndex.corpus_stamp``), so
    that whoever reuses it can tell whether the corpus changed since.

    ``mode="append"`` adds the documents to the existing index instead (``append_stamp`` says what the
    stamp becomes), encoded and committed in chunks as a build is (a restart resumes), then merged after
    the old vectors into a new version swapped in like every write: the old index serves until then. A
    docno already in the index, or repeated in the new documents, is refused by name before its chunk is
    encoded; an index of another model or dimension raises ``IndexModelMismatch``; an index rebuilt
    while the append encoded raises ``IndexReplaced``. The structures derived from the old vectors (ANN,
    int8, binary, corpus graphs) are not carried over: the new version has new vectors (a new
    ``digest``), and each is built again from them on first use."""

    def __init__(self, model, index, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text", overwrite: bool = False, chunk_size: int = 4096,
                 missing_text: str = "error", corpus_stamp: Optional[dict] = None, mode: str = "create"):
        if missing_text not in MISSING_TEXT:
            raise ValueError(f"missing_text={missing_text!r}: expected one of {list(MISSING_TEXT)}")
        if mode not in INDEXER_MODES:
            raise ValueError(f"mode={mode!r}: expected one of {list(INDEXER_MODES)}")
        if mode == "append" and overwrite:
            raise ValueError("overwrite=True replaces the index and mode='append' adds to it: choose one")
        self.model = model
        self.index_ = E2RankIndex(index_path(index))  # not opened: it may not exist, or be replaced
        self.batch_size = batch_size
        self.verbose = model.verbose if verbose is None else verbose
        self.text_field = text_field
        self.overwrite = overwrite
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        self.missing_text = missing_text
        self.corpus_stamp = corpus_stamp
        self.mode = mode

    def __repr__(self):
        return (f"{self.model!r}.indexer({self.index_!r}, text_field={self.text_field!r}, overwrite={self.overwrite}"
                f"{', mode=' + repr(self.mode) if self.mode != 'create' else ''})")

    def index_inputs(self):
        return [["docno", self.text_field], ["docno", "doc_vec"]]

    def chunk_store(self, *, rank: int = 0) -> "ChunkStore":
        """The store of process ``rank``'s committed chunks (``.<name>.chunks/`` beside the index), under the
        plan of this indexer: the model's fingerprint and every setting that changes what is encoded."""
        target = Path(self.index_.path)
        plan = {"encoder": self.model.fingerprint(), "dim": self.model.dim, "chunk_size": self.chunk_size,
                "text_field": self.text_field, "missing_text": self.missing_text}
        return ChunkStore(target.parent / f".{target.name}.chunks", plan, rank=rank)

    def index(self, it: Iterable[dict]) -> E2RankIndex:
        """Encodes ``it``, merges it into the index at ``path`` (after the old documents, with ``mode="append"``)
        and returns the new index. One writer from first step to last: process 0 locks the index before it reads
        the old one or touches the chunk store, each process locks its shard of the store, and the locks are
        held through the merge, the swap and the store's removal, so a second writer of the same index gets
        ``ArtifactLocked`` at once, and changes nothing. Every chunk merged must be the one this build encoded
        (its digest), else ``CorruptArtifact`` names its file and nothing is written."""
        if isinstance(it, pd.DataFrame):
            it = it.to_dict(orient="records")
        target = Path(self.index_.path)
        rank, world, barrier = distributed_context()
        with contextlib.ExitStack() as held:
            if rank == 0:
                held.enter_context(writer_lock(target))
            base = None
            if self.mode == "append":
                base = appendable(target, self.model)
                it = new_documents(it, base)
            check_replaceable(target, own_entries, overwrite=self.overwrite or base is not None,
                              what="E2Rank index")  # before any work
            store = held.enter_context(self.chunk_store(rank=rank))
            total = len(it) if hasattr(it, "__len__") else None
            progress = None
            if self.verbose and rank == 0:
                progress = pt.tqdm(desc="indexing" if world == 1 else f"indexing (process 0 of {world})", unit="doc",
                                   total=None if total is None else -(-total // world))
            digests = []  # of every chunk of the corpus, in order: what the merge must find in the store

            def mine_and_not_committed(chunk_id: int, digest: str) -> bool:
                digests.append(digest)
                return chunk_id % world == rank and not store.has(chunk_id, digest)

            for chunk in encode_corpus(self.model, it, text_field=self.text_field, chunk_size=self.chunk_size,
                                       batch_size=self.batch_size, progress=progress, wanted=mine_and_not_committed,
                                       missing_text=self.missing_text):
                store.commit(chunk)
            if progress is not None:
                progress.close()
            barrier()
            if rank == 0:
                with IndexWriter(target, self.model.dim, store.plan["encoder"] if base is None else base.fingerprint,
                                 overwrite=self.overwrite or base is not None,
                                 corpus_stamp=self.corpus_stamp) as writer:
                    if base is not None:
                        base.check_current()  # no rebuild since the append opened it
                        copy_index(base, writer)
                    for chunk_id, digest in enumerate(digests):
                        writer.add(*store.load(chunk_id, digest))
                    if base is not None:
                        writer.corpus_stamp = append_stamp(base, self.corpus_stamp, writer.docnos[len(base):])
                    writer.finish()
                store.remove()
            barrier()  # every process keeps its lock until the index is in place and the chunks are gone
        return E2RankIndex(target)


#: ``E2RankIndexer``'s modes: a new index (or a replacement, with ``overwrite``), or documents added to one.
INDEXER_MODES = ("create", "append")


def appendable(path: Path, model) -> E2RankIndex:
    """The index at ``path``, opened, to which ``model`` may append: ``FileNotFoundError`` when there is none,
    ``IndexModelMismatch`` when its vectors are another model's or of another dimension."""
    if not (path / META).is_file():
        raise FileNotFoundError(f"no E2Rank index at {path} to append to; build it first with model.indexer(path)")
    base = as_index(path)
    base.payload(return_dvecs=False, return_docnos=False)
    if base.dim != model.dim:
        raise provenance.IndexModelMismatch(f"the index at {path} holds vectors of dimension {base.dim}; "
                                 f"{model.model_name_or_path!r} makes vectors of dimension {model.dim}: append with "
                                 f"the model that built the index")
    base.check_model(model)
    return base


def new_documents(records: Iterable[dict], base: E2RankIndex) -> Iterator[dict]:
    """``records`` as given, each checked, as it is read (before its chunk is encoded), to have a docno that
    is neither in ``base`` nor repeated among the records; else a ValueError naming the docno."""
    lookup, unique = base.docnos(), UniqueIds("docno", "appended documents")
    for position, record in enumerate(records):
        if isinstance(record, dict) and "docno" in record:  # any other record is refused by encode_corpus
            docno = identifier(record["docno"], "docno", f"document {position} of the appended documents")
            if docno in lookup:
                raise ValueError(f"docno {docno!r} (document {position} of the appended documents) is already in the "
                                 f"index at {base.path}: an append adds new documents only; nothing was written")
            unique.add([docno])
        yield record


def append_stamp(base: E2RankIndex, corpus_stamp: Optional[dict], docnos: List[str]) -> dict:
    """The corpus stamp of ``base`` after an append of ``docnos`` from the corpus ``corpus_stamp`` (``None``: not
    told): ``{"appended_to": <base's stamp>, "appended": {"corpus", "doc_count", "first_docno", "last_docno"}}``,
    so no reuse check mistakes it for the base corpus."""
    return {"appended_to": base.corpus_stamp, "appended": {"corpus": corpus_stamp, "doc_count": len(docnos),
                                                           "first_docno": docnos[0] if docnos else None,
                                                           "last_docno": docnos[-1] if docnos else None}}


def copy_index(base: E2RankIndex, writer: "IndexWriter", *, block: int = 65536) -> None:
    """Every docno and vector of ``base`` (the version it opened), in order, added to ``writer``."""
    lookup, vectors = base.payload(return_dvecs=True, return_docnos=True)[:2]
    for start in range(0, len(vectors), block):
        rows = np.arange(start, min(start + block, len(vectors)))
        writer.add([str(d) for d in lookup.fwd[rows]], np.asarray(vectors[start:start + block]))


def distributed_context():
    """``(rank, world size, barrier)`` of this process, from accelerate's ``PartialState``: under torchrun or
    ``accelerate launch`` it reads the rank and world size from their environment and initialises
    ``torch.distributed`` (nccl on CUDA, gloo on CPU) unless that is done already; else one process.
    Without CUDA it is asked for CPU processes, which it would otherwise count as one."""
    import torch
    from accelerate import PartialState
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1 and _destroy_process_groups not in _AT_EXIT:
        atexit.register(_destroy_process_groups)
        _AT_EXIT.add(_destroy_process_groups)
    return state.process_index, state.num_processes, state.wait_for_everyone


#: What this module registered with ``atexit`` (once per process).
_AT_EXIT = set()


def _destroy_process_groups():
    """At exit, the process groups are destroyed while the interpreter still runs: gloo's threads left to the
    C++ static destructors abort the process ("terminate called without an active exception", SIGABRT) now
    and then, turning a finished command into a failed one."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ChunkStore:
    """Encoded chunks of one build, committed one by one so that a restarted build resumes: each
    ``chunk-N.json`` (docnos, digest of the chunk's content, digest of the ``plan`` -- model
    fingerprint and settings -- it was encoded under, SHA-256 of the vector bytes) is moved into place
    after its ``chunk-N.f4`` vectors, both written aside, fsync'd and renamed (``io.atomic_file``), so
    its presence marks the chunk complete, after a kill or a power loss alike. A committed chunk is
    reused only for the same content and plan, and only when its vectors match the recorded checksum
    and shape: a damaged one is encoded again (``has``, with a warning naming the file) and never
    merged (``load`` raises ``CorruptArtifact``), nor is a chunk whose documents are not the ones the build
    merging it encoded (another build's). Each process locks its own shard of the store until the build ends;
    ``remove`` deletes the chunks, and the last process to leave the store removes its directory."""

    def __init__(self, directory: Path, plan: dict, *, rank: int = 0):
        self.directory = Path(directory)
        self.plan = plan
        self.rank = rank
        self._plan_digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
        self._lock = None

    def __enter__(self) -> "ChunkStore":
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = writer_lock(self.directory / f"process-{self.rank}")
        self._lock.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.__exit__(*exc_info)
        with contextlib.suppress(OSError):  # another process's lock still in it, or chunks kept for a restart
            self.directory.rmdir()

    def _paths(self, chunk_id: int):
        stem = self.directory / f"chunk-{chunk_id:07d}"
        return stem.with_suffix(".json"), stem.with_suffix(".f4")

    def has(self, chunk_id: int, digest: str) -> bool:
        """Whether the chunk is committed with this content under this plan, and intact; a damaged one
        (an empty record after a power loss, vectors of another size, a checksum that differs) is removed,
        named in a warning, so that it is encoded again."""
        record, vector_file = self._paths(chunk_id)
        if not record.exists():
            return False
        try:
            saved = self._record(chunk_id)
            if (saved["digest"], saved["plan"]) != (digest, self._plan_digest):
                return False  # other documents, or another model or settings: encoded again
            self._vectors(chunk_id, saved)
            return True
        except CorruptArtifact as damaged:
            warnings.warn(f"{damaged}; encoding chunk {chunk_id} again", stacklevel=2)
            for path in (record, vector_file):
                path.unlink(missing_ok=True)
            return False

    def commit(self, chunk: EncodedChunk) -> None:
        record, vector_file = self._paths(chunk.chunk_id)
        data = np.ascontiguousarray(chunk.vectors, dtype=np.float32).tobytes()
        with atomic_file(vector_file, mode="wb") as out:
            out.write(data)
        with atomic_file(record) as out:  # last: the chunk is committed once its vectors are on disk
            out.write(json.dumps({"docnos": chunk.docnos, "digest": chunk.digest, "plan": self._plan_digest,
                                  "sha256": _checksum(chunk.docnos, data)}))

    def load(self, chunk_id: int, digest: str) -> Tuple[List[str], np.ndarray]:
        """The chunk's docnos and vectors ``(n, dim)``, checked against its record: ``FileNotFoundError``
        for a chunk never committed, ``CorruptArtifact`` naming the file for a damaged one, or for one whose
        content is not ``digest`` (``encode_corpus``'s, of the chunk this build encoded) or whose plan is not
        this store's."""
        record, _ = self._paths(chunk_id)
        if not record.exists():
            raise FileNotFoundError(f"chunk {chunk_id} of the build in {self.directory} is missing: did a process "
                                    f"fail? Start the build again: committed chunks are kept")
        try:
            saved = self._record(chunk_id)
            if saved["plan"] != self._plan_digest:
                raise CorruptArtifact(f"the chunk record {record} was written for another model or other settings")
            if saved["digest"] != digest:
                raise CorruptArtifact(f"the chunk record {record} holds other documents than chunk {chunk_id} of this "
                                      f"build (digest {saved['digest'][:12]}, not {digest[:12]}): another build's")
            return saved["docnos"], self._vectors(chunk_id, saved)
        except CorruptArtifact as damaged:
            raise CorruptArtifact(f"{damaged}; nothing was written. Start the build again: this chunk is encoded "
                                  f"again, the intact ones are kept") from None

    def _record(self, chunk_id: int) -> dict:
        """The record of a committed chunk; ``CorruptArtifact`` naming it when it cannot be read."""
        record = self._paths(chunk_id)[0]
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            if not isinstance(saved["docnos"], list) or not all(isinstance(saved[k], str)
                                                                 for k in ("digest", "plan", "sha256")):
                raise TypeError("docnos, digest, plan or sha256 of another type")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptArtifact(f"the chunk record {record} is damaged ({type(e).__name__}: {e})") from None
        return saved

    def _vectors(self, chunk_id: int, saved: dict) -> np.ndarray:
        """The chunk's vectors ``(n, dim)`` once their size, and the checksum of them and the record's
        docnos, are those recorded; ``CorruptArtifact`` naming the file otherwise."""
        record, vector_file = self._paths(chunk_id)
        try:
            data = vector_file.read_bytes()
        except OSError as e:
            raise CorruptArtifact(f"the chunk vectors {vector_file} cannot be read ({e.strerror})") from None
        shape = (len(saved["docnos"]), self.plan["dim"])
        if len(data) != 4 * shape[0] * shape[1]:
            raise CorruptArtifact(f"the chunk vectors {vector_file} hold {len(data)} bytes, not the {shape[0]} x "
                                  f"{shape[1]} float32 its record {record.name} lists")
        if _checksum(saved["docnos"], data) != saved["sha256"]:
            raise CorruptArtifact(f"the chunk vectors {vector_file} (or the docnos of {record.name}) do not match "
                                  f"the checksum in that record: the file is damaged")
        return np.frombuffer(data, dtype=np.float32).reshape(shape)

    def remove(self) -> None:
        """Delete the committed chunks (and a dead writer's temporary files), not the processes' lock files."""
        for entry in self.directory.iterdir():
            if not re.fullmatch(r"\.process-\d+\.lock", entry.name):
                entry.unlink(missing_ok=True)


def _checksum(docnos: List[str], vector_bytes: bytes) -> str:
    """SHA-256 of a chunk's vectors and docnos, as its record keeps it."""
    digest = hashlib.sha256(vector_bytes)
    for docno in docnos:
        digest.update(str(docno).encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()
