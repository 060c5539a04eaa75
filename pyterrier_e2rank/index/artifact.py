"""The dense index: pyterrier-dr's FlexIndex layout (``pt_meta.json``, ``vecs.f4``, ``docnos.npids``) carrying the
fingerprint of the model that made its vectors and their digest, and the structures derived from them (each
file named by that digest); ``E2RankIndex`` opens it, refuses another model's vectors, and serves every search
through ``serve_methods``."""
import functools
import hashlib
import inspect
import json
import os
import re
import weakref
from pathlib import Path
from typing import Any, Callable, List, Sequence, Union

import numpy as np
import pandas as pd
import pyterrier as pt
from npids import Lookup
from pyterrier_dr import FlexIndex

from ..model import provenance
from .ann import AnnSearch
from .docnos import DocnoLookup
from ..equality import EqualBySettings
from ..io import CorruptArtifact, atomic_directory, atomic_file, thread_lock
from .retriever import E2RankRetriever, FlexStage, IndexStage
from .text import TEXT_FILES, TextLoader, TextStore, damaged

META = "pt_meta.json"
VECTORS = "vecs.f4"
DOCNOS = "docnos.npids"
#: pyterrier_e2rank 0.1's own layout, recognised to say how to move on.
LEGACY_FILES = ("vectors.f32", "docnos.npy")
#: The file name of a structure derived from the vectors: the first 16 hex digits of their digest, and its name.
DERIVED = "derived-{}-{}"
#: Structures stored beside the vectors by pyterrier-dr's FlexIndex and by pyterrier_e2rank 0.3 (with a
#: ``<name>.source.json``), and a killed build's lock and temporary files: the index's own, never read.
STRUCTURES = (r"hnsw_n-\d+_ef-\d+\.(?:faiss|graph)", r"ivf_nlist-\d+_train-\d+\.faiss", r"corpusgraph_k\d+",
              r"scann_leaves-\d+_train-\d+\.scann", r"voyager-\w+-\d+-\d+-\d+-\w+\.voyager",
              r"\d+_ef-\d+-SimFn\.\w+\.flatnav", r"kannolo_hnsw-\d+_ef-\d+",
              r"ivfpq_nlist-\d+_m-\d+_nbits-\d+_train-\d+\.faiss", r"flat_fp16\.faiss",
              r"hnsw-fp16_n-\d+_ef-\d+\.faiss", r"sq8_train-\d+\.faiss", r"binary\.faiss")
_STRUCTURE = "(?:" + "|".join(STRUCTURES) + r")(?:\.source\.json)?"
_OWN = re.compile(rf"\.?{DERIVED.format('[0-9a-f]{16}', '.+')}|{_STRUCTURE}"
                  rf"|\.{_STRUCTURE}\.(?:lock|tmp-\w+(?:-old)?|\w+\.tmp)")


def own_entries(directory: Path) -> set:
    """The entries of an index directory that belong to the index (an overwrite replaces them)."""
    return {META, VECTORS, DOCNOS, *TEXT_FILES, *LEGACY_FILES} | {p.name for p in directory.iterdir()
                                                                   if _OWN.fullmatch(p.name)}


class IndexReplaced(RuntimeError):
    """The index directory was replaced by a rebuild since this ``E2RankIndex`` opened it."""


#: The public methods of an ``E2RankIndex`` (FlexIndex's, pyterrier-dr 0.8.1, and ours) that hand out no
#: transformer of the index: every other public method is served (``serve_methods``).
NOT_TRANSFORMERS = frozenset({
    # data (get_corpus_iter's records tagged with the index's model), the text loader (it reads no vectors), checks
    "built", "payload", "docnos", "np_vecs", "torch_vecs", "get_corpus_iter", "vectors", "texts", "text_field",
    "text_loader", "check_model", "derived", "structures", "structure_path",
    # corpus graphs (checked structures: ann.AnnSearch)
    "corpus_graph", "faiss_hnsw_graph",
    # indexing: refused (an E2Rank index is built by model.indexer)
    "index", "indexer", "index_inputs", "transform_iter",
    # the index itself as a transformer: index(frame) is retriever() or scorer(), both served
    "transform", "transform_gen", "search", "compile", "parallel", "get_parameter", "set_parameter",
    # packaging the artifact
    "build_package", "to_hf", "to_p2p", "to_zenodo",
})


def serve_methods(cls):
    """``cls`` with each public method not in ``NOT_TRANSFORMERS`` (its own and FlexIndex's, a later
    pyterrier-dr's too) handing out a transformer that is no ``IndexStage`` wrapped in ``FlexStage``; a transformer
    passed to such a method (LADR's ``dense_scorer``) must be one this index handed out, else ValueError."""
    def serve(name, method):
        @functools.wraps(method)
        def method_served(self, *args, **options):
            for value in (*args, *options.values()):
                if isinstance(value, pt.Transformer) and not (isinstance(value, IndexStage) and value.index == self):
                    raise ValueError(f"{self!r}.{name}() was given {value!r}, which is not a transformer "
                                     f"of this index: it would score this index's rows with other vectors; pass one "
                                     f"this index hands out (e.g. dense_scorer={self!r}.scorer()), or leave it out")
            result = method(self, *args, **options)
            return FlexStage(self, result) if isinstance(result, pt.Transformer) and not isinstance(
                result, IndexStage) else result
        method_served.served = True
        return method_served
    for name in dir(cls):
        method = inspect.getattr_static(cls, name)
        if not name.startswith("_") and name not in NOT_TRANSFORMERS and inspect.isfunction(method):
            setattr(cls, name, serve(name, method))
    return cls


@serve_methods
class E2RankIndex(EqualBySettings, AnnSearch, FlexIndex):
    """A FlexIndex of E2Rank document vectors, opened at first use from one version of the directory, its files
    checked against each other (``CorruptArtifact`` naming the path); its searches (``ann.AnnSearch``) and
    FlexIndex's scorers refuse another model's query vectors. ``pt.Artifact.load`` and ``from_url``/``from_hf``
    open it as an ``E2RankIndex`` (the ``pyterrier.artifact`` entry point of its type and format)."""

    ARTIFACT_TYPE = "dense_index"
    #: pyterrier-dr's ``"flex"`` layout with the model's record, under a format of its own for ``pt.Artifact.load``.
    ARTIFACT_FORMAT = "e2rank_flex"
    ARTIFACT_PACKAGE_HINT = "pyterrier-e2rank"

    def __init__(self, path, *, verbose: bool = False):
        super().__init__(path, sim_fn="dot", verbose=verbose)
        self._version = None

    def __repr__(self):
        return f"E2RankIndex({str(self.path)!r})"

    def _settings(self) -> tuple:
        return (Path(self.path).resolve(),)

    def built(self) -> bool:
        return (Path(self.path) / META).is_file()

    def payload(self, return_dvecs: bool = True, return_docnos: bool = True):
        """FlexIndex's ``[docnos, vectors, meta]`` (as asked), opened and verified once; ``docnos`` is a
        ``DocnoLookup``."""
        if self._meta is None:
            self._version, self._docnos, self._dvecs, self._meta = _open_verified(Path(self.path))
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

    @property
    def source(self) -> str:
        """What the vectors are: ``sha256:<digest>`` of the docnos and vectors (``IndexWriter``), or for an index
        without one (a plain FlexIndex) ``files:<digest>`` of its metadata and its files' sizes and times."""
        self.payload(return_dvecs=False, return_docnos=False)
        return self._version.source

    def vectors(self, docnos: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``docnos``, shape ``(len(docnos), dim)``; a KeyError names the docnos that
        are not in the index (exactly: ``"007"`` is not ``"7"``)."""
        docnos = [str(d) for d in docnos]
        lookup, vectors = self.payload(return_dvecs=True, return_docnos=True)[:2]
        return np.asarray(vectors[lookup.inv[docnos]])

    def text_field(self) -> str:
        """The field whose text the index keeps; ValueError naming the ways to give the text when it keeps none."""
        text = self.meta.get("e2rank", {}).get("text")
        if not isinstance(text, dict) or not isinstance(text.get("field"), str):
            raise ValueError(f"the index at {self.path} keeps no document text (store_text=False, or built by 0.3): "
                             f"add a 'text' column before this stage (pt.text.get_text(dataset, 'text') or "
                             f"DocumentText(dataset)), or rebuild it with model.indexer(path, mode='overwrite')")
        return text["field"]

    def texts(self, docnos: Sequence[str]) -> List[str]:
        """The stored texts of ``docnos``; ValueError naming docnos not in the index, or when it keeps no text."""
        self.text_field()
        try:
            rows = self.docnos().rows([str(d) for d in docnos])
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        return self._version.text.texts(rows)

    def text_loader(self, fields: Union[str, List[str]] = "*", *, verbose: bool = False) -> pt.Transformer:
        """PyTerrier's text loader (``pt.text.get_text(index)``): adds the stored text by ``docno``."""
        return TextLoader(self, fields, verbose=verbose)

    def _load_docids(self, inp: pd.DataFrame) -> np.ndarray:
        """Rows of the index for a frame's ``docno`` (never its ``docid``), for FlexIndex's scorers."""
        pt.validate.columns(inp, includes=["docno"], context=self)
        return self.docnos().inv[inp["docno"].tolist()]

    def check_model(self, model) -> None:
        """Refuse a model whose document vectors would differ from the stored ones."""
        provenance.check_fingerprint(self.fingerprint, model.fingerprint(), f"the index at {self.path}")

    def derived(self, name: str, build: Callable, *, load: Callable[[Path], Any], directory: bool = False,
                store: bool = True):
        """The structure ``name`` of the vectors this object opened: ``load(path)`` when stored, else ``build(target)``
        (an open binary file; a staging directory with ``directory``; ``None`` without ``store``; returns it, or
        ``None`` to read it back), stored under a name carrying the vectors' digest (``structure_path``). Raises
        ``IndexReplaced`` when a rebuild swapped in since; ``ArtifactLocked`` when another process builds it."""
        path = self._version_path(name)
        if path.exists():
            return load(path)
        if not self._version.is_at(Path(self.path)):
            raise IndexReplaced(f"the index at {self.path} was rebuilt after this E2RankIndex opened it; open it "
                                f"again (E2RankIndex(path)) to use the new vectors")
        if not store:
            return build(None)
        with thread_lock(path):
            if path.exists():  # another thread stored it meanwhile
                return load(path)
            with (atomic_directory(path, owned=os.listdir, overwrite=True, what=f"structure {name}") if directory
                  else atomic_file(path, mode="wb")) as target:  # one another process stored meanwhile is the same
                built = build(target)
        return load(path) if built is None else built

    def structures(self) -> List[str]:
        """The names of the structures stored for the vectors this object opened."""
        prefix = self._version_path("").name
        return sorted(p.name[len(prefix):] for p in self._version.base.iterdir() if p.name.startswith(prefix))

    def structure_path(self, name: str) -> Path:
        """Where the structure ``name`` of these vectors is stored: its file name carries their digest."""
        return Path(self.path) / self._version_path(name).name

    def _version_path(self, name: str) -> Path:
        self.payload(return_dvecs=False, return_docnos=False)
        return self._version.base / DERIVED.format(self.source.split(":")[1][:16], name)

    def retriever(self, *, num_results: int = 1000, verbose: bool = False) -> pt.Transformer:
        """Q frame with ``query_vec`` -> top ``num_results`` by exact dot product (``E2RankRetriever``)."""
        return E2RankRetriever(self, num_results=num_results, verbose=verbose)

    def vec_loader(self) -> pt.Transformer:
        """Adds ``doc_vec`` by ``docno``, tagged with the index's model (``DocnoVectorLoader``)."""
        return DocnoVectorLoader(self)

    np_vec_loader = vec_loader

    def get_corpus_iter(self, start_idx=None, stop_idx=None, verbose=True):
        """FlexIndex's records of ``docno`` and ``doc_vec``, each vector tagged with the index's model
        (``doc_vec_model``: another model's indexer refuses them)."""
        tag = None if self.fingerprint is None else provenance.make_tag(self.fingerprint, provenance.STORED)
        for record in FlexIndex.get_corpus_iter(self, start_idx, stop_idx, verbose):
            yield record if tag is None else {**record, provenance.tag_column("doc_vec"): tag}

    def indexer(self, *args, **kwargs):
        raise TypeError(f"an E2Rank index records the model that made its vectors: build {self.path} with "
                        f"model.indexer(path) (it also takes doc_vec frames from model.doc_encoder())")

    def _package_files(self):
        """What ``build_package`` (and ``to_hf``) packs: the files of the version this object opened that the index
        reads (its metadata, vectors, docnos, text and the structures of these vectors), as ``(relative path, path)``;
        never a file that is not the index's own."""
        prefix = self._version_path("").name
        base = self._version.base
        for name in sorted({META, VECTORS, DOCNOS, *TEXT_FILES, *(prefix + s for s in self.structures())}):
            if (base / name).is_dir():
                yield from ((str(p.relative_to(base)), str(p)) for p in sorted((base / name).rglob("*")) if p.is_file())
            elif (base / name).is_file():
                yield name, str(base / name)


def index_path(index: Union[str, os.PathLike, FlexIndex]) -> Path:
    """The directory of an index given as an index, a FlexIndex or a path; TypeError for anything else."""
    if not isinstance(index, (str, os.PathLike, FlexIndex)):
        raise TypeError(f"index must be an E2RankIndex, a FlexIndex or the path of its directory, got {index!r}")
    return Path(index.index_path if isinstance(index, FlexIndex) else index)


def as_index(index: Union[str, os.PathLike, FlexIndex]) -> E2RankIndex:
    """An ``E2RankIndex`` to read, from an index, a FlexIndex or a path (the one coercion everything uses)."""
    if isinstance(index, E2RankIndex):
        return index
    path = index_path(index)
    if any((path / name).exists() for name in LEGACY_FILES) and not (path / VECTORS).exists():
        raise CorruptArtifact(f"the index at {path} is in pyterrier_e2rank 0.1's own layout, which 0.2 replaced by "
                              f"pyterrier-dr's FlexIndex layout: rebuild it with model.indexer({str(path)!r}, "
                              f"mode='overwrite')")
    return E2RankIndex(path)


class DocnoVectorLoader(EqualBySettings, IndexStage):
    """Adds each row's stored ``doc_vec``, looked up by ``docno``, tagged with the index's model; a ``doc_vec``
    the frame carries is passed on if it is this index's model's, else refused (never replaced silently)."""

    def __init__(self, index: E2RankIndex):
        self.index = index

    def __repr__(self):
        return f"{self.index!r}.vec_loader()"

    def _settings(self) -> tuple:
        return (self.index,)

    def serve(self, inp: pd.DataFrame) -> pd.DataFrame:
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


class _Version:
    """One version of an index directory, held open while an ``E2RankIndex`` uses it: ``base`` reaches its files
    after a rebuild swapped another version in at its path (``/proc/self/fd``; else the path itself)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self.close = weakref.finalize(self, os.close, self.fd)  # closes it once: when called, or with the object
        self.base = Path(f"/proc/self/fd/{self.fd}") if os.path.isdir("/proc/self/fd") else path
        self.source = self.text = None

    def is_at(self, path: Path) -> bool:
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return False
        opened = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)

    def __deepcopy__(self, _memo):  # one descriptor, closed once: copies of an index share it
        return self


#: Times an open retries when a rebuild replaced the directory while it read it.
_OPEN_ATTEMPTS = 3


def _open_verified(path: Path):
    """``(version, docnos, vectors, meta)`` of one version of the index directory, checked against each
    other. A rebuild that removes the version being read (its files vanish) makes it read the new one."""
    for _ in range(_OPEN_ATTEMPTS):
        if not (path / META).is_file():
            raise FileNotFoundError(f"no E2Rank index at {path} (missing {META}); build it with model.indexer(path)")
        version = _Version(path)
        try:
            return (version, *_read_verified(path, version))
        except FileNotFoundError:
            version.close()
    raise IndexReplaced(f"the index at {path} was replaced by a rebuild while it was being opened, "
                        f"{_OPEN_ATTEMPTS} times; open it again when the rebuilds are over")


def _read_verified(path: Path, version: _Version):
    base = version.base
    raw_meta = (base / META).read_bytes()
    try:
        meta = json.loads(raw_meta.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise damaged(path, f"{META} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") not in ("flex", E2RankIndex.ARTIFACT_FORMAT) or any(
            not isinstance(meta.get(k), int) or isinstance(meta.get(k), bool) or meta[k] < 1
            for k in ("doc_count", "vec_size")):
        raise damaged(path, f"{META} is not a FlexIndex's (format 'flex' or {E2RankIndex.ARTIFACT_FORMAT!r} with "
                            f"positive 'doc_count' and 'vec_size')")
    count, dim = meta["doc_count"], meta["vec_size"]
    try:
        docnos = DocnoLookup(Lookup(base / DOCNOS), path)
    except FileNotFoundError:
        raise
    except Exception as e:  # npids raises several types for a damaged file
        raise damaged(path, f"{DOCNOS} cannot be read ({type(e).__name__}: {e})") from None
    if len(docnos) != count:
        raise damaged(path, f"{DOCNOS} holds {len(docnos)} docnos, the metadata says {count}")
    with open(base / VECTORS, "rb") as vector_file:
        vector_stat = os.fstat(vector_file.fileno())
        if vector_stat.st_size != count * dim * 4:
            raise damaged(path, f"{VECTORS} has {vector_stat.st_size} bytes, not doc_count x vec_size x 4 = {count} x "
                                f"{dim} x 4 = {count * dim * 4}")
        vectors = np.memmap(vector_file, dtype=np.float32, mode="r", shape=(count, dim))
    if isinstance(meta.get("e2rank"), dict) and "text" in meta["e2rank"]:
        version.text = TextStore(base, count, path)
    digest = meta.get("e2rank", {}).get("digest") if isinstance(meta.get("e2rank"), dict) else None
    if isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest):
        version.source = f"sha256:{digest}"
    else:
        docno_stat = os.stat(base / DOCNOS)
        stamp = [raw_meta.hex(), vector_stat.st_size, vector_stat.st_mtime_ns, docno_stat.st_size,
                 docno_stat.st_mtime_ns]
        version.source = f"files:{hashlib.sha256(json.dumps(stamp).encode()).hexdigest()}"
    return docnos, vectors, meta
