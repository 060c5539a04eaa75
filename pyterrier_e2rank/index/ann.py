"""Approximate nearest-neighbour search over an E2Rank index with FAISS: only what FlexIndex lacks.

``E2RankIndex`` is a pyterrier-dr FlexIndex, so ``faiss_flat_retriever``, ``faiss_hnsw_retriever`` (the
graph in ``hnsw_n-{M}_ef-{efC}.faiss``, the float32 vectors of ``vecs.f4`` read into RAM) and
``faiss_ivf_retriever`` (IVF-flat: a second float32 copy) are used as they are. Beware: pyterrier-dr
0.8's ``faiss_hnsw_retriever`` builds its graph with FAISS's default efConstruction (40), whatever its
``ef_construction`` says (the file is still named ``ef-{ef_construction}``); at 1M x 384 its recall@100
was 0.74-0.88 where ``faiss_hnsw_fp16_retriever`` (below, efConstruction applied: 100) gave 0.98-0.999
(``benchmarks/ann.py``). Added here, as retrievers built once from the index's vectors and stored inside
its directory:

- **IVF-PQ** (``faiss_ivfpq_retriever``): FlexIndex has only IVF-flat, whose memory is the float32
  vectors again; product-quantised codes (``m`` sub-quantizers x ``nbits``) make a large index a fraction
  of that. PQ scores alone miss recall, so ``rescore=k'`` rescores the best ``k'`` codes exactly from the
  memory-mapped ``vecs.f4`` (what brings recall@100 to 0.95).
- **float16 storage** (``faiss_flat_fp16_retriever``, ``faiss_hnsw_fp16_retriever``, which applies its
  ``ef_construction``): FlexIndex keeps float32 only; FAISS's ``QT_fp16`` scalar quantizer halves RAM and
  disk, at a score error of about 1e-3 for unit vectors (``tests/test_ann.py`` bounds it).
- **GPU**: IVF-PQ and flat-fp16 structures are searched on all GPUs (``index_cpu_to_all_gpus``) when
  FAISS sees one (faiss-gpu installed); FlexIndex does this for flat search only. Builds stay on CPU.
- **Safe, named, checked structures**: FlexIndex writes its ``.faiss`` files in place, so a killed build
  leaves a truncated file that is read later, and an index object opened before a rebuild stores a
  structure of the old vectors in the new index; here every structure, FlexIndex's included
  (``flex_*`` below), goes through ``E2RankIndex.derived``: named by its build parameters (FlexIndex's
  convention; ``index.STRUCTURES``, so an overwrite of the index removes it), written beside a record
  of the vectors it was built from, into the version of the directory those vectors were read from,
  and moved into place (``io.atomic_file``); refused when opened if its record names other vectors or
  its FAISS ``ntotal``/``d`` differ from the index's. Threads of one process wait for one build.
- Results as ``index.retriever()`` gives them (``docno``, ``score``, ``rank``), arguments checked by
  range, ``__eq__``/``__hash__`` for ``pt.Experiment``.

Every approximate search of an ``E2RankIndex`` is here: its methods (``AnnSearch``, at the end), FlexIndex's
guarded and ours. Exact search (``index.retriever()``) stays the default: for small corpora it is fast and exact.
"""
import math
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import pyterrier as pt
from pyterrier_dr import FlexIndex

from ..checks import positive_int
from ..io import CorruptArtifact
from .retriever import VectorSearch

_BLOCK = 65536  # vectors added per call while building: bounded memory on any corpus size
_POINTS_PER_CENTROID = 39  # FAISS's k-means asks for this many training vectors per centroid


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("ANN search needs FAISS: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


def ivfpq_retriever(index, *, n_list: Optional[int] = None, m: Optional[int] = None, nbits: int = 8,
                    train_sample: Optional[int] = None, n_probe: Optional[int] = None, rescore: Optional[int] = None,
                    num_results: int = 1000, gpu: Optional[bool] = None) -> "FaissAnnRetriever":
    """IVF-PQ search: ``n_list`` inverted lists (default ~4 sqrt(N), a power of 2), ``m`` sub-quantizers of
    ``nbits`` bits (default ``m`` = dim / 8; must divide dim), trained on ``train_sample`` vectors (default
    39 per centroid of the lists and of each sub-quantizer, at most N; fewer gives one warning); ``n_probe``
    lists searched per query (default 16, at most ``n_list``);
    ``rescore``: that many PQ candidates rescored exactly from the stored vectors (``None``: PQ scores; the
    int8 and binary retrievers of ``quantized`` take the same argument). ``gpu``: None = when FAISS sees one."""
    faiss = _faiss()
    meta = index.meta
    count, dim = meta["doc_count"], meta["vec_size"]
    if n_list is None:
        n_list = max(1, min(count, 1 << round(math.log2(4 * math.sqrt(count)))))
    n_list = _in_range(n_list, "n_list", 1, count)
    if m is None:
        m = dim // 8 if dim % 8 == 0 else 1
    m = positive_int(m, "m")
    if dim % m:
        raise ValueError(f"m must divide the vector size {dim}, got {m!r}")
    nbits = _in_range(nbits, "nbits", 1, 16)
    if 2 ** nbits > count:
        raise ValueError(f"IVF-PQ with nbits={nbits} trains 2**nbits = {2 ** nbits:,} centroids per sub-quantizer, "
                         f"from at least as many vectors, and the index holds {count:,} documents: choose nbits <= "
                         f"{int(math.log2(count))}, or exact search (index.retriever()), which suits a corpus this "
                         f"small")
    advised = _POINTS_PER_CENTROID * max(n_list, 2 ** nbits)
    train_sample = min(count, advised) if train_sample is None else train_sample
    train_sample = _in_range(train_sample, "train_sample", max(n_list, 2 ** nbits), count)
    n_probe = _in_range(min(16, n_list) if n_probe is None else n_probe, "n_probe", 1, n_list)
    num_results = positive_int(num_results, "num_results")
    rescore = positive_int(rescore, "rescore", minimum=num_results, allow_none=True)

    def build():
        structure = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, n_list, m, nbits, faiss.METRIC_INNER_PRODUCT)
        if train_sample < advised:  # FAISS would print this once per k-means: for each of the m sub-quantizers
            remedy = (f"pass a larger train_sample (up to {count:,})" if train_sample < count else
                      "exact search or HNSW suit a corpus this small")
            warnings.warn(f"IVF-PQ trained on {train_sample:,} vectors where FAISS advises {advised:,} "
                          f"({_POINTS_PER_CENTROID} per centroid of n_list={n_list} or 2**nbits={2 ** nbits}): "
                          f"expect lower recall; {remedy}")
            structure.cp.min_points_per_centroid = structure.pq.cp.min_points_per_centroid = 1  # warning only
        structure.train(_sample(index, train_sample))
        _add_all(index, structure)
        return structure
    name = f"ivfpq_nlist-{n_list}_m-{m}_nbits-{nbits}_train-{train_sample}.faiss"
    return FaissAnnRetriever(index, name, build, method="faiss_ivfpq_retriever", num_results=num_results,
                             n_probe=n_probe, rescore=rescore, gpu=gpu)


def flat_fp16_retriever(index, *, num_results: int = 1000, gpu: Optional[bool] = None) -> "FaissAnnRetriever":
    """Exhaustive search over float16 copies of the vectors: half the RAM of float32, scores off by ~1e-3."""
    faiss = _faiss()
    num_results = positive_int(num_results, "num_results")

    def build():
        structure = faiss.IndexScalarQuantizer(index.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        _add_all(index, structure)
        return structure
    return FaissAnnRetriever(index, "flat_fp16.faiss", build, method="faiss_flat_fp16_retriever",
                             num_results=num_results, gpu=gpu)


def hnsw_fp16_retriever(index, *, neighbours: int = 32, ef_construction: int = 100, ef_search: int = 128,
                        num_results: int = 1000) -> "FaissAnnRetriever":
    """HNSW whose stored vectors are float16 (FlexIndex's HNSW reads all float32 vectors into RAM): the
    graph of ``neighbours`` links per node built with ``ef_construction``, searched with ``ef_search``.
    HNSW has no FAISS GPU implementation; it runs on CPU."""
    faiss = _faiss()
    neighbours = positive_int(neighbours, "neighbours", minimum=2)
    ef_construction = positive_int(ef_construction, "ef_construction")
    ef_search = positive_int(ef_search, "ef_search")
    num_results = positive_int(num_results, "num_results")

    def build():
        structure = faiss.IndexHNSWSQ(index.dim, faiss.ScalarQuantizer.QT_fp16, neighbours,
                                      faiss.METRIC_INNER_PRODUCT)
        structure.hnsw.efConstruction = ef_construction
        _add_all(index, structure)
        return structure
    name = f"hnsw-fp16_n-{neighbours}_ef-{ef_construction}.faiss"
    return FaissAnnRetriever(index, name, build, method="faiss_hnsw_fp16_retriever", num_results=num_results,
                             ef_search=ef_search, gpu=False)


class FaissAnnRetriever(VectorSearch):
    """Q frame with ``query_vec`` -> the top ``num_results`` documents of a FAISS structure stored in the
    index directory (built there on first use), as ``docno``, ``score``, ``rank``; best first."""

    def __init__(self, index, name: str, build, *, method: str, num_results: int, n_probe: Optional[int] = None,
                 ef_search: Optional[int] = None, rescore: Optional[int] = None, gpu: Optional[bool] = None,
                 qbatch: int = 64):
        self.index = index
        self.name = name
        self.method = method
        self.num_results = positive_int(num_results, "num_results")
        self.n_probe, self.ef_search, self.rescore = n_probe, ef_search, rescore
        self.qbatch = positive_int(qbatch, "qbatch")
        self._build = build
        faiss = _faiss()
        if gpu and faiss.get_num_gpus() == 0:
            raise ValueError("gpu=True, but FAISS sees no GPU (faiss-gpu not installed, or no device)")
        self.gpu = faiss.get_num_gpus() > 0 if gpu is None else bool(gpu)
        self.structure = self._load_structure()

    def _load_structure(self):
        """The FAISS structure searched (``_structure``); a subclass of another kind of structure reads its own."""
        return _structure(self.index, self.name, self._build, gpu=self.gpu)

    @property
    def path(self) -> Path:
        """Where the structure is stored."""
        return Path(self.index.index_path) / self.name

    def _options(self):
        return tuple((k, v) for k, v in (("n_probe", self.n_probe), ("ef_search", self.ef_search),
                                          ("rescore", self.rescore), ("num_results", self.num_results))
                     if v is not None)

    def __repr__(self):
        options = ", ".join(f"{k}={v}" for k, v in self._options())
        return f"{self.index!r}.{self.method}({self.name!r}, {options})"

    def __eq__(self, other):
        return isinstance(other, FaissAnnRetriever) and (self.index, self.name, self._options(), self.gpu) == \
            (other.index, other.name, other._options(), other.gpu)

    def __hash__(self):
        return hash((FaissAnnRetriever, self.index, self.name, self._options(), self.gpu))

    def fuse_rank_cutoff(self, k: int) -> Optional[pt.Transformer]:
        """``retriever % k`` asks for fewer results instead of cutting them afterwards."""
        if k >= self.num_results:
            return None
        return type(self)(self.index, self.name, self._build, method=self.method, num_results=k,
                          n_probe=self.n_probe, ef_search=self.ef_search, rescore=self.rescore, gpu=self.gpu,
                          qbatch=self.qbatch)

    def search(self, query_vectors: np.ndarray):
        """Top-k (scores, row ids; -1 for none) for each query, best first."""
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        k = min(self.rescore or self.num_results, self.index.meta["doc_count"])
        parts = [self._search_batch(query_vectors[i:i + self.qbatch], k)
                 for i in range(0, len(query_vectors), self.qbatch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_batch(self, queries: np.ndarray, k: int):
        faiss = _faiss()
        if self.gpu:
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


def _in_range(value, name: str, minimum: int, maximum: int) -> int:
    value = positive_int(value, name, minimum=minimum)
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum} here, got {value!r}")
    return value


def _structure(index, name: str, build, *, gpu: bool, write=None, read=None):
    """The structure ``name`` of the index (``E2RankIndex.derived``: stored once, built from the index's
    vectors and refused when built from others), kept in the index's cache, and on the GPUs when ``gpu``;
    ``write(structure, out)``/``read(index, path)`` (default ``_write``/``_read``) store and load it."""
    faiss = _faiss()
    write, read = write or _write, read or _read
    key = ("e2rank_ann", name, gpu)
    if key not in index._cache:
        structure = index.derived(name, lambda out: write(build(), out), load=lambda path: read(index, path))
        index._cache[key] = faiss.index_cpu_to_all_gpus(structure) if gpu else structure
    return index._cache[key]


def _write(structure, out, flags: int = 0):
    """``structure``, written to the binary file ``out`` (``None``: kept in memory only)."""
    if out is not None:
        faiss = _faiss()
        faiss.write_index(structure, faiss.PyCallbackIOWriter(out.write), flags)
    return structure


def _read(index, path: Path):
    """The FAISS structure at ``path`` (in the index), checked to hold the index's count and dimension."""
    faiss = _faiss()
    shown = Path(index.path) / path.name
    try:
        structure = faiss.read_index(str(path))
    except RuntimeError as e:
        raise CorruptArtifact(f"{shown} is not a FAISS structure FAISS can read ({str(e).splitlines()[0]}); "
                              f"delete it to rebuild it") from None
    return checked_size(index, path, structure, index.dim)


def checked_size(index, path: Path, structure, dim: int):
    """``structure``, read from ``path``, once it holds the index's count of vectors of dimension ``dim``."""
    shown = Path(index.path) / path.name
    count = index.meta["doc_count"]
    if (structure.ntotal, structure.d) != (count, dim):
        raise CorruptArtifact(f"{shown} holds {structure.ntotal} vectors of dimension {structure.d}, the index "
                              f"{count} of dimension {dim}: it was not built from this index; delete it to rebuild")
    return structure


# ---- FlexIndex's structures (pyterrier-dr 0.8.1, flex/faiss_retr.py and corpus_graph.py), made and read here
# from the vectors the index opened, and stored through ``E2RankIndex.derived``; FlexIndex then serves them.

def flex_flat(index, *, gpu: bool):
    """FlexIndex's ``faiss_flat`` (all vectors in an ``IndexFlatIP``), and its GPU copy when ``gpu``."""
    faiss = _faiss()
    if "faiss_flat" not in index._cache:
        flat = faiss.IndexFlatIP(index.dim)
        _add_all(index, flat)
        index._cache["faiss_flat"] = flat
    if gpu and "faiss_flat_gpu" not in index._cache:  # pyterrier-dr 0.8.1 reads an attribute it never sets here
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        index._cache["faiss_flat_gpu"] = faiss.index_cpu_to_all_gpus(index._cache["faiss_flat"], co=options)
    return index._cache["faiss_flat"]


def flex_hnsw(index, neighbours: int, *, ef_construction: int, store: bool = True):
    """FlexIndex's HNSW graph ``hnsw_n-{neighbours}_ef-{ef_construction}.faiss``, as FlexIndex makes it
    (FAISS's default efConstruction), stored without its vectors (it searches ``faiss_flat``)."""
    faiss = _faiss()
    key = ("faiss_hnsw", neighbours, ef_construction)
    if key not in index._cache:
        def build(out):
            graph = faiss.IndexHNSWFlat(index.dim, neighbours, faiss.METRIC_INNER_PRODUCT)
            _add_all(index, graph)
            return _on_flat(index, _write(graph, out, faiss.IO_FLAG_SKIP_STORAGE))
        index._cache[key] = index.derived(f"hnsw_n-{neighbours}_ef-{ef_construction}.faiss", build,
                                          load=lambda path: _on_flat(index, _read(index, path)), store=store)
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


def flex_ivf(index, *, n_list: Optional[int], train_sample, store: bool = True) -> None:
    """FlexIndex's IVF-flat structure ``ivf_nlist-{n_list}_train-{train_sample}.faiss``, with FlexIndex's
    defaults and training sample."""
    import pyterrier_dr
    from pyterrier_dr.flex.faiss_retr import _sample_train
    faiss = _faiss()
    count = index.meta["doc_count"]
    if n_list is None:
        n_list = (1 << math.ceil(math.log2(math.ceil(math.sqrt(count))))) if train_sample is None else \
            math.floor(train_sample / 39)
        n_list = max(n_list, 4)
    if train_sample is None:
        train_sample = n_list * 39
    elif 0 < train_sample < 1:
        train_sample = math.ceil(train_sample * count)
    key = ("faiss_ivf", n_list, train_sample)
    if key not in index._cache:
        def build(out):
            cuda = pyterrier_dr.util.infer_device().type == "cuda"
            quantizer = faiss.IndexFlatIP(index.dim)
            structure = faiss.IndexIVFFlat(faiss.index_cpu_to_all_gpus(quantizer) if cuda else quantizer, index.dim,
                                           n_list, faiss.METRIC_INNER_PRODUCT)
            structure.train(_sample_train(index, train_sample))
            _add_all(index, structure)
            if cuda:
                structure.quantizer = faiss.index_gpu_to_cpu(structure.quantizer)
            return _write(structure, out)
        index._cache[key] = index.derived(f"ivf_nlist-{n_list}_train-{train_sample}.faiss", build,
                                          load=lambda path: _read(index, path), store=store)


def flex_hnsw_graph(index, neighbours: int, *, ef_construction: int):
    """FlexIndex's corpus graph ``hnsw_n-{neighbours}_ef-{ef_construction}.graph``: level 0 of the HNSW
    graph of ``neighbours // 2`` links."""
    from pyterrier_dr.flex.faiss_retr import _build_hnsw_graph
    key = ("faiss_hnsw_graph", neighbours, ef_construction)
    if key not in index._cache:
        def build(staging: Path) -> None:
            _build_hnsw_graph(flex_hnsw(index, neighbours // 2, ef_construction=ef_construction).hnsw, staging)
        index._cache[key] = index.derived(f"hnsw_n-{neighbours}_ef-{ef_construction}.graph", build,
                                          load=lambda path: _read_graph(index, path), directory=True)
    return index._cache[key]


def flex_corpus_graph(index, k: int, *, batch_size: int):
    """FlexIndex's corpus graph ``corpusgraph_k{k}``, or a stored one of more neighbours cut to ``k``."""
    from pyterrier_dr.flex.corpus_graph import _build_corpus_graph
    k = positive_int(k, "k")
    key = ("corpus_graph", k)
    if key not in index._cache:
        stored = index.structures()
        larger = sorted(int(m.group(1)) for m in map(re.compile(r"corpusgraph_k(\d+)").fullmatch, stored)
                        if m and int(m.group(1)) > k)
        name = f"corpusgraph_k{k}"
        if name not in stored and larger:
            name = f"corpusgraph_k{larger[0]}"
        graph = index.derived(name, lambda staging: _build_corpus_graph(index, k, staging, batch_size),
                              load=lambda path: _read_graph(index, path), directory=True)
        index._cache[key] = graph.to_limit_k(k) if name != f"corpusgraph_k{k}" else graph
    return index._cache[key]


def _read_graph(index, path: Path):
    """A corpus graph stored in the index, checked to have a node per document."""
    graph = pt.Artifact.load(path)
    if graph.meta.get("doc_count") != index.meta["doc_count"]:
        raise CorruptArtifact(f"{Path(index.path) / path.name} is a graph of {graph.meta.get('doc_count')} documents, "
                              f"the index holds {index.meta['doc_count']}; delete it to rebuild")
    graph.edges_data, graph.weights_data  # mapped now, from this version (its files are opened lazily)
    return graph


def _sample(index, count: int) -> np.ndarray:
    """``count`` vectors drawn without replacement (seeded), read in row order from the memory map."""
    vectors = index.payload(return_docnos=False)[0]
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=count, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def _add_all(index, structure) -> None:
    vectors = index.payload(return_docnos=False)[0]
    for start in range(0, len(vectors), _BLOCK):
        structure.add(np.ascontiguousarray(vectors[start:start + _BLOCK], dtype=np.float32))


class AnnSearch:
    """The approximate searches of ``E2RankIndex`` (its first base, so these replace FlexIndex's), in one place:
    FlexIndex's FAISS flat/HNSW/IVF retrievers and corpus graphs, each structure checked (``flex_*`` above); ours
    (IVF-PQ, float16 flat and HNSW, above); and FlexIndex's others refused (their structures could not be
    checked). The index serves each retriever as it serves all its transformers (``retriever.served``)."""

    def faiss_ivfpq_retriever(self, **options) -> pt.Transformer:
        """IVF-PQ search (``n_list``, ``m``, ``nbits``, ``n_probe``, ``rescore``, ...): ``ann.ivfpq_retriever``."""
        return ivfpq_retriever(self, **options)

    def faiss_hnsw_fp16_retriever(self, **options) -> pt.Transformer:
        """HNSW over float16 vectors (``neighbours``, ``ef_construction``, ``ef_search``):
        ``ann.hnsw_fp16_retriever``."""
        return hnsw_fp16_retriever(self, **options)

    def faiss_flat_fp16_retriever(self, **options) -> pt.Transformer:
        """Exhaustive search over float16 vectors (half the RAM): ``ann.flat_fp16_retriever``."""
        return flat_fp16_retriever(self, **options)

    def int8_retriever(self, **options) -> pt.Transformer:
        """Exhaustive search over int8 codes (4x less memory; ``num_results``, ``rescore``, ``train_sample``):
        ``quantized.int8_retriever``."""
        from .quantized import int8_retriever  # quantized builds on this module's retriever
        return int8_retriever(self, **options)

    def binary_retriever(self, **options) -> pt.Transformer:
        """Exhaustive Hamming search over sign bits (32x less memory; ``num_results``, ``rescore``):
        ``quantized.binary_retriever``."""
        from .quantized import binary_retriever  # quantized builds on this module's retriever
        return binary_retriever(self, **options)

    def faiss_flat_retriever(self, *, gpu: bool = False, **options) -> pt.Transformer:
        """FlexIndex's exhaustive FAISS search, over the vectors this object opened (FlexIndex reads ``vecs.f4``
        by path: after a rebuild, another version's vectors)."""
        flex_flat(self, gpu=gpu)
        return FlexIndex.faiss_flat_retriever(self, gpu=gpu, **options)

    def faiss_hnsw_retriever(self, neighbours: int = 32, *, ef_construction: int = 40, cache: bool = True,
                             **options) -> pt.Transformer:
        """FlexIndex's HNSW search, its graph a checked structure (``derived``)."""
        flex_hnsw(self, neighbours, ef_construction=ef_construction, store=cache)
        return FlexIndex.faiss_hnsw_retriever(self, neighbours, ef_construction=ef_construction, cache=cache,
                                              **options)

    def faiss_ivf_retriever(self, *, n_list=None, train_sample=None, cache: bool = True, **options) -> pt.Transformer:
        """FlexIndex's IVF search, its structure a checked one (``derived``)."""
        flex_ivf(self, n_list=n_list, train_sample=train_sample, store=cache)
        return FlexIndex.faiss_ivf_retriever(self, n_list=n_list, train_sample=train_sample, cache=cache, **options)

    def faiss_hnsw_graph(self, neighbours: int = 32, *, ef_construction: int = 40):
        """FlexIndex's corpus graph from an HNSW graph of ``neighbours // 2`` links, a checked structure."""
        return flex_hnsw_graph(self, neighbours, ef_construction=ef_construction)

    def corpus_graph(self, k: int = 16, *, batch_size: int = 8192):
        """FlexIndex's corpus graph of ``k`` neighbours (or one of more, cut to ``k``), a checked structure."""
        return flex_corpus_graph(self, k, batch_size=batch_size)

    def _unchecked_structure(self, *args, **options):
        raise NotImplementedError(f"{self!r} serves only structures it checks against the vectors they were built "
                                  f"from: faiss_hnsw_retriever, faiss_hnsw_fp16_retriever, faiss_ivf_retriever, "
                                  f"faiss_ivfpq_retriever, faiss_flat_retriever, gar, ladr (open the directory as a "
                                  f"plain pyterrier_dr.FlexIndex for the others, unchecked)")

    scann_retriever = voyager_retriever = flatnav_retriever = kannolo_hnsw_retriever = _unchecked_structure
