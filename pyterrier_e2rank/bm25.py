"""BM25 first stages: PISA (no Java; the default) or Terrier (for users with Java and its jars).

Pyserini's BEIR setting is k1=0.9, b=0.4; PISA uses porter2 stemming and, by default, Terrier's
stopword list.
"""
import os

import pyterrier as pt

from .data import corpus_iter, load_dataset


def pisa_bm25(index_dir: str, dataset=None, *, k1: float = 0.9, b: float = 0.4, num_results: int = 100,
              stemmer: str = "porter2", threads: int = 1, verbose: bool = False) -> pt.Transformer:
    """BM25 over a PISA index at ``index_dir``, built from ``dataset``'s corpus if not there yet."""
    from pyterrier_pisa import PisaIndex
    index = PisaIndex(index_dir, text_field="text", stemmer=stemmer, threads=threads)
    if not index.built():
        if dataset is None:
            raise FileNotFoundError(f"no PISA index at {index_dir}, and no dataset to build it from")
        index.index(corpus_iter(load_dataset(dataset), verbose=verbose))
    return index.bm25(k1=k1, b=b, num_results=num_results, verbose=verbose)


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
