"""Datasets through ir_datasets: ``dataset()`` opens an ir_datasets name or the user's own files, the
corpus as ``docno``/``text`` records and a text loader for reranking, both writing BEIR documents as
``title + " " + text`` (``text.join_title``).

Local files become an ir_datasets dataset built from ir_datasets' own format classes (``JsonlDocs``,
``TsvDocs``, ``JsonlQueries``, ``TsvQueries``, ``TrecQrels``, ``BeirQrels``) and registered under a
name derived from the corpus path (``local/<name>-<hash>``), so that ``pt.get_dataset("irds:...")``
serves it and every part of the library (BM25, indexing, ``DocumentText``, the CLIs) takes it as it
takes ``irds:beir/scifact/test``. Their lines are checked as ir_datasets reads them, so a malformed
line is reported as ``file:line``."""
import contextlib
import functools
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import pandas as pd
import pyterrier as pt

from .core.equality import EqualBySettings
from .core.io import FileFormatError, numbered_lines, split_fields
from .core.text import join_title

#: Accepted keys of a JSONL record, first match wins (BEIR, Pyserini and PyTerrier spellings).
DOC_ID_KEYS = ("_id", "id", "docno", "doc_id")
DOC_TEXT_KEYS = ("text", "contents")
QUERY_ID_KEYS = ("_id", "id", "qid", "query_id")
QUERY_TEXT_KEYS = ("text", "query")
BEIR_QRELS_HEADER = "query-id\tcorpus-id\tscore"

DatasetLike = Union[str, os.PathLike, "pt.datasets.Dataset"]


def dataset(source: DatasetLike, *, topics=None, qrels=None, split: Optional[str] = None) -> "pt.datasets.Dataset":
    """One dataset object from any of:

    - a ``pt.get_dataset`` name (``irds:beir/scifact/test``), or a PyTerrier dataset (passed through);
    - a BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``): ``split`` picks the
      qrels file (default ``test``, or the only one there) and, as BEIR and ir_datasets do, the topics
      are the queries judged in it;
    - a corpus file, JSONL (``{"_id"|"id"|"docno", "text"|"contents", "title"?}``) or TSV
      (``docno<TAB>text``, an optional header), ``.gz`` or not, with optional ``topics`` (JSONL or
      ``qid<TAB>query``) and ``qrels`` (TREC ``qid iter docno rel`` or BEIR ``query-id corpus-id score``
      with its header) files.

    Local datasets are ir_datasets datasets named after the corpus path (``irds_ref().dataset_id()``,
    e.g. ``local/scifact-1a2b3c4d/test``); their document store (for ``DocumentText``) is kept in the
    ir_datasets home, rebuilt when the corpus file changes."""
    if not isinstance(source, (str, os.PathLike)):
        _refuse_options(source, topics, qrels, split)
        return source
    path = Path(source)
    if not path.exists():
        name = str(source)
        if "/" in name.split(":")[0] or name.startswith("."):  # a path, not a provider's name
            raise FileNotFoundError(f"dataset {name!r}: no such file or folder (a dataset name looks like "
                                    f"irds:beir/scifact/test)")
        _refuse_options(name, topics, qrels, split)
        return pt.get_dataset(name)
    if path.is_dir():
        if topics is not None or qrels is not None:
            raise ValueError(f"dataset {str(path)!r} is a BEIR folder, which holds its topics and qrels; "
                             f"topics= and qrels= go with a corpus file")
        return _beir_folder(path, split)
    if split is not None:
        raise ValueError(f"split={split!r} picks the qrels of a BEIR folder; {str(path)!r} is a file")
    return _corpus_files(path, topics, qrels)


def _refuse_options(source, topics, qrels, split) -> None:
    given = [name for name, value in (("topics", topics), ("qrels", qrels), ("split", split)) if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} go with local files, not with the dataset {source!r}")


def corpus_id(dataset: Union[str, "pt.datasets.Dataset"]) -> str:
    """The ir_datasets id that owns the documents (``beir/scifact`` for ``irds:beir/scifact/test``; for
    local files the corpus's own name), so that splits of one collection share their indexes."""
    import ir_datasets
    name = dataset if isinstance(dataset, str) else dataset.irds_ref().dataset_id()
    return ir_datasets.docs_parent_id(name.removeprefix("irds:"))


def corpus_stamp(source) -> Optional[dict]:
    """What an index built from the documents of ``source`` (a ``dataset()`` or what it opens) was built from,
    stored with the index and compared when it is reused: ``{"corpus": corpus_id}`` for an ir_datasets
    collection (its documents are fixed by its id), plus ``"sha256"`` of the corpus file's content for local files (``dataset()``), so that a
    corpus edited in place, even with its modification time restored, gets another stamp. ``None`` for
    a dataset object that is not an ir_datasets one: its documents cannot be told apart."""
    ds = dataset(source)
    if not hasattr(ds, "irds_ref"):
        return None
    name = corpus_id(ds)
    local = _CORPUS_FILES.get(name)
    return {"corpus": name} if local is None else {"corpus": name, "sha256": _content_digest(local)}


@functools.lru_cache(maxsize=64)
def _content_digest_of(path: str, _stat: tuple) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_digest(path: Path) -> str:
    """The sha256 of a file's bytes, computed once per version of the file in this process (a rewrite
    changes its ctime, which no copying tool can set)."""
    stat = path.stat()
    return _content_digest_of(str(path.resolve()), (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))


def _text_fields(dataset) -> list:
    docs_cls = dataset.irds_ref().docs_cls()
    return [f for f in ("title", "text") if f in docs_cls._fields]


def corpus_iter(source, *, verbose: bool = False) -> Iterable[dict]:
    """``{"docno", "text"}`` for every document of the collection of ``source`` (a ``dataset()`` or what it
    opens); sized, so progress bars show a total."""
    ds = dataset(source)
    if hasattr(ds, "irds_ref") and ds.irds_ref().docs_count() is None:  # a local corpus: counted by building
        ds.irds_ref().docs_store().build()                              # its document store, once
    docs = ds.get_corpus_iter(verbose=verbose)
    records = ({"docno": doc["docno"], "text": join_title(doc.get("title"), doc.get("text"))} for doc in docs)
    return pt.utils.GeneratorLen(records, len(docs))


class DocumentText(EqualBySettings, pt.Transformer):
    """Adds ``text`` (title joined) to a result frame by ``docno``, from the dataset's document store."""

    def __init__(self, source, *, verbose: bool = False):
        self.dataset = dataset(source)
        self.fields = _text_fields(self.dataset)
        self.loader = self.dataset.text_loader(self.fields, verbose=verbose)

    def __repr__(self):
        return f"DocumentText({self.dataset!r})"

    def _settings(self) -> tuple:  # the same collection: equal, so pt.Experiment(plan="tree") shares it
        return repr(self.dataset), tuple(self.fields)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["docno"], context=self)
        if len(inp) == 0:
            return inp.assign(text=pd.Series(dtype=str))
        out = self.loader(inp.drop(columns=[f for f in self.fields if f in inp.columns]))
        if "title" in self.fields:
            out["text"] = [join_title(t, x) for t, x in zip(out.pop("title"), out["text"])]
        return out


def is_beir_folder(path) -> bool:
    """Whether ``path`` is a folder holding a BEIR corpus (``corpus.jsonl`` or ``corpus.jsonl.gz``)."""
    return Path(path).is_dir() and _first_existing(Path(path), "corpus.jsonl") is not None


def read_qrels_file(path, *, error=FileFormatError) -> pd.DataFrame:
    """``query_id, doc_id, relevance`` of a TREC or BEIR qrels file, read by ir_datasets; a malformed
    line raises ``error`` naming ``file:line``."""
    rows = _qrels(Path(path), error).qrels_iter()
    return pd.DataFrame([(q.query_id, q.doc_id, q.relevance) for q in rows],
                        columns=["query_id", "doc_id", "relevance"])


# ---- local files as ir_datasets components ---------------------------------------------------------

class _LineStream(io.RawIOBase):
    """A binary stream over an iterator of byte strings, for readers that want a file object."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = next(self._chunks, None)
            if self._pending is None:
                self._pending = b""
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class _CheckedFile:
    """An ir_datasets download (``path()``, ``stream()``) of a local file, ``.gz`` or not, whose lines are
    checked (``check(number, line)``) as ir_datasets reads them: its readers would name neither the file
    nor the line of a malformed one. Blank lines are skipped."""

    def __init__(self, path: Path, check: Callable[[int, str], None], error=FileFormatError):
        self._path = path
        self._check = check
        self._error = error

    def path(self, force: bool = True) -> Path:
        if force and not self._path.exists():
            raise FileNotFoundError(self._path)
        return self._path

    @contextlib.contextmanager
    def stream(self):
        def lines():  # ir_datasets reads the lines numbered_lines reads: BOM, CRLF and blanks dropped
            for number, line in numbered_lines(self._path, error=self._error):
                self._check(number, line)
                yield f"{line}\n".encode("utf-8")
        yield io.BufferedReader(_LineStream(lines()))


def _first_line(path: Path, error=FileFormatError) -> str:
    for _, line in numbered_lines(path, error=error):
        return line
    raise error(f"{path}: the file is empty")


def is_jsonl(path) -> bool:
    """Whether a file is JSONL by its name (``.jsonl``, ``.json``, either ``.gz``); else it is read as TSV."""
    return Path(path).name.removesuffix(".gz").endswith((".jsonl", ".json"))


def _json_record(path: Path, number: int, line: str, error=FileFormatError) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{number}: not a JSON object ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise error(f"{path}:{number}: expected a JSON object, got a {type(record).__name__}")
    return record


def _jsonl_mapping(path: Path, id_keys, text_keys, what: str, optional=()) -> dict:
    """``{field: key}`` of the file's records, from its first line: which of the accepted keys it uses."""
    number, line = next(iter(numbered_lines(path)), (None, None))
    if number is None:
        raise FileFormatError(f"{path}: the file is empty")
    record = _json_record(path, number, line)
    mapping = {}
    for field, keys in (("id", id_keys), ("text", text_keys)):
        found = next((k for k in keys if k in record), None)
        if found is None:
            raise FileFormatError(f"{path}:{number}: a {what} needs one of the keys {list(keys)}; the record "
                                  f"has {sorted(record)}")
        mapping[field] = found
    mapping.update({k: k for k in optional if k in record})
    return mapping


def _jsonl_check(path: Path, mapping: dict, what: str) -> Callable[[int, str], None]:
    def check(number: int, line: str) -> None:
        record = _json_record(path, number, line)
        missing = [k for k in mapping.values() if k not in record]
        if missing:
            raise FileFormatError(f"{path}:{number}: the {what} lacks {missing} (the file's first record has "
                                  f"them)")
        identifier = record[mapping["id"]]
        if not isinstance(identifier, str) or not identifier or any(c.isspace() for c in identifier):
            raise FileFormatError(f"{path}:{number}: the {what} id {identifier!r} must be a non-empty string "
                                  f"without whitespace")
        for key, value in record.items():
            if key != mapping["id"] and key in mapping.values() and value is not None and not isinstance(value, str):
                raise FileFormatError(f"{path}:{number}: {key!r} of {what} {identifier!r} is a "
                                      f"{type(value).__name__}, not a string")
    return check


def _tsv_check(path: Path, columns: int, header: bool, what: str) -> Callable[[int, str], None]:
    def check(number: int, line: str) -> None:
        fields = split_fields(line, columns, where=f"{path}:{number}", form=what, sep="\t")
        if not (header and number == 1) and (not fields[0] or any(c.isspace() for c in fields[0])):
            raise FileFormatError(f"{path}:{number}: the id {fields[0]!r} is empty or holds whitespace")
    return check


def _stamp(*paths) -> str:
    """A digest of files' paths and contents: what a cached document store depends on (sizes and
    modification times would miss an edit that keeps the size, its mtime restored by ``cp -p``)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.resolve()}\0{_content_digest(path)}\0".encode())
    return digest.hexdigest()[:16]


def _docs(path: Path):
    """ir_datasets' ``JsonlDocs``/``TsvDocs`` over a corpus file; the document store in the ir_datasets home."""
    import ir_datasets
    from ir_datasets.datasets.beir import BeirTitleDoc
    from ir_datasets.formats import GenericDoc, JsonlDocs, TsvDocs
    store = ir_datasets.util.home_path() / "local" / _stamp(path) / "docs.pklz4"
    if is_jsonl(path):
        mapping = _jsonl_mapping(path, DOC_ID_KEYS, DOC_TEXT_KEYS, "document", optional=("title",))
        doc_cls = BeirTitleDoc if "title" in mapping else GenericDoc
        return JsonlDocs(_CheckedFile(path, _jsonl_check(path, mapping, "document")), doc_cls=doc_cls,
                         mapping={"doc_id": mapping["id"], **{f: mapping[f] for f in doc_cls._fields[1:]}},
                         docstore_path=str(store))
    header = _first_line(path).split("\t")[0].strip() in DOC_ID_KEYS
    return TsvDocs(_CheckedFile(path, _tsv_check(path, 2, header, "docno<TAB>text")), skip_first_line=header)


def _queries(path: Path):
    from ir_datasets.formats import JsonlQueries, TsvQueries
    if is_jsonl(path):
        mapping = _jsonl_mapping(path, QUERY_ID_KEYS, QUERY_TEXT_KEYS, "query")
        return JsonlQueries(_CheckedFile(path, _jsonl_check(path, mapping, "query")),
                            mapping={"query_id": mapping["id"], "text": mapping["text"]})
    if _first_line(path).split("\t")[0].strip() in QUERY_ID_KEYS:
        raise FileFormatError(f"{path}:1: a header line; a topics TSV file is 'qid<TAB>query' lines only")
    return TsvQueries(_CheckedFile(path, _tsv_check(path, 2, False, "qid<TAB>query")))


def _qrels(path: Path, error=FileFormatError):
    """ir_datasets' ``BeirQrels`` (a ``query-id corpus-id score`` header) or ``TrecQrels``, by the first line."""
    from ir_datasets.datasets.beir import BeirQrels
    from ir_datasets.formats import TrecQrels
    beir = _first_line(path, error).strip() == BEIR_QRELS_HEADER
    columns, form = (3, "query-id corpus-id score") if beir else (4, "qid iter docid relevance")

    def check(number: int, line: str) -> None:
        if beir and number == 1:
            return
        relevance = split_fields(line, columns, where=f"{path}:{number}", form=form, error=error)[-1]
        if not relevance.lstrip("-").isdigit():
            raise error(f"{path}:{number}: expected '{form}' with an integer relevance, got {relevance!r}: {line!r}")

    checked = _CheckedFile(path, check, error)
    return BeirQrels(checked, {}) if beir else TrecQrels(checked, {})


def _first_existing(folder: Path, name: str) -> Optional[Path]:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.exists()), None)


def _beir_folder(folder: Path, split: Optional[str]) -> "pt.datasets.Dataset":
    from ir_datasets.datasets.base import FilteredQueries
    from ir_datasets.datasets.beir import qid_filter
    corpus = _first_existing(folder, "corpus.jsonl")
    if corpus is None:
        raise FileNotFoundError(f"{folder} is not a BEIR folder: it has no corpus.jsonl (or corpus.jsonl.gz)")
    queries_file = _first_existing(folder, "queries.jsonl")
    splits = sorted(p.name.removesuffix(".gz").removesuffix(".tsv") for p in (folder / "qrels").glob("*.tsv*"))
    if split is None and splits:
        split = "test" if "test" in splits or len(splits) != 1 else splits[0]
    if split is not None and split not in splits:
        raise FileNotFoundError(f"{folder / 'qrels' / (split + '.tsv')}: no such qrels file (split={split!r}); "
                                f"the folder has {splits or 'no qrels'}")
    files = [corpus] + ([] if queries_file is None else [queries_file])
    base = _register(_local_name(folder), _stamp(*files),
                     lambda: (_docs(corpus), None if queries_file is None else _queries(queries_file)))
    _CORPUS_FILES[base] = corpus
    if split is None:
        return pt.get_dataset(f"irds:{base}")
    qrels_file = _first_existing(folder / "qrels", f"{split}.tsv")

    def components():
        docs, queries = _registered_components(base)
        qrels = _qrels(qrels_file)
        return docs, None if queries is None else FilteredQueries(queries, qid_filter(qrels)), qrels
    return pt.get_dataset(f"irds:{_register(f'{base}/{split}', _stamp(*files, qrels_file), components)}")


def _corpus_files(corpus: Path, topics, qrels) -> "pt.datasets.Dataset":
    extra = {what: Path(path) for what, path in (("topics", topics), ("qrels", qrels)) if path is not None}
    for what, path in extra.items():
        if not path.is_file():
            raise FileNotFoundError(f"{what}={str(path)!r}: no such file")
    base = _register(_local_name(corpus), _stamp(corpus), lambda: (_docs(corpus),))
    _CORPUS_FILES[base] = corpus
    if not extra:
        return pt.get_dataset(f"irds:{base}")

    def components():
        docs, = _registered_components(base)
        return (docs, _queries(extra["topics"]) if "topics" in extra else None,
                _qrels(extra["qrels"]) if "qrels" in extra else None)
    files = hashlib.sha256("\0".join(str(p.resolve()) for p in extra.values()).encode()).hexdigest()[:8]
    return pt.get_dataset(f"irds:{_register(f'{base}/{files}', _stamp(corpus, *extra.values()), components)}")


def _local_name(source: Path) -> str:
    """``local/<name>-<hash of the absolute path>``: stable for a path, so its indexes are found again."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.resolve().name.split(".")[0]) or "corpus"
    return f"local/{stem}-{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]}"


#: ``{name: (stamp of its files, its components)}`` of the local datasets registered by this process.
_REGISTERED = {}
#: ``{corpus id: its corpus file}`` of the local datasets registered by this process (for ``corpus_stamp``).
_CORPUS_FILES = {}


def _register(name: str, stamp: str, components: Callable[[], tuple]) -> str:
    """Registers ``components()`` (``None`` skipped) under ``name`` in ir_datasets' registry, unless the
    same files are registered there already; files changed since are registered again."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    if name not in _REGISTERED or _REGISTERED[name][0] != stamp:
        made = components()
        ir_datasets.registry._registered.pop(name, None)  # ir_datasets offers no public re-registration
        ir_datasets.registry.register(name, Dataset(*[c for c in made if c is not None]))
        _REGISTERED[name] = (stamp, made)
    return name


def _registered_components(name: str) -> tuple:
    """The components of a registered name: a split shares its collection's document handler, which
    ``ir_datasets.docs_parent_id`` (hence ``corpus_id``) compares by identity."""
    return _REGISTERED[name][1]
