"""Datasets through ir_datasets: ``dataset()`` opens an ir_datasets name, a BRIGHT domain or the user's own files
(registered as ``local/<name>-<hash>``, pt_docs/datasets-and-bm25.rst); the corpus as records and a text loader,
titles joined."""
import contextlib
import functools
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, Set, Union

import ir_datasets
import pandas as pd
import pyterrier as pt
from ir_datasets.datasets.base import FilteredQueries
from ir_datasets.datasets.beir import BeirQrels, qid_filter
from ir_datasets.formats import GenericDoc, JsonlDocs, JsonlQueries, TrecQrels
from ir_datasets.util import IterStream

from . import bright as _bright
from .checks import identifier
from .equality import EqualBySettings
from .io import FileFormatError, file_sha256, numbered_lines, split_fields
from .records import read_records
from .model.text import join_title


def dataset(source: Union[str, os.PathLike, "pt.datasets.Dataset"], *, topics=None, qrels=None,
            split: Optional[str] = None) -> "pt.datasets.Dataset":
    """A PyTerrier dataset from a ``pt.get_dataset`` name or dataset object; a BRIGHT domain (``bright/biology``,
    ``bright/biology/reasoning``: ``bright_dataset()``, the copy opened last, else the hub's); a BEIR folder
    (``split``: its qrels file, default ``test`` or the only one; the topics are the queries judged in it); or a
    corpus file (JSONL or TSV, ``.gz`` or not, ``records``) with optional ``topics`` and TREC or BEIR ``qrels``
    files.

    Raises ``FileNotFoundError`` for a missing path, ``ValueError`` for a folder that is not a BEIR one or
    options that do not go with the source, ``FileFormatError`` for an empty or malformed first record."""
    if not isinstance(source, (str, os.PathLike)):
        _refuse_options(source, topics, qrels, split)
        return source
    path = Path(source)
    if not path.exists():
        name = str(source)
        found = _bright.domain_of(name)
        if found is not None:
            _refuse_options(name, topics, qrels, split)
            return bright_dataset(found[0], bright_dir=_BRIGHT_COPIES.get(found[0]), query=found[1])
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
    """The ir_datasets id that owns the documents (``beir/scifact`` for ``irds:beir/scifact/test``)."""
    name = dataset if isinstance(dataset, str) else dataset.irds_ref().dataset_id()
    return ir_datasets.docs_parent_id(name.removeprefix("irds:"))


def corpus_stamp(source) -> Optional[dict]:
    """What an index of the documents of ``source`` is built from: ``{"corpus": corpus_id}``, plus the
    ``"sha256"`` of a local corpus file's content; ``None`` for a dataset that is not an ir_datasets one."""
    ds = dataset(source)
    if not hasattr(ds, "irds_ref"):
        return None
    name = corpus_id(ds)
    if name not in _REGISTERED:
        return {"corpus": name}
    if name in _BRIGHT_FILES:  # its documents may be several files
        return {"corpus": name, "sha256": _stamp(*_BRIGHT_FILES[name]["documents"])}
    return {"corpus": name, "sha256": _content_digest(Path(ds.irds_ref().docs_handler().docs_path()))}


def must_rebuild(what: str, path, stored: Optional[dict], stamp: Optional[dict], *, rebuild_stale: bool) -> bool:
    """Whether the built index ``what`` at ``path``, stamped ``stored``, must be built again for the corpus of
    ``stamp`` (``corpus_stamp``): ``False`` when they agree. Another corpus: ``True`` with a warning if
    ``rebuild_stale``, else ``ValueError`` naming both. No stamp (not built by us): always ``ValueError``."""
    if stored == stamp:
        return False
    if stored is None:
        raise ValueError(f"the {what} at {path} carries no corpus stamp (built by hand, by another tool or by an "
                         f"older pyterrier_e2rank), so it is not ours to replace; move or delete it, or choose "
                         f"another index directory")
    why = (f"the {what} at {path} was built from the corpus {stored}, not from the one given now, {stamp}: "
           f"documents were added, removed or changed since")
    if not rebuild_stale:
        raise ValueError(f"{why}; pass rebuild_stale=True to build it again, or choose another index directory")
    warnings.warn(f"{why}; building it again", stacklevel=3)
    return True


@functools.lru_cache(maxsize=64)
def _content_digest_of(path: str, _stat: tuple) -> str:
    return file_sha256(path)


def _content_digest(path: Path) -> str:
    """The sha256 of a file's bytes, computed once per version (inode, size, mtime, ctime) in this process."""
    stat = path.stat()
    return _content_digest_of(str(path.resolve()), (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))


def corpus_iter(source, *, verbose: bool = False) -> Iterable[dict]:
    """``{"docno", "text"}`` of every document of ``source`` (``dataset``); sized, for progress bars."""
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
        self.fields = [f for f in ("title", "text") if f in self.dataset.irds_ref().docs_cls()._fields]
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


def dataset_part(ds, part: str, source) -> pd.DataFrame:
    """``ds.get_topics()`` or ``ds.get_qrels()`` (``part``) of the dataset opened from ``source``; ``ValueError``
    naming ``source`` when it has none."""
    try:
        return ds.get_topics() if part == "topics" else ds.get_qrels()
    except NotImplementedError:
        where = "queries.jsonl" if part == "topics" else "qrels/<split>.tsv"
        raise ValueError(f"dataset {str(source)!r} has no {part}: a BEIR folder needs {where}, a corpus file "
                         f"{part}=...; give a dataset with {part}") from None


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

class _CheckedFile:
    """An ir_datasets download (``path()``, ``stream()``) of a local file whose stream is ``lines()``."""

    def __init__(self, path: Path, lines: Callable[[], Iterator[str]]):
        self._path = path
        self._lines = lines

    def path(self, force: bool = True) -> Path:
        if force and not self._path.exists():
            raise FileNotFoundError(self._path)
        return self._path

    @contextlib.contextmanager
    def stream(self):
        yield io.BufferedReader(IterStream(f"{line}\n".encode("utf-8") for line in self._lines()))


def _records_file(path: Path, kind: str) -> _CheckedFile:
    """The records of a ``kind`` file (``records``) as the JSON lines ``{"id", "text"}`` ir_datasets reads; an
    empty or mistyped file is refused now, when the dataset is opened."""
    next(read_records(path, kind))
    return _CheckedFile(path, lambda: (json.dumps(r, ensure_ascii=False) for _, r in read_records(path, kind)))


def _stamp(*paths) -> str:
    """A digest of files' paths and contents: what a cached document store depends on."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.resolve()}\0{_content_digest(path)}\0".encode())
    return digest.hexdigest()[:16]


def _docs(records: _CheckedFile, stamp: str) -> JsonlDocs:
    """The documents of ``{"id", "text"}`` JSON lines, their store cached under the ``stamp`` of their files."""
    store = ir_datasets.util.home_path() / "local" / stamp / "records.pklz4"
    return JsonlDocs(records, doc_cls=GenericDoc, mapping={"doc_id": "id", "text": "text"}, docstore_path=str(store))


def _queries(records: _CheckedFile) -> JsonlQueries:
    return JsonlQueries(records, mapping={"query_id": "id", "text": "text"})


def _qrels(path: Path, error=FileFormatError):
    """ir_datasets' ``BeirQrels`` (a ``query-id corpus-id score`` header) or ``TrecQrels``, by the first line."""
    first = next(numbered_lines(path, error=error), None)
    if first is None:
        raise error(f"{path}: the file is empty")
    beir = first[1].strip() == "query-id\tcorpus-id\tscore"
    columns, form = (3, "query-id corpus-id score") if beir else (4, "qid iter docid relevance")

    def lines() -> Iterator[str]:
        for number, line in numbered_lines(path, error=error):
            if not (beir and number == 1):
                relevance = split_fields(line, columns, where=f"{path}:{number}", form=form, error=error)[-1]
                if not relevance.lstrip("-").isdigit():
                    raise error(f"{path}:{number}: expected '{form}' with an integer relevance, got {relevance!r}: "
                                f"{line!r}")
            yield line
    return BeirQrels(_CheckedFile(path, lines), {}) if beir else TrecQrels(_CheckedFile(path, lines), {})


def _first_existing(folder: Path, name: str) -> Optional[Path]:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.exists()), None)


def _beir_folder(folder: Path, split: Optional[str]) -> "pt.datasets.Dataset":
    corpus = _first_existing(folder, "corpus.jsonl")
    if corpus is None:
        raise ValueError(f"dataset {str(folder)!r} is a folder but not a BEIR folder: it has no corpus.jsonl (or "
                         f"corpus.jsonl.gz); give a BEIR folder, a corpus file or an ir_datasets name")
    queries = _first_existing(folder, "queries.jsonl")
    splits = sorted(p.name.removesuffix(".gz").removesuffix(".tsv") for p in (folder / "qrels").glob("*.tsv*"))
    if split is None and splits:
        split = "test" if "test" in splits or len(splits) != 1 else splits[0]
    if split is not None and split not in splits:
        raise FileNotFoundError(f"{folder / 'qrels' / (split + '.tsv')}: no such qrels file (split={split!r}); "
                                f"the folder has {splits or 'no qrels'}")
    files = [corpus] + ([] if queries is None else [queries])
    base = _register(_local_name(folder), _stamp(*files),
                     lambda: (_docs(_records_file(corpus, "document"), _stamp(corpus)),
                             None if queries is None else _queries(_records_file(queries, "query"))))
    if split is None:
        return pt.get_dataset(f"irds:{base}")
    qrels_file = _first_existing(folder / "qrels", f"{split}.tsv")

    def components(docs, queries):
        qrels = _qrels(qrels_file)
        return docs, None if queries is None else FilteredQueries(queries, qid_filter(qrels)), qrels
    return _split(base, split, _stamp(*files, qrels_file), components)


def _corpus_files(corpus: Path, topics, qrels) -> "pt.datasets.Dataset":
    extra = {what: Path(path) for what, path in (("topics", topics), ("qrels", qrels)) if path is not None}
    for what, path in extra.items():
        if not path.is_file():
            raise FileNotFoundError(f"{what}={str(path)!r}: no such file")
    base = _register(_local_name(corpus), _stamp(corpus), lambda: (_docs(_records_file(corpus, "document"),
                                                                        _stamp(corpus)),))
    if not extra:
        return pt.get_dataset(f"irds:{base}")
    files = hashlib.sha256("\0".join(str(p.resolve()) for p in extra.values()).encode()).hexdigest()[:8]
    return _split(base, files, _stamp(corpus, *extra.values()), lambda docs: (
        docs, _queries(_records_file(extra["topics"], "query")) if "topics" in extra else None,
        _qrels(extra["qrels"]) if "qrels" in extra else None))


def _local_name(source: Path) -> str:
    """``local/<name>-<hash of the absolute path>``: stable for a path, so its indexes are found again."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.resolve().name.split(".")[0]) or "corpus"
    return f"local/{stem}-{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]}"


#: ``{name: (stamp of its files, its components)}`` of the local datasets registered by this process.
_REGISTERED = {}


class _LocalFiles:
    """What ir_datasets' registry holds for a local dataset's name: the component methods of the current
    version of its files (``_REGISTERED``); the registry refuses a name given twice, so versions swap here."""

    def __init__(self, name: str):
        self.name = name

    def has(self, etype) -> bool:
        return hasattr(self, f"{ir_datasets.EntityType(etype).value}_handler")

    def __getattr__(self, attr: str):
        if attr.startswith("_") or attr == "name":  # copying and pickling ask before __init__ ran
            raise AttributeError(attr)
        for component in _REGISTERED[self.name][1]:
            if component is not None and hasattr(component, attr):
                return getattr(component, attr)
        raise AttributeError(attr)


def _register(name: str, stamp: str, components: Callable[[], tuple]) -> str:
    """Registers ``components()`` under ``name`` in ir_datasets' registry unless the same files (``stamp``)
    are there already; returns ``name``."""
    if name not in _REGISTERED or _REGISTERED[name][0] != stamp:
        _REGISTERED[name] = (stamp, components())
    if name not in ir_datasets.registry:
        ir_datasets.registry.register(name, _LocalFiles(name))
    return name


def _split(base: str, part: str, stamp: str, components: Callable[..., tuple]) -> "pt.datasets.Dataset":
    """The dataset ``base/part`` of ``components(*base's components)``: its documents are its collection's, as
    ``corpus_id`` needs."""
    return pt.get_dataset(f"irds:{_register(f'{base}/{part}', stamp, lambda: components(*_REGISTERED[base][1]))}")


# ---- BRIGHT ------------------------------------------------------------------------------------------

#: ``{registered name: {"examples": files, "documents": files}}`` of the BRIGHT domains this process opened.
_BRIGHT_FILES = {}
#: ``{domain: the folder of the local copy opened last}``.
_BRIGHT_COPIES = {}


def bright_dataset(domain: str, *, bright_dir=None, query: str = "query") -> "pt.datasets.Dataset":
    """BRIGHT's ``domain`` (``bright.DOMAINS``) from ``bright_dir`` (the dataset card's layout, parquet or JSONL;
    ``data.dataset("bright/<domain>")`` opens it again) or the hub, registered as ``local/bright-<domain>-<hash>``
    (the ``query`` field as topics) and ``.../reasoning`` (the ``reasoning`` field), the ``gold_ids`` as qrels of
    relevance 1; returns the one of ``query``.

    Raises ``ValueError`` for an unknown domain or query field, ``FileNotFoundError`` naming the folder without the
    domain's files, ``FileFormatError`` naming a file without a column."""
    if domain not in _bright.DOMAINS or query not in _bright.QUERY_FIELDS:
        raise ValueError(f"BRIGHT has no domain {domain!r} or query field {query!r}: the domains are "
                         f"{', '.join(_bright.DOMAINS)}; the query fields {', '.join(_bright.QUERY_FIELDS)}")
    files = _bright.domain_files(domain, bright_dir)
    for part, paths in files.items():  # columns checked now, by the first record of each file
        for path in paths:
            next(_bright.read_records([path], part), None)
    examples = files["examples"]
    base = _local_name(examples[0].parent.parent.resolve() / f"bright-{domain}")
    _BRIGHT_FILES[base] = files
    if bright_dir is not None:
        _BRIGHT_COPIES[domain] = bright_dir

    def texts(part, field):
        return _CheckedFile(files[part][0], lambda: (json.dumps({"id": str(r["id"]), "text": r[field]},
                                                                ensure_ascii=False)
                                                     for r in _bright.read_records(files[part], part)))

    def gold() -> Iterator[str]:
        for r in _bright.read_records(examples, "examples"):
            qid = identifier(r["id"], "qid", f"BRIGHT {domain}", error=FileFormatError)
            yield from (f"{qid} 0 {identifier(d, 'gold id', f'BRIGHT {domain} query {qid}', error=FileFormatError)} 1"
                        for d in r["gold_ids"])

    def components():
        return (_docs(texts("documents", "content"), _stamp(*files["documents"])),
                _queries(texts("examples", "query")), TrecQrels(_CheckedFile(examples[0], gold), {1: "gold"}))
    stamp = _stamp(*examples, *files["documents"])
    _register(base, stamp, components)
    reasoning = _split(base, "reasoning", stamp,
                       lambda docs, _, qrels: (docs, _queries(texts("examples", "reasoning")), qrels))
    return reasoning if query == "reasoning" else pt.get_dataset(f"irds:{base}")


def excluded_ids(ds) -> Dict[str, Set[str]]:
    """``{qid: docnos}`` BRIGHT removes from each query's ranking before evaluation, of a dataset opened by
    ``dataset``; ``{}`` for a dataset that is not a BRIGHT domain."""
    files = _BRIGHT_FILES.get(corpus_id(ds)) if hasattr(ds, "irds_ref") else None
    return {} if files is None else _bright.excluded_ids(files["examples"])
