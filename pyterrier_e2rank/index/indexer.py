"""Writing indexes: the one corpus-encoding loop (``encode_corpus``, which the Pyserini writer uses too), the
atomic index writer (``IndexWriter``), and the resumable, sharded indexer (``E2RankIndexer``)."""
import atexit
import contextlib
import hashlib
import itertools
import json
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..deprecation import renamed_argument
from ..checks import MISSING_TEXT, check_finite, document_texts, identifier, positive_int, stack_vectors
from .docnos import build_docnos
from .chunks import ChunkStore, EncodedChunk, content_digest, docnos_digest
from .artifact import DOCNOS, META, VECTORS, E2RankIndex, as_index, index_path, own_entries
from .text import TextWriter
from ..io import atomic_directory, check_replaceable, writer_lock


def encode_corpus(model, records: Iterable[dict], *, text_field: str = "text", chunk_size: int = 4096,
                  batch_size: Optional[int] = None, progress=None,
                  wanted: Optional[Callable[[int, str], bool]] = None,
                  missing_text: str = "error", store_text: Optional[bool] = None) -> Iterator[EncodedChunk]:
    """An ``EncodedChunk`` per ``chunk_size`` records: a record's ``doc_vec`` as is (untagged, or tagged by
    ``model``: else ``IndexModelMismatch``), else its ``text_field`` encoded; identifiers, texts and vectors
    checked, naming the record's position. Empty texts are embedded as such (one warning counts them); missing
    ones are refused unless ``missing_text="empty"``. The chunk's ``texts`` are kept with ``store_text=True``
    (every record must carry ``text_field``) or ``None`` (if the first chunk's records all do; then all must).
    ``wanted(chunk_id, digest)`` may skip a chunk; ``digest`` covers its docnos and content."""
    chunk_size = positive_int(chunk_size, "chunk_size")
    position, empty, keep = 0, [], store_text
    records = iter(records)
    for chunk_id, chunk in enumerate(iter(lambda: list(itertools.islice(records, chunk_size)), [])):
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
        carried = [record[text_field] for record in chunk if text_field in record] if store_text is not False else []
        keep = len(carried) == len(chunk) if keep is None else keep  # the first chunk decides
        if keep and len(carried) < len(chunk):
            first = next(d for d, record in zip(docnos, chunk) if text_field not in record)
            raise ValueError(f"docno {first!r} has no {text_field!r} to keep in the index, and "
                             f"{'store_text=True was given' if store_text else 'the documents before it had'}: an "
                             f"index keeps the text of all its documents or of none; give every document its "
                             f"text, or pass store_text=False")
        if store_text is None and not keep and carried:
            raise ValueError(f"of documents 0..{position - 1}, some carry {text_field!r} and some only 'doc_vec': an "
                             f"index keeps the text of all its documents or of none; give every document its text, "
                             f"or pass store_text=False")
        digest = content_digest(docnos, carried if keep else texts,
                                b"".join(np.ascontiguousarray(v, dtype=np.float32).tobytes() for v in given))
        if wanted is not None and not wanted(chunk_id, digest):
            continue
        if given:
            vectors = stack_vectors(pd.Series(given), docnos, model.dim, "doc_vec of docno")
            texts = document_texts(docnos, carried, missing_text=missing_text)[0] if keep else None
            if progress is not None:
                progress.update(len(docnos))
        else:
            texts, chunk_empty = document_texts(docnos, texts, missing_text=missing_text)
            empty.extend(chunk_empty)
            vectors = model.encode_docs(texts, batch_size=batch_size, verbose=False, progress=progress)
        yield EncodedChunk(chunk_id, docnos, vectors, digest, texts if keep else None)
    if empty:
        warnings.warn(f"{len(empty)} document(s) with empty {text_field!r} were indexed as the empty text "
                      f"(docnos {empty[:5]}{' ...' if len(empty) > 5 else ''})", stacklevel=2)


class UniqueIds:
    """The first position of every id added so far; an id added twice is a ValueError naming both positions."""

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


class IndexWriter(contextlib.ExitStack):
    """A context manager writing ``add(docnos, vectors, texts)`` of the model of fingerprint ``encoder`` into a new
    index at ``path``, built aside under a lock; ``finish()`` swaps it in (an existing one replaced only with
    ``overwrite``) and returns it; leaving the block without it keeps the old index. Texts, kept as the field
    ``text_field``, are given with every ``add`` or with none."""

    def __init__(self, path, dim: int, encoder: dict, *, overwrite: bool = False,
                 corpus_stamp: Optional[dict] = None, text_field: str = "text"):
        self.path = Path(path)
        self.encoder = encoder
        self.corpus_stamp = corpus_stamp
        self.text_field = text_field
        self._texts: Optional[TextWriter] = None
        self.dim = positive_int(dim, "dim")
        self.docnos: List[str] = []
        self._unique = UniqueIds("docno", "corpus")
        super().__init__()  # its exit without finish(): the new files are discarded, the old index kept
        self._staging = self.enter_context(
            atomic_directory(self.path, owned=own_entries, overwrite=overwrite, what="E2Rank index"))
        self._vectors = self.enter_context(open(self._staging / VECTORS, "wb"))
        self._digest = hashlib.sha256()

    def add(self, docnos: Sequence[str], vectors: np.ndarray, texts: Optional[Sequence[str]] = None) -> None:
        if vectors.shape != (len(docnos), self.dim):
            raise ValueError(f"expected vectors of shape ({len(docnos)}, {self.dim}), got {vectors.shape}")
        docnos = [identifier(d, "docno", f"document {len(self.docnos) + i}") for i, d in enumerate(docnos)]
        check_finite(vectors, docnos, "the vector of docno")
        if not self.docnos and texts is not None:
            self._texts = TextWriter(self._staging)
            self.callback(self._texts.close)
        if (texts is None) != (self._texts is None):
            raise ValueError(f"documents {len(self.docnos)}..{len(self.docnos) + len(docnos) - 1} come "
                             f"{'without' if texts is None else 'with'} text, the documents before them "
                             f"{'with' if texts is None else 'without'}: an index keeps the text of all its "
                             f"documents or of none")
        if texts is not None:
            texts = list(texts)
            bad = [d for d, text in zip(docnos, texts) if not isinstance(text, str)]
            if bad or len(texts) != len(docnos):
                raise ValueError(f"expected a text (str) for each of the {len(docnos)} documents; got {len(texts)} "
                                 f"texts{f', not a str for docnos {bad[:5]}' if bad else ''}")
        self._unique.add(docnos)
        data = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        self._vectors.write(data)
        self._digest.update(data)
        if texts is not None:
            self._texts.add(texts)
        self.docnos.extend(docnos)

    def finish(self) -> E2RankIndex:
        if not self.docnos:
            raise ValueError("nothing to index: the corpus iterator was empty")
        self._vectors.close()
        build_docnos(self._staging / DOCNOS, self.docnos)
        if self._texts is not None:  # the digest covers the texts too
            self._texts.close()
            self._digest.update(b"text\0" + self._texts.hash.digest())
        meta = {"type": E2RankIndex.ARTIFACT_TYPE, "format": E2RankIndex.ARTIFACT_FORMAT, "vec_size": self.dim,
                "doc_count": len(self.docnos), "package_hint": E2RankIndex.ARTIFACT_PACKAGE_HINT,
                "e2rank": {"encoder": self.encoder, "digest": docnos_digest(self._digest, self.docnos)}}
        if self._texts is not None:
            meta["e2rank"]["text"] = {"field": self.text_field}
        if self.corpus_stamp is not None:
            meta["e2rank"]["corpus"] = self.corpus_stamp
        (self._staging / META).write_text(json.dumps(meta, indent=2))
        self.close()  # swaps the complete index into place
        return E2RankIndex(self.path)


class E2RankIndexer(pt.Indexer):
    """``model.indexer(index, ...)`` (its arguments there); an existing index is refused at construction unless
    ``mode`` is ``"overwrite"`` or ``"append"``."""

    def __init__(self, model, index, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text", mode: str = "create", chunk_size: int = 4096,
                 missing_text: str = "error", corpus_stamp: Optional[dict] = None, overwrite: Optional[bool] = None,
                 store_text: Optional[bool] = None):
        for name, value, allowed in (("store_text", store_text, (None, True, False)),
                                     ("missing_text", missing_text, MISSING_TEXT),
                                     ("mode", mode, ("create", "overwrite", "append"))):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: expected one of {list(allowed)}")
        if overwrite is not None:
            renamed_argument(f"overwrite={overwrite}", 'mode="overwrite"' if overwrite else f"mode={mode!r}",
                             stacklevel=4)  # blames the caller of model.indexer
            if overwrite and mode != "create":
                raise ValueError(f"overwrite=True means mode='overwrite', and mode={mode!r} was given: choose one")
            mode = "overwrite" if overwrite else mode
        self.model = model
        self.index_ = E2RankIndex(index_path(index))  # not opened: it may not exist, or be replaced
        self.batch_size = batch_size
        self.verbose = model.verbose if verbose is None else verbose
        self.text_field = text_field
        self.mode = mode
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        self.missing_text = missing_text
        self.corpus_stamp = corpus_stamp
        self.store_text = store_text
        check_target(self.index_.path, self.mode)  # before any document is read

    def __repr__(self):
        store = "" if self.store_text is None else f", store_text={self.store_text}"
        return f"{self.model!r}.indexer({self.index_!r}, text_field={self.text_field!r}, mode={self.mode!r}{store})"

    def index_inputs(self):
        return [["docno", self.text_field], ["docno", "doc_vec"]]

    def chunk_store(self, *, rank: int = 0, store_text: Optional[bool] = None) -> "ChunkStore":
        """The store of process ``rank``'s committed chunks (``.<name>.chunks/`` beside the index), under the
        plan of this indexer: the model's fingerprint and every setting that changes what is encoded or kept."""
        target = Path(self.index_.path)
        plan = {"encoder": self.model.fingerprint(), "dim": self.model.dim, "chunk_size": self.chunk_size,
                "text_field": self.text_field, "missing_text": self.missing_text, "store_text": store_text}
        return ChunkStore(target.parent / f".{target.name}.chunks", plan, rank=rank)

    def index(self, it: Iterable[dict]) -> E2RankIndex:
        """Encodes ``it`` and returns the new index. The index and each process's shard of the chunk store are
        locked from the first step to the last (another writer gets ``ArtifactLocked`` and changes nothing); a
        merged chunk that is not the one this build encoded raises ``CorruptArtifact`` and writes nothing."""
        if isinstance(it, pd.DataFrame):
            it = it.to_dict(orient="records")
        target = Path(self.index_.path)
        rank, world, barrier = distributed_context()
        with contextlib.ExitStack() as held:
            if rank == 0:
                held.enter_context(writer_lock(target))
            base, keep_text = None, self.store_text
            if self.mode == "append":  # to an index of this model's vectors
                if not (target / META).is_file():
                    raise FileNotFoundError(f"no E2Rank index at {target} to append to; build it first with "
                                            f"model.indexer(path)")
                base = as_index(target)
                if base.dim != self.model.dim:
                    raise provenance.IndexModelMismatch(
                        f"the index at {target} holds vectors of dimension {base.dim}; the model "
                        f"{self.model.model_name_or_path!r} makes vectors of dimension {self.model.dim}: append with "
                        f"the model that built the index")
                base.check_model(self.model)
                keep_text = keeps_text(base) if keep_text is None else keep_text
                if keep_text and not keeps_text(base):
                    raise ValueError(f"store_text=True: the index at {target} keeps no text, so its appended "
                                     f"documents cannot have theirs; rebuild it with its text (mode='overwrite'), or "
                                     f"append with store_text=False")
                it = new_documents(it, base)
            check_target(target, self.mode)  # again under the lock, before any work
            store = held.enter_context(self.chunk_store(rank=rank, store_text=keep_text))
            total = -(-len(it) // world) if hasattr(it, "__len__") else None  # this process's share
            progress = None
            if self.verbose and rank == 0:
                progress = held.enter_context(pt.tqdm(desc="indexing" if world == 1 else
                                                      f"indexing (process 0 of {world})", unit="doc", total=total))
            digests = []  # of every chunk of the corpus, in order: what the merge must find in the store

            def mine_and_not_committed(chunk_id: int, digest: str) -> bool:
                digests.append(digest)
                return chunk_id % world == rank and not store.has(chunk_id, digest)

            for chunk in encode_corpus(self.model, it, text_field=self.text_field, chunk_size=self.chunk_size,
                                       batch_size=self.batch_size, progress=progress, wanted=mine_and_not_committed,
                                       missing_text=self.missing_text, store_text=keep_text):
                store.commit(chunk)
            barrier()
            if rank == 0:
                with IndexWriter(target, self.model.dim, store.plan["encoder"] if base is None else base.fingerprint,
                                 overwrite=self.mode != "create", corpus_stamp=self.corpus_stamp,
                                 text_field=self.text_field) as writer:
                    if base is not None:  # opened under the lock held since: no rebuild meanwhile
                        copy_index(base, writer, texts=keep_text)
                    for chunk_id, digest in enumerate(digests):
                        writer.add(*store.load(chunk_id, digest))
                    if base is not None:
                        added = writer.docnos[len(base):]
                        writer.corpus_stamp = {"appended_to": base.corpus_stamp, "appended": {
                            "corpus": self.corpus_stamp, "doc_count": len(added),
                            "first_docno": added[0] if added else None, "last_docno": added[-1] if added else None}}
                    writer.finish()
                store.remove()
            barrier()  # every process keeps its lock until the index is in place and the chunks are gone
        return E2RankIndex(target)


def new_documents(records: Iterable[dict], base: E2RankIndex) -> Iterator[dict]:
    """``records``, each checked as it is read to have a docno neither in ``base`` nor repeated; else a
    ValueError naming the docno."""
    lookup, unique = base.docnos(), UniqueIds("docno", "appended documents")
    for position, record in enumerate(records):
        if isinstance(record, dict) and "docno" in record:  # any other record is refused by encode_corpus
            docno = identifier(record["docno"], "docno", f"document {position} of the appended documents")
            if docno in lookup:
                raise ValueError(f"docno {docno!r} (document {position} of the appended documents) is already in the "
                                 f"index at {base.path}: an append adds new documents only; nothing was written")
            unique.add([docno])
        yield record


def copy_index(base: E2RankIndex, writer: "IndexWriter", *, texts: bool = False, block: int = 65536) -> None:
    """Every docno and vector of ``base`` (the version it opened), and with ``texts`` its texts, in order, added
    to ``writer``."""
    lookup, vectors = base.payload(return_dvecs=True, return_docnos=True)[:2]
    for start in range(0, len(vectors), block):
        docnos = [str(d) for d in lookup.fwd[np.arange(start, min(start + block, len(vectors)))]]
        writer.add(docnos, np.asarray(vectors[start:start + block]), base.texts(docnos) if texts else None)


def keeps_text(index: E2RankIndex) -> bool:
    """Whether ``index`` keeps its documents' text."""
    try:
        index.text_field()
    except ValueError:
        return False
    return True


def distributed_context():
    """``(rank, world size, barrier)`` of this process (accelerate's ``PartialState``, which initialises
    ``torch.distributed`` under torchrun; asked for CPU processes without CUDA, else it counts them as one)."""
    import torch
    from accelerate import PartialState
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1:
        atexit.unregister(_destroy_process_groups)  # registered once
        atexit.register(_destroy_process_groups)
    return state.process_index, state.num_processes, state.wait_for_everyone


def _destroy_process_groups():
    """Destroys the process groups (called at exit, while the interpreter still runs)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_target(path, mode: str, *, fix: str = "pass mode='overwrite' to replace it, or mode='append' to add "
                                               "documents to it") -> None:
    """FileExistsError saying ``fix`` if an index exists at ``path`` and ``mode`` is ``"create"``; also if the
    directory holds files that are not the index's own."""
    check_replaceable(Path(path), own_entries, overwrite=mode != "create", what="E2Rank index", fix=fix)
