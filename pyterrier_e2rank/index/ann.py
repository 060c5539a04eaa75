"""Approximate nearest-neighbour search over an E2Rank index with FAISS, every method of it in ``AnnSearch``:
what FlexIndex lacks (IVF-PQ, float16 storage, GPU search of both; int8 and sign-bit copies searched exhaustively),
and FlexIndex's own FAISS searches and corpus graphs, over structures stored through ``E2RankIndex.derived``."""
import math
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import pyterrier as pt
from pyterrier_dr import FlexIndex

from ..checks import positive_int
from ..equality import EqualBySettings
from ..io import CorruptArtifact
from .retriever import VectorSearch

BLOCK = 65536  # vectors added per call while building: bounded memory on any corpus size
QUERY_BATCH = 64  # queries searched at once: bounds the memory of the candidates rescored
_POINTS_PER_CENTROID = 39  # FAISS's k-means asks for this many training vectors per centroid
#: The vectors a scalar quantizer's ranges are taken from, at most (all of a smaller index).
INT8_TRAIN_SAMPLE = 100_000


def faiss_module():
    """The ``faiss`` module; ImportError saying what to install."""
    try:
        import faiss
    except ImportError:
        raise ImportError("ANN search needs FAISS: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


class FaissAnnRetriever(EqualBySettings, VectorSearch):
    """Q frame with ``query_vec`` -> the top ``num_results`` documents (``docno``, ``score``, ``rank``, best first)
    of the FAISS structure ``name`` of the index, made on first use by ``make(faiss)``, trained on
    ``train_sample`` vectors, filled with all (their sign bits if ``binary``); ``rescore``: that many candidates
    ranked again by the exact dot product with the stored vectors."""

    def __init__(self, index, name: str, make, *, method: str, num_results: int, n_probe: Optional[int] = None,
                 ef_search: Optional[int] = None, rescore: Optional[int] = None, gpu: Optional[bool] = None,
                 binary: bool = False, train_sample: Optional[int] = None):
        self.index = index
        self.binary = binary
        self.name = name
        self.method = method
        self.num_results = positive_int(num_results, "num_results")
        self.n_probe, self.ef_search = n_probe, ef_search
        self.rescore = positive_int(rescore, "rescore", minimum=self.num_results, allow_none=True)
        faiss = faiss_module()
        if gpu and faiss.get_num_gpus() == 0:
            raise ValueError("gpu=True, but FAISS sees no GPU (faiss-gpu not installed, or no device)")
        self.gpu = faiss.get_num_gpus() > 0 if gpu is None else bool(gpu)
        key = ("e2rank_ann", name, self.gpu)

        def build(out):
            structure = make(faiss)
            if train_sample is not None:
                structure.train(sample(index, train_sample))
            add_all(index, structure, sign_codes if binary else None)
            return write(structure, out, binary=binary)
        if key not in index._cache:  # stored once, built from the index's vectors (``E2RankIndex.derived``)
            structure = index.derived(name, build, load=lambda path: read(index, path, binary=binary))
            index._cache[key] = faiss.index_cpu_to_all_gpus(structure) if self.gpu else structure
        self.structure = index._cache[key]

    @property
    def path(self) -> Path:
        """Where the structure is stored."""
        return self.index.structure_path(self.name)

    def _options(self):
        return tuple((k, v) for k, v in (("n_probe", self.n_probe), ("ef_search", self.ef_search),
                                          ("rescore", self.rescore), ("num_results", self.num_results))
                     if v is not None)

    def __repr__(self):
        options = ", ".join(f"{k}={v}" for k, v in self._options())
        return f"{self.index!r}.{self.method}({self.name!r}, {options})"

    def _settings(self) -> tuple:
        return (self.index, self.name, self._options(), self.gpu)

    def search(self, query_vectors: np.ndarray):
        """Top-k (scores, row ids; -1 for none) for each query, best first."""
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        k = min(self.rescore or self.num_results, self.index.meta["doc_count"])
        parts = [self._search_batch(query_vectors[i:i + QUERY_BATCH], k)
                 for i in range(0, len(query_vectors), QUERY_BATCH)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_batch(self, queries: np.ndarray, k: int):
        faiss = faiss_module()
        if self.binary:  # Hamming distances of sign bits, as scores
            distances, rows = self.structure.search(sign_codes(queries), k)
            scores = (self.index.dim - 2 * distances).astype(np.float32)
        elif self.gpu:
            if self.n_probe is not None:
                faiss.GpuParameterSpace().set_index_parameter(self.structure, "nprobe", self.n_probe)
            scores, rows = self.structure.search(queries, k)
        else:
            params = (faiss.SearchParametersIVF(nprobe=self.n_probe) if self.n_probe is not None else
                      faiss.SearchParametersHNSW(efSearch=self.ef_search) if self.ef_search is not None else None)
            scores, rows = self.structure.search(queries, k, params=params)
        if self.rescore is not None:
            scores, rows = self._rescore(queries, rows)
        return scores, rows

    def _rescore(self, queries: np.ndarray, rows: np.ndarray):
        """Exact scores of the candidates from the stored vectors (read in row order), best ``num_results``."""
        vectors = self.index.payload(return_docnos=False)[0]
        flat = rows.ravel()
        valid = np.flatnonzero(flat >= 0)
        order = valid[np.argsort(flat[valid], kind="stable")]
        candidates = np.zeros((flat.size, queries.shape[1]), dtype=np.float32)
        candidates[order] = vectors[flat[order]]
        scores = np.einsum("qkd,qd->qk", candidates.reshape(*rows.shape, -1), queries)
        scores[rows < 0] = -np.inf
        k = min(self.num_results, rows.shape[1])
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, rows = np.take_along_axis(scores, best, axis=1), np.take_along_axis(rows, best, axis=1)
        rows[~np.isfinite(scores)] = -1
        return scores, rows


class AnnSearch:
    """Every approximate search of ``E2RankIndex`` (its first base, so these replace FlexIndex's): ours, and
    FlexIndex's FAISS searches and corpus graphs over stored structures; FlexIndex's others refused."""

    def faiss_ivfpq_retriever(self, *, n_list: Optional[int] = None, m: Optional[int] = None, nbits: int = 8,
                              train_sample: Optional[int] = None, n_probe: Optional[int] = None,
                              rescore: Optional[int] = None, num_results: int = 1000,
                              gpu: Optional[bool] = None) -> FaissAnnRetriever:
        """IVF-PQ search: ``n_list`` inverted lists (default ~4 sqrt(N)), ``m`` sub-quantizers (default dim / 8)
        of ``nbits`` bits, trained on ``train_sample`` vectors (default 39 per centroid, at most N), ``n_probe``
        lists searched per query (default 16); ``rescore``: that many candidates rescored exactly from the
        stored vectors; ``gpu``: None = when FAISS sees one. Raises ValueError naming a bad argument."""
        count, dim = self.meta["doc_count"], self.dim
        if n_list is None:
            n_list = max(1, min(count, 1 << round(math.log2(4 * math.sqrt(count)))))
        n_list = positive_int(n_list, "n_list", maximum=count)
        if m is None:
            m = dim // 8 if dim % 8 == 0 else 1
        m = positive_int(m, "m")
        if dim % m:
            raise ValueError(f"m must divide the vector size {dim}, got {m!r}")
        nbits = positive_int(nbits, "nbits", maximum=16)
        if 2 ** nbits > count:
            raise ValueError(f"IVF-PQ with nbits={nbits} trains 2**nbits = {2 ** nbits:,} centroids per sub-quantizer"
                             f", from at least as many vectors, and the index holds {count:,} documents: choose nbits "
                             f"<= {int(math.log2(count))}, or exact search (index.retriever()), which suits a corpus "
                             f"this small")
        advised = _POINTS_PER_CENTROID * max(n_list, 2 ** nbits)
        train_sample = min(count, advised) if train_sample is None else train_sample
        train_sample = positive_int(train_sample, "train_sample", minimum=max(n_list, 2 ** nbits), maximum=count)
        n_probe = positive_int(min(16, n_list) if n_probe is None else n_probe, "n_probe", maximum=n_list)

        def make(faiss):
            structure = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, n_list, m, nbits, faiss.METRIC_INNER_PRODUCT)
            if train_sample < advised:  # FAISS would print this once per k-means: for each of the m sub-quantizers
                remedy = (f"pass a larger train_sample (up to {count:,})" if train_sample < count else
                          "exact search or HNSW suit a corpus this small")
                warnings.warn(f"IVF-PQ trained on {train_sample:,} vectors where FAISS advises {advised:,} "
                              f"({_POINTS_PER_CENTROID} per centroid of n_list={n_list} or 2**nbits={2 ** nbits}): "
                              f"expect lower recall; {remedy}")
                structure.cp.min_points_per_centroid = structure.pq.cp.min_points_per_centroid = 1  # warning only
            return structure
        name = f"ivfpq_nlist-{n_list}_m-{m}_nbits-{nbits}_train-{train_sample}.faiss"
        return FaissAnnRetriever(self, name, make, method="faiss_ivfpq_retriever", num_results=num_results,
                                 n_probe=n_probe, rescore=rescore, gpu=gpu, train_sample=train_sample)

    def faiss_flat_fp16_retriever(self, *, num_results: int = 1000, gpu: Optional[bool] = None) -> FaissAnnRetriever:
        """Exhaustive search over float16 copies of the vectors: half the RAM of float32, scores off by ~1e-3."""
        return FaissAnnRetriever(
            self, "flat_fp16.faiss",
            lambda faiss: faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                                     faiss.METRIC_INNER_PRODUCT),
            method="faiss_flat_fp16_retriever", num_results=num_results, gpu=gpu)

    def faiss_hnsw_fp16_retriever(self, *, neighbours: int = 32, ef_construction: int = 100, ef_search: int = 128,
                                  num_results: int = 1000) -> FaissAnnRetriever:
        """HNSW over float16 copies of the vectors (on CPU): ``neighbours`` links per node, built with
        ``ef_construction``, searched with ``ef_search``."""
        neighbours = positive_int(neighbours, "neighbours", minimum=2)
        ef_construction = positive_int(ef_construction, "ef_construction")
        ef_search = positive_int(ef_search, "ef_search")

        def make(faiss):
            structure = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16, neighbours,
                                          faiss.METRIC_INNER_PRODUCT)
            structure.hnsw.efConstruction = ef_construction
            return structure
        name = f"hnsw-fp16_n-{neighbours}_ef-{ef_construction}.faiss"
        return FaissAnnRetriever(self, name, make, method="faiss_hnsw_fp16_retriever", num_results=num_results,
                                 ef_search=ef_search, gpu=False)

    def int8_retriever(self, *, num_results: int = 1000, rescore: Optional[int] = None,
                       train_sample: Optional[int] = None) -> FaissAnnRetriever:
        """Exhaustive search over int8 codes of the vectors, their per-dimension ranges taken from ``train_sample``
        vectors (default all, at most ``INT8_TRAIN_SAMPLE``); ``rescore``: that many candidates (>= ``num_results``)
        rescored exactly from the stored vectors. Raises ValueError naming a bad argument."""
        count = self.meta["doc_count"]
        train_sample = positive_int(min(count, INT8_TRAIN_SAMPLE) if train_sample is None else train_sample,
                                    "train_sample", maximum=count)
        return FaissAnnRetriever(
            self, f"sq8_train-{train_sample}.faiss",
            lambda faiss: faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit,
                                                     faiss.METRIC_INNER_PRODUCT),
            method="int8_retriever", num_results=num_results, rescore=rescore, gpu=False, train_sample=train_sample)

    def binary_retriever(self, *, num_results: int = 1000, rescore: Optional[int] = None) -> FaissAnnRetriever:
        """Exhaustive Hamming search over sign bits of the vectors, scored ``dim - 2 * hamming``; ``rescore``: that
        many candidates (>= ``num_results``) rescored exactly from the stored vectors. Raises ValueError naming a
        bad argument."""
        return FaissAnnRetriever(self, "binary.faiss", lambda faiss: faiss.IndexBinaryFlat(-(-self.dim // 8) * 8),
                                 method="binary_retriever", num_results=num_results, rescore=rescore, gpu=False,
                                 binary=True)

    # ---- FlexIndex's (pyterrier-dr 0.8.1): its structures made here from the vectors the index opened, stored
    # through ``E2RankIndex.derived`` and put in the cache FlexIndex serves them from.

    def faiss_flat_retriever(self, *, gpu: bool = False, **options) -> pt.Transformer:
        """FlexIndex's exhaustive FAISS search, over the vectors this object opened."""
        flex_flat(self, gpu=gpu)
        return FlexIndex.faiss_flat_retriever(self, gpu=gpu, **options)

    def faiss_hnsw_retriever(self, neighbours: int = 32, *, ef_construction: int = 40, cache: bool = True,
                             **options) -> pt.Transformer:
        """FlexIndex's HNSW search, its graph a stored structure (``flex_hnsw``)."""
        flex_hnsw(self, neighbours, ef_construction=ef_construction, store=cache)
        return FlexIndex.faiss_hnsw_retriever(self, neighbours, ef_construction=ef_construction, cache=cache,
                                              **options)

    def faiss_ivf_retriever(self, *, n_list=None, train_sample=None, cache: bool = True, **options) -> pt.Transformer:
        """FlexIndex's IVF-flat search (its defaults and training sample), its structure a stored one."""
        import pyterrier_dr
        from pyterrier_dr.flex.faiss_retr import _sample_train
        faiss = faiss_module()
        count, dim = self.meta["doc_count"], self.dim
        if n_list is None:
            n_list = (1 << math.ceil(math.log2(math.ceil(math.sqrt(count))))) if train_sample is None else \
                math.floor(train_sample / 39)
            n_list = max(n_list, 4)
        if train_sample is None:
            train_sample = n_list * 39
        elif 0 < train_sample < 1:
            train_sample = math.ceil(train_sample * count)
        key = ("faiss_ivf", n_list, train_sample)
        if key not in self._cache:
            def build(out):
                cuda = pyterrier_dr.util.infer_device().type == "cuda"
                quantizer = faiss.IndexFlatIP(dim)
                structure = faiss.IndexIVFFlat(faiss.index_cpu_to_all_gpus(quantizer) if cuda else quantizer, dim,
                                               n_list, faiss.METRIC_INNER_PRODUCT)
                structure.train(_sample_train(self, train_sample))
                add_all(self, structure)
                if cuda:
                    structure.quantizer = faiss.index_gpu_to_cpu(structure.quantizer)
                return write(structure, out)
            self._cache[key] = self.derived(f"ivf_nlist-{n_list}_train-{train_sample}.faiss", build,
                                            load=lambda path: read(self, path), store=cache)
        return FlexIndex.faiss_ivf_retriever(self, n_list=n_list, train_sample=train_sample, cache=cache, **options)

    def faiss_hnsw_graph(self, neighbours: int = 32, *, ef_construction: int = 40):
        """FlexIndex's corpus graph ``hnsw_n-{neighbours}_ef-{ef_construction}.graph``: level 0 of the HNSW graph
        of ``neighbours // 2`` links."""
        from pyterrier_dr.flex.faiss_retr import _build_hnsw_graph
        key = ("faiss_hnsw_graph", neighbours, ef_construction)
        if key not in self._cache:
            def build(staging: Path) -> None:
                _build_hnsw_graph(flex_hnsw(self, neighbours // 2, ef_construction=ef_construction).hnsw, staging)
            self._cache[key] = self.derived(f"hnsw_n-{neighbours}_ef-{ef_construction}.graph", build,
                                            load=_read_graph, directory=True)
        return self._cache[key]

    def corpus_graph(self, k: int = 16, *, batch_size: int = 8192):
        """FlexIndex's corpus graph ``corpusgraph_k{k}`` of ``k`` neighbours (or a stored one of more, cut to
        ``k``)."""
        from pyterrier_dr.flex.corpus_graph import _build_corpus_graph
        k = positive_int(k, "k")
        key = ("corpus_graph", k)
        if key not in self._cache:
            stored = (re.fullmatch(r"corpusgraph_k([1-9]\d*)", name) for name in self.structures())
            size = min((int(m.group(1)) for m in stored if m and int(m.group(1)) >= k), default=k)
            graph = self.derived(f"corpusgraph_k{size}", lambda out: _build_corpus_graph(self, k, out, batch_size),
                                 load=_read_graph, directory=True)
            self._cache[key] = graph.to_limit_k(k) if size > k else graph
        return self._cache[key]

    def _unchecked_structure(self, *args, **options):
        raise NotImplementedError(f"{self!r} serves only structures it stores by the vectors they were built "
                                  f"from: faiss_hnsw_retriever, faiss_hnsw_fp16_retriever, faiss_ivf_retriever, "
                                  f"faiss_ivfpq_retriever, faiss_flat_retriever, gar, ladr (open the directory as a "
                                  f"plain pyterrier_dr.FlexIndex for the others, unchecked)")

    scann_retriever = voyager_retriever = flatnav_retriever = kannolo_hnsw_retriever = _unchecked_structure


def write(structure, out, flags: int = 0, *, binary: bool = False):
    """``structure``, written to the binary file ``out`` (``None``: kept in memory only)."""
    if out is not None:
        faiss = faiss_module()
        if binary:
            faiss.write_index_binary(structure, faiss.PyCallbackIOWriter(out.write))
        else:
            faiss.write_index(structure, faiss.PyCallbackIOWriter(out.write), flags)
    return structure


def read(index, path: Path, *, binary: bool = False):
    """The FAISS structure stored at ``path``; CorruptArtifact naming it if FAISS cannot read it."""
    faiss = faiss_module()
    try:
        return faiss.read_index_binary(str(path)) if binary else faiss.read_index(str(path))
    except RuntimeError as e:
        raise CorruptArtifact(f"{index.structure_path(path.name)} is not a{' binary' if binary else ''} FAISS "
                              f"structure FAISS can read ({str(e).splitlines()[0]}); delete it to rebuild it") from None


def sample(index, count: int) -> np.ndarray:
    """``count`` vectors drawn without replacement (seeded), read in row order from the memory map."""
    vectors = index.payload(return_docnos=False)[0]
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=count, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def add_all(index, structure, encode=None) -> None:
    """Every vector of the index added to ``structure`` in blocks (``encode``: each block transformed first)."""
    vectors = index.payload(return_docnos=False)[0]
    for start in range(0, len(vectors), BLOCK):
        block = np.ascontiguousarray(vectors[start:start + BLOCK], dtype=np.float32)
        structure.add(block if encode is None else encode(block))


def sign_codes(vectors: np.ndarray) -> np.ndarray:
    """``(n, dim)`` float vectors -> ``(n, ceil(dim / 8))`` uint8: bit i is set where dimension i is > 0."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def flex_flat(index, *, gpu: bool):
    """FlexIndex's ``faiss_flat`` (all vectors in an ``IndexFlatIP``), and its GPU copy when ``gpu``."""
    faiss = faiss_module()
    if "faiss_flat" not in index._cache:
        flat = faiss.IndexFlatIP(index.dim)
        add_all(index, flat)
        index._cache["faiss_flat"] = flat
    if gpu and "faiss_flat_gpu" not in index._cache:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        index._cache["faiss_flat_gpu"] = faiss.index_cpu_to_all_gpus(index._cache["faiss_flat"], co=options)
    return index._cache["faiss_flat"]


def flex_hnsw(index, neighbours: int, *, ef_construction: int, store: bool = True):
    """FlexIndex's HNSW graph ``hnsw_n-{neighbours}_ef-{ef_construction}.faiss`` (FAISS's default
    efConstruction, as FlexIndex builds it), stored without its vectors: it searches ``faiss_flat``."""
    faiss = faiss_module()
    key = ("faiss_hnsw", neighbours, ef_construction)
    if key not in index._cache:
        def build(out):
            graph = faiss.IndexHNSWFlat(index.dim, neighbours, faiss.METRIC_INNER_PRODUCT)
            add_all(index, graph)
            return _on_flat(index, write(graph, out, faiss.IO_FLAG_SKIP_STORAGE))
        index._cache[key] = index.derived(f"hnsw_n-{neighbours}_ef-{ef_construction}.faiss", build,
                                          load=lambda path: _on_flat(index, read(index, path)), store=store)
    return index._cache[key]


def _on_flat(index, graph):
    """``graph`` (an HNSW index) searching FlexIndex's ``faiss_flat`` (the index's vectors, which Python
    owns: the graph must not free them) instead of a vector store of its own, which is freed."""
    own = graph.storage
    graph.own_fields = False
    if own is not None:
        own.thisown = True  # freed by Python now
    graph.storage = flex_flat(index, gpu=False)
    return graph


def _read_graph(path: Path):
    """A corpus graph stored in the index, its files mapped now, from the version this object opened."""
    graph = pt.Artifact.load(path)
    graph.edges_data, graph.weights_data
    return graph
