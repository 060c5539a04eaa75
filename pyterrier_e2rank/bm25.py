"""BM25 first stages: PISA (no Java; the default) or Terrier (for users with Java and its jars).

Pyserini's BEIR setting is k1=0.9, b=0.4. Like Pyserini and Terrier, ``pisa_bm25`` counts a query term
as often as it occurs in the query (PISA alone would count it once); PISA uses porter2 stemming and, by
default, Terrier's stopword list.
"""
import contextlib
import ctypes
import functools
import os
import sys

import pyterrier as pt

from .checks import without_empty_queries
from .data import corpus_iter, load_dataset


@contextlib.contextmanager
def _quiet_fds(quiet: bool):
    """Points the process's fds 1 and 2 at /dev/null while ``quiet``: PISA logs from C++, which writes
    to the fds directly, so redirecting ``sys.stdout`` cannot catch it (nor Jupyter's fd capture avoid it).
    Process-wide while it lasts; the fds are restored on exceptions too."""
    if not quiet:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers go to /dev/null, not out after the restore
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _choice(name: str, value, enum):
    """``enum(value)``, with an error that names the argument and lists the choices."""
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected one of {[e.value for e in enum]}") from None


@functools.cache
def _pisa_retrieve_class():
    """The class, made on first use: importing pyterrier_pisa (~0.5 s) waits until PISA is wanted."""
    from pyterrier_pisa import PisaRetrieve

    class QuietPisaRetrieve(PisaRetrieve):
        """PisaRetrieve that is silent unless ``verbose``, skips empty queries with a warning naming them
        (``checks.without_empty_queries``), and whose rank cutoff (``% k``) keeps every option
        (PisaRetrieve's own drops ``precompute_impact``)."""

        def reset_retrieval_context(self, force=False):
            with _quiet_fds(not self.verbose):
                super().reset_retrieval_context(force)

        def transform(self, queries):
            if "query_toks" not in queries.columns and "query" in queries.columns:
                queries = without_empty_queries(queries, self)  # as PyTerrier's own retrievers: a warning, no rows
            with _quiet_fds(not self.verbose):
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
              precompute_impact: bool = False, threads: int = 1, verbose: bool = False) -> pt.Transformer:
    """BM25 over a PISA index at ``index_dir``, built from ``dataset``'s corpus if not there yet.

    Options (PISA's, keyword-only):

    - ``query_weighted``: a query term counts as often as it occurs in the query, as in Pyserini and
      Terrier; ``False`` counts each distinct term once (PISA's own default), which costs long, repetitive
      queries dearly.
    - ``stops``: query stopwords, ``"terrier"``, ``"lucene"`` (Pyserini's list) or ``"none"``. PISA indexes
      every token, so stopwords still count in document lengths.
    - ``stemmer``: ``"porter2"``, ``"krovetz"`` or ``"none"``; fixed when the index is built.
    - ``query_algorithm``: ``"block_max_wand"`` and the other dynamic-pruning algorithms return the exact
      top ``num_results``; ``"ranked_or"`` scores every matching document; ``*ranked_and`` need every term.
    - ``index_encoding``: posting compression (e.g. ``"block_simdbp"``, ``"ef"``); any gives the same scores.
    - ``precompute_impact``: search precomputed, quantised BM25 impacts: faster; scores become integers
      on another scale, the ranking nearly the same.
    - ``threads``: for indexing and for searching.
    - ``verbose``: progress bars and PISA's log; when ``False`` PISA's C++ log (fds 1 and 2) is silenced.

    Unlike Lucene's ``log(1 + (N - df + 0.5) / (df + 0.5))``, PISA's idf is ``log((N - df + 0.5) / (df + 0.5))``
    floored at 1e-6: a term in more than half of the documents adds (almost) nothing.
    """
    from pyterrier_pisa import PisaIndex, PisaIndexEncoding, PisaQueryAlgorithm, PisaStemmer, PisaStopwords
    if k1 < 0:
        raise ValueError(f"k1={k1!r}: must be >= 0")
    if not 0 <= b <= 1:
        raise ValueError(f"b={b!r}: must be in [0, 1]")
    if num_results < 1:
        raise ValueError(f"num_results={num_results!r}: must be >= 1")
    if threads < 1:
        raise ValueError(f"threads={threads!r}: must be >= 1")
    stemmer = _choice("stemmer", stemmer, PisaStemmer)
    existing = PisaIndex(index_dir)
    if existing.built() and existing.stemmer != stemmer:  # PISA would warn, then stem queries unlike the index
        raise ValueError(f"stemmer={stemmer.value!r}: the index at {index_dir} was built with {existing.stemmer.value!r}")
    index = PisaIndex(index_dir, text_field="text", stemmer=stemmer, threads=threads,
                      index_encoding=_choice("index_encoding", index_encoding, PisaIndexEncoding),
                      stops=_choice("stops", stops, PisaStopwords))
    query_algorithm = _choice("query_algorithm", query_algorithm, PisaQueryAlgorithm)
    if not index.built():
        if dataset is None:
            raise FileNotFoundError(f"no PISA index at {index_dir}, and no dataset to build it from")
        docs = corpus_iter(load_dataset(dataset), verbose=verbose)
        with _quiet_fds(not verbose):
            index.index(docs)
    return _pisa_retrieve_class()(
        index, "bm25", bm25_k1=k1, bm25_b=b, num_results=num_results, verbose=verbose, threads=threads,
        query_algorithm=query_algorithm, query_weighted=query_weighted, precompute_impact=precompute_impact)


def terrier_bm25(index_dir: str, dataset=None, *, k1: float = 0.9, b: float = 0.4, num_results: int = 100,
                 verbose: bool = False) -> pt.Transformer:
    """BM25 with Terrier (needs Java and Terrier's jars, fetched from Maven on first use)."""
    if not os.path.exists(os.path.join(index_dir, "data.properties")):
        if dataset is None:
            raise FileNotFoundError(f"no Terrier index at {index_dir}, and no dataset to build it from")
        indexer = pt.terrier.IterDictIndexer(os.path.abspath(index_dir), meta={"docno": 64})
        indexer.index(corpus_iter(load_dataset(dataset), verbose=verbose))
    return pt.terrier.Retriever(os.path.abspath(index_dir), wmodel="BM25", num_results=num_results,
                                controls={"bm25.k_1": str(k1), "bm25.b": str(b)}, verbose=verbose)


BM25_ENGINES = {"pisa": pisa_bm25, "terrier": terrier_bm25}
