"""BM25 first stages: PISA (no Java; the default) or Terrier, with Pyserini's BEIR setting k1=0.9, b=0.4
(pt_docs/datasets-and-bm25.rst)."""
import contextlib
import ctypes
import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import pyterrier as pt

from .checks import without_empty_queries
from .data import corpus_iter, corpus_stamp, must_rebuild
from .io import atomic_directory, read_json_object, writer_lock


@contextlib.contextmanager
def _quiet_fds():
    """fds 1 and 2 at /dev/null, ``sys.stdout``/``sys.stderr`` on copies of them (pt_docs/datasets-and-bm25.rst)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {1: os.dup(1), 2: os.dup(2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    swapped = {}  # name: (the stream, its replacement)
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(devnull, fd)
            stream = getattr(sys, name)
            if _fileno(stream) == fd:
                swapped[name] = stream, open(os.dup(saved[fd]), "w", buffering=1, encoding=stream.encoding,
                                             errors=stream.errors)
                setattr(sys, name, swapped[name][1])
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers go to /dev/null, not out after the restore
        for name, (stream, replacement) in swapped.items():
            replacement.close()  # flushes; a progress bar still holding it is disabled by tqdm, not broken
            if getattr(sys, name) is replacement:
                setattr(sys, name, stream)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def _fileno(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: pytest's and Jupyter's streams
        return None


def _choice(name: str, value, enum):
    """``enum(value)``, with an error that names the argument and lists the choices."""
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected one of {[e.value for e in enum]}") from None


@functools.cache
def _pisa_retrieve_class():
    """The class, made on first use (importing pyterrier_pisa is slow)."""
    from pyterrier_pisa import PisaRetrieve

    class QuietPisaRetrieve(PisaRetrieve):
        """PisaRetrieve without its C++ log, skipping empty queries with a warning, its options kept by ``% k``."""
        schematic = {"label": "BM25 (PISA)"}

        def reset_retrieval_context(self, force=False):
            with _quiet_fds():
                super().reset_retrieval_context(force)

        def transform(self, queries):
            if "query_toks" not in queries.columns and "query" in queries.columns:
                queries = without_empty_queries(queries, self)  # as PyTerrier's own retrievers: a warning, no rows
            with _quiet_fds():
                return super().transform(queries)

        def fuse_rank_cutoff(self, k: int):
            if k < self.num_results:
                return QuietPisaRetrieve(
                    self.index, self.scorer, num_results=k, threads=self.threads, verbose=self.verbose,
                    stops=self.stops, query_algorithm=self.query_algorithm, query_weighted=self.query_weighted,
                    toks_scale=self.toks_scale, precompute_impact=self.precompute_impact, **self.retr_args)
            return None

    return QuietPisaRetrieve


def pisa_bm25(index_dir: str, dataset=None, *, k1: float = 0.9, b: float = 0.4, num_results: int = 100,
              query_weighted: bool = True, stops: str = "terrier", stemmer: str = "porter2",
              query_algorithm: str = "block_max_wand", index_encoding: str = "block_simdbp",
              precompute_impact: bool = False, threads: int = 1, rebuild_stale: bool = False,
              verbose: bool = False) -> pt.Transformer:
    """BM25 over a PISA index at ``index_dir``, built (aside, with its corpus stamp) from ``dataset``'s corpus
    if not there yet, reused if built from the same corpus (``data.must_rebuild``; without ``dataset``, as it is).
    The other arguments are PISA's (pt_docs/datasets-and-bm25.rst); ``verbose`` shows our progress bars only.

    Raises ``ValueError`` for an option out of range, an index of another corpus (unless ``rebuild_stale``)
    or without a stamp, ``FileNotFoundError`` for no index and no dataset."""
    from pyterrier_pisa import PisaIndex, PisaIndexEncoding, PisaQueryAlgorithm, PisaStemmer, PisaStopwords
    for name, value, valid, wanted in (("k1", k1, k1 >= 0, ">= 0"), ("b", b, 0 <= b <= 1, "in [0, 1]"),
                                       ("num_results", num_results, num_results >= 1, ">= 1"),
                                       ("threads", threads, threads >= 1, ">= 1")):
        if not valid:
            raise ValueError(f"{name}={value!r}: must be {wanted}")
    stemmer = _choice("stemmer", stemmer, PisaStemmer)
    options = dict(text_field="text", stemmer=stemmer, threads=threads,
                   index_encoding=_choice("index_encoding", index_encoding, PisaIndexEncoding),
                   stops=_choice("stops", stops, PisaStopwords))
    query_algorithm = _choice("query_algorithm", query_algorithm, PisaQueryAlgorithm)
    existing = PisaIndex(index_dir)
    if existing.built() and existing.stemmer != stemmer:  # PISA would warn, then stem queries unlike the index
        raise ValueError(f"stemmer={stemmer.value!r}: the index at {index_dir} was built with "
                         f"{existing.stemmer.value!r}")
    if dataset is None and not existing.built():
        raise FileNotFoundError(f"no PISA index at {index_dir}, and no dataset to build it from")
    stamp = None if dataset is None else corpus_stamp(dataset)
    reusable = dataset is None or (existing.built() and _stored_stamp(index_dir) == stamp)  # no lock needed
    if not reusable:
        with writer_lock(index_dir):  # decided under the lock: the writer that held it may have built it since
            if not PisaIndex(index_dir).built() or must_rebuild(
                    "PISA index", index_dir, _stored_stamp(index_dir), stamp, rebuild_stale=rebuild_stale):
                with atomic_directory(index_dir, owned=_pisa_entries, overwrite=True, what="PISA index") as staging:
                    with _quiet_fds():  # the progress bar is made inside: one made before would write to /dev/null
                        PisaIndex(str(staging), **options).index(corpus_iter(dataset, verbose=verbose))
                    _write_stamp(staging, stamp)
    return _pisa_retrieve_class()(
        PisaIndex(index_dir, **options), "bm25", bm25_k1=k1, bm25_b=b, num_results=num_results, verbose=verbose,
        threads=threads, query_algorithm=query_algorithm, query_weighted=query_weighted,
        precompute_impact=precompute_impact)


#: Our record, in a BM25 index directory, of the corpus the index was built from (``data.corpus_stamp``).
CORPUS_STAMP_FILE = "e2rank_corpus.json"
#: The entries of a PISA index directory: PISA's own, those its searches derive (``bm25.<settings>...``), ours.
_PISA_PATTERNS = ("pt_meta.json", "pt_pisa_config.json", "fwd", "fwd.*", "inv.*", "bm25.*", CORPUS_STAMP_FILE)


def _pisa_entries(directory: Path) -> set:
    return {p.name for pattern in _PISA_PATTERNS for p in directory.glob(pattern)}


def _write_stamp(directory: Path, stamp: Optional[dict]) -> None:
    if stamp is not None:
        (Path(directory) / CORPUS_STAMP_FILE).write_text(json.dumps(stamp, indent=2), encoding="utf-8")


def _stored_stamp(directory) -> Optional[dict]:
    return read_json_object(Path(directory) / CORPUS_STAMP_FILE, "a corpus stamp")


def terrier_bm25(index_dir: str, dataset=None, *, k1: float = 0.9, b: float = 0.4, num_results: int = 100,
                 rebuild_stale: bool = False, verbose: bool = False) -> pt.Transformer:
    """BM25 with Terrier (Java; its jars fetched on first use), reused, refused or built again as ``pisa_bm25``."""
    index_dir = os.path.abspath(index_dir)
    built = os.path.exists(os.path.join(index_dir, "data.properties"))
    if dataset is None and not built:
        raise FileNotFoundError(f"no Terrier index at {index_dir}, and no dataset to build it from")
    stamp = None if dataset is None else corpus_stamp(dataset)
    if dataset is not None and (not built or must_rebuild("Terrier index", index_dir, _stored_stamp(index_dir),
                                                          stamp, rebuild_stale=rebuild_stale)):
        indexer = pt.terrier.IterDictIndexer(index_dir, meta={"docno": 64}, overwrite=True)
        indexer.index(corpus_iter(dataset, verbose=verbose))
        _write_stamp(Path(index_dir), stamp)
    return pt.terrier.Retriever(index_dir, wmodel="BM25", num_results=num_results,
                                controls={"bm25.k_1": str(k1), "bm25.b": str(b)}, verbose=verbose)


BM25_ENGINES = {"pisa": pisa_bm25, "terrier": terrier_bm25}
