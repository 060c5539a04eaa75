"""``E2Rank``: one embedding model, and the factory of every transformer that uses it."""
import contextlib
import hashlib
import json
import threading
from typing import Iterator, List, Optional, Sequence

import numpy as np
import pyterrier as pt
import torch

from .backends import check_backend, exported_backbone
from ..checks import check_encodable, check_finite, positive_int
from .fingerprint import tokenizer_digest, weights_digest
from .loading import read_pooling, read_prompt_settings, resolve_model_path
from .pooling import Pooling, pad_batch, pool
from ..rerank.prompt import ListwisePrompt
from .stats import EncodeStats, add_stats
from .text import DEFAULT_QUERY_TASK, DOC_MAX_WORDS, doc_token_cap, format_query, truncate_words

DEFAULT_MODEL = "Alibaba-NLP/E2Rank-0.6B"
#: 3: the tokenizer's behaviour too, and one identity however a checkpoint is stored (2: every weight tensor
#: hashed from the checkpoint files, blind to the tokenizer; 1: 64 embedding rows, blind to fine-tuning).
FINGERPRINT_VERSION = 3
_AUTO = "auto"


def _default_dtype(backend: str, device: torch.device) -> Optional[torch.dtype]:
    """What ``dtype=None`` means: bfloat16 on CUDA and float32 on a CPU for PyTorch; None (the runtime's own
    choice) for an exported backbone."""
    if backend != "torch":
        return None
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class E2Rank:
    """An E2Rank (or any embedding) model, and a factory of PyTerrier transformers.

    Decoder models follow pt_docs/specification.rst §2-§4 exactly: left padding, ``<|endoftext|>``
    appended to queries and documents, last-token pooling, L2 normalisation, instructed queries. Encoder models with a
    sentence-transformers configuration keep their pooling, normalisation and ``max_seq_length``.

    Args:
        model_name_or_path: a local Hugging Face directory, a hub id, or ``"all-minilm-l6-v2"``.
        device: ``"cuda"`` when available, else ``"cpu"``.
        dtype: bfloat16 on CUDA, float32 on CPU; with ``backend="openvino"`` the precision it compiles
            (``None``: its choice for the CPU).
        batch_size: texts per forward pass (length-sorted batches).
        query_task: the retrieval instruction; ``"auto"`` uses E2Rank's default for decoder models and
            none for encoders; ``None`` disables it.
        max_length: token limit for queries and documents (default: the sentence-transformers
            ``max_seq_length``, else the model's position limit).
        prompt_max_tokens: token budget of the listwise prompt (default: the model's position limit).
        doc_max_words: documents are cut to this many words before embedding (1024, as in the paper).
        cache_doc_vectors: keep every document vector computed, keyed by the document's text, so that
            rerankers without an index encode a document once across calls (memory grows by one vector
            and one digest per distinct text; ``clear_doc_cache()`` empties it).
        backend: ``"torch"``; or, on the CPU (``pip install 'pyterrier-e2rank[cpu]'``), the backbone exported
            to ONNX and run by ``"openvino"`` (the choice on a CPU: 3-4x the documents/s of float32 PyTorch
            in bfloat16 where the CPU has it, about 2x in float32 elsewhere; vectors within cosine 0.9999 of
            float32's) or ``"onnx"`` (ONNX
            Runtime, float32); ``backends.py`` has the measurements. With ``"openvino"``, ``dtype`` picks its
            precision (``None``: OpenVINO's choice for this CPU).
        quantize: ``None``, or ``"int8"`` with ``backend="onnx"``: dynamic int8 quantization, 2-3x float32
            PyTorch, vectors within cosine 0.98. Vectors of an exported or quantized model carry how they
            were computed in their fingerprint (``inference``), so they are never mixed with PyTorch's.
        verbose: progress bars.

    Attributes beside the arguments: ``inference`` (how vectors are computed when not by PyTorch:
    ``"openvino"``, ``"onnx"``, ``"onnx-int8"``; None for PyTorch), ``precision`` (what the backbone computes
    in), ``exported`` (the exported backbone; None for PyTorch), ``dim``, ``stats``.

    Raises ``ValueError`` for a backend/quantization this model or device cannot use (naming both), and
    ``ImportError`` with its pip line for a missing package.
    """

    def __init__(self, model_name_or_path: str = DEFAULT_MODEL, *, device: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None, batch_size: int = 32, query_task: Optional[str] = _AUTO,
                 max_length: Optional[int] = None, prompt_max_tokens: Optional[int] = None,
                 doc_max_words: Optional[int] = DOC_MAX_WORDS, attn_implementation: Optional[str] = None,
                 cache_doc_vectors: bool = False, backend: str = "torch", quantize: Optional[str] = None,
                 verbose: bool = False):
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        self.model_name_or_path = model_name_or_path
        path = resolve_model_path(model_name_or_path)
        self.checkpoint_path = path
        self._fingerprint: Optional[dict] = None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # an exported backbone is exported from float32 weights; ``dtype`` is then the export's precision
        self.dtype = (dtype or _default_dtype(backend, self.device)) if backend == "torch" else torch.float32
        try:
            config = AutoConfig.from_pretrained(path)
            check_backend(backend, quantize, device=self.device, dtype=dtype, model_type=config.model_type)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
            self.backbone, loading = AutoModel.from_pretrained(path, dtype=self.dtype, output_loading_info=True,
                                                               **kwargs)
        except OSError as e:
            raise OSError(f"could not load model {model_name_or_path!r} from {path!r}: {e}") from e
        self.backbone.to(self.device).eval()
        self.weights_not_loaded = frozenset(loading["unexpected_keys"])  # e.g. a causal LM's head
        self.backend, self.quantize, self.requested_dtype = backend, quantize, dtype
        self.exported = None if backend == "torch" else exported_backbone(backend, self.backbone, quantize=quantize,
                                                                          dtype=dtype)
        self.pooling: Pooling = read_pooling(path, config)
        if self.pooling.last_token:
            self.tokenizer.padding_side = "left"
            self.eos_token_id = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
            if self.eos_token_id is None or self.eos_token_id == self.tokenizer.unk_token_id:
                self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.tokenizer.eos_token_id
        self.position_limit = min(getattr(config, "max_position_embeddings", None) or 10**9,
                                  self.tokenizer.model_max_length or 10**9)
        self.max_length = max_length or self.pooling.max_length or self.position_limit
        self.prompt_max_tokens = positive_int(prompt_max_tokens, "prompt_max_tokens", allow_none=True) or self.position_limit
        self.prompt_settings = read_prompt_settings(path)
        self.query_task = (DEFAULT_QUERY_TASK if self.pooling.last_token else None) if query_task == _AUTO else query_task
        self.doc_max_words = doc_max_words
        self.batch_size = batch_size
        self.verbose = verbose
        self.stats = EncodeStats()
        self._counters = threading.local()
        self.doc_cache: Optional[dict] = {} if cache_doc_vectors else None

    def _identity(self) -> tuple:
        """What makes two model objects interchangeable: the checkpoint and every setting that shapes a vector."""
        return (str(self.checkpoint_path), str(self.device), self.inference, self.precision, self.pooling,
                self.query_task, self.max_length, self.prompt_max_tokens, self.doc_max_words,
                tuple(sorted(self.prompt_settings.items())))

    def __eq__(self, other):
        return isinstance(other, E2Rank) and (self is other or self._identity() == other._identity())

    def __hash__(self):
        return hash(self._identity())

    def __repr__(self):
        cache = ", cache_doc_vectors=True" if self.doc_cache is not None else ""
        inference = "".join(f", {k}={v!r}" for k, v in (("backend", self.backend), ("quantize", self.quantize))
                            if v not in ("torch", None))
        if self.requested_dtype not in (None, _default_dtype(self.backend, self.device)):
            inference += f", dtype={self.requested_dtype}"
        return (f"E2Rank({self.model_name_or_path!r}, device={str(self.device)!r}, batch_size={self.batch_size}"
                f"{inference}{cache})")

    @property
    def dim(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def inference(self) -> Optional[str]:
        """How vectors are computed when not by PyTorch (``"openvino"``, ``"onnx"``, ``"onnx-int8"``: the
        fingerprint's ``inference``), else None."""
        return None if self.exported is None else self.exported.inference

    @property
    def precision(self) -> str:
        """What the backbone computes in: PyTorch's dtype (``"float32"``, ``"bfloat16"``), or an exported
        backbone's precision (``"f32"``, ``"bf16"``, ``"int8"``)."""
        return str(self.dtype).removeprefix("torch.") if self.exported is None else self.exported.precision

    # ---- encoding -------------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str], *, batch_size: Optional[int] = None,
                       verbose: Optional[bool] = None) -> np.ndarray:
        """Normalised query vectors (instruction applied), shape ``[n, dim]``."""
        return self._encode(self.tokenize_queries(queries), batch_size, verbose, "encoding queries")

    def encode_docs(self, texts: Sequence[str], *, batch_size: Optional[int] = None,
                    verbose: Optional[bool] = None, progress=None) -> np.ndarray:
        """Normalised document vectors (cut to ``doc_max_words``), shape ``[n, dim]``.

        ``progress``: an open tqdm bar to advance by documents (the indexer's), instead of a new one.
        With ``cache_doc_vectors``, only texts not seen before are encoded."""
        if self.doc_cache is None or not all(isinstance(text, str) for text in texts):  # bad texts: reported there
            return self._encode(self.tokenize_docs(texts), batch_size, verbose, "encoding documents", progress)
        keys = [hashlib.sha256(text.encode()).digest() for text in texts]
        new = {key: text for key, text in zip(keys, texts) if key not in self.doc_cache}
        if new:
            vectors = self._encode(self.tokenize_docs(list(new.values())), batch_size, verbose,
                                   "encoding documents", progress)
            self.doc_cache.update(zip(new, vectors))
        return np.stack([self.doc_cache[key] for key in keys]) if keys else np.empty((0, self.dim), np.float32)

    def clear_doc_cache(self) -> None:
        if self.doc_cache is not None:
            self.doc_cache.clear()

    def encode_prompts(self, prompts: Sequence[str], *, batch_size: Optional[int] = None,
                       verbose: Optional[bool] = None) -> np.ndarray:
        """Normalised pseudo-query vectors of rendered listwise prompts (no ``<|endoftext|>``)."""
        return self._encode(self.tokenize_prompts(prompts), batch_size, verbose, "encoding prompts")

    # Token ids exactly as the model reads them; training uses these too.
    def tokenize_queries(self, queries: Sequence[str], *, max_length: Optional[int] = None) -> List[List[int]]:
        return self._tokenize([format_query(q, self.query_task) for q in queries], append_eos=True,
                              max_length=max_length)

    def tokenize_docs(self, texts: Sequence[str], *, max_length: Optional[int] = None) -> List[List[int]]:
        """Cut to ``doc_max_words`` words, then (a safety net for unspaced text) to ``doc_token_cap``."""
        max_length = max_length or self.max_length
        if self.doc_max_words is not None:
            max_length = min(max_length, doc_token_cap(self.doc_max_words))
        return self._tokenize([truncate_words(t, self.doc_max_words) for t in texts], append_eos=True,
                              max_length=max_length)

    def tokenize_prompts(self, prompts: Sequence[str]) -> List[List[int]]:
        return self._tokenize(prompts, append_eos=False, max_length=self.prompt_max_tokens)

    def listwise_prompt(self, *, num_input_docs: Optional[int] = None, task: Optional[str] = None,
                        variant: Optional[str] = None, prompt_doc_max_tokens: Optional[int] = None,
                        prompt_max_tokens: Optional[int] = None) -> ListwisePrompt:
        """The prompt builder matching this model. Each setting left ``None`` comes from the checkpoint's
        ``e2rank_prompt.json`` (the prompt it was trained with), else the paper's default; the total
        budget defaults to the model's positions."""
        given = {"num_input_docs": num_input_docs, "task": task, "variant": variant,
                 "prompt_doc_max_tokens": prompt_doc_max_tokens, "prompt_max_tokens": prompt_max_tokens}
        settings = {**self.prompt_settings, **{k: v for k, v in given.items() if v is not None}}
        settings.setdefault("prompt_max_tokens", self.prompt_max_tokens)
        return ListwisePrompt(doc_max_words=self.doc_max_words, **settings)

    def _tokenize(self, texts: Sequence[str], *, append_eos: bool, max_length: Optional[int] = None) -> List[List[int]]:
        max_length = min(max_length or self.max_length, self.position_limit)
        texts = list(texts)
        if not texts:
            return []
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"{len(bad)} text(s) are not strings (positions {bad[:5]}): {texts[bad[0]]!r}")
        for i, text in enumerate(texts):
            check_encodable(text, f"the text at position {i}")
        if not self.pooling.last_token:
            return self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # cut below
        if not append_eos:
            too_long = [i for i, x in enumerate(ids) if len(x) > max_length]
            if too_long:
                raise ValueError(f"{len(too_long)} prompt(s) exceed the model's {max_length} tokens "
                                 f"(longest: {max(len(ids[i]) for i in too_long)}); set a prompt budget")
            return ids
        return [x[:max_length - 1] + [self.eos_token_id] for x in ids]

    def _encode(self, ids: List[List[int]], batch_size: Optional[int], verbose: Optional[bool], desc: str,
                progress=None) -> np.ndarray:
        """Length-sorted batches through the backbone, pooled and normalised, in input order."""
        batch_size = batch_size or self.batch_size
        verbose = self.verbose if verbose is None else verbose
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        own_progress = progress is None and verbose and len(ids) > batch_size
        if own_progress:
            progress = pt.tqdm(total=len(ids), desc=desc, unit="text")
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                rows = order[start:start + batch_size]
                out[rows] = self._forward([ids[i] for i in rows])
                if progress is not None:
                    progress.update(len(rows))
        if own_progress:
            progress.close()
        check_finite(out, range(len(out)), f"{desc}: the model's vector of the text at position")
        return out

    def _forward(self, batch: List[List[int]]) -> np.ndarray:
        return self.embed(batch).cpu().numpy()

    def embed(self, batch: List[List[int]]) -> torch.Tensor:
        """Pooled (normalised) vectors of one batch of token ids; differentiable outside inference mode."""
        input_ids, mask = pad_batch(batch, self.pad_token_id, left=self.pooling.last_token)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        if self.exported is None:
            hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        elif torch.is_grad_enabled():
            raise RuntimeError(f"backend={self.backend!r} computes no gradients: train with backend='torch'")
        else:
            hidden = self.exported(input_ids, mask)
        work = EncodeStats(1, len(batch), int(mask.sum()), mask.numel())
        add_stats(self, work)
        for counter in self._open_counters():
            counter.add(work)
        return pool(hidden, mask, self.pooling)

    @contextlib.contextmanager
    def counting(self) -> Iterator[EncodeStats]:
        """``with model.counting() as stats:`` counts the forward passes this thread makes inside the block
        (blocks nest; each counts its own). ``model.stats`` is the total of all threads since loading, so
        a difference of it would count other threads' work too."""
        stats = EncodeStats()
        counters = self._open_counters()
        counters.append(stats)
        try:
            yield stats
        finally:
            del counters[next(i for i, counter in enumerate(counters) if counter is stats)]

    def _open_counters(self) -> List[EncodeStats]:
        """This thread's open ``counting`` records."""
        if not hasattr(self._counters, "open"):
            self._counters.open = []
        return self._counters.open

    # ---- identity -------------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """What a document vector depends on besides its text: every weight tensor the model loads, the
        architecture, the tokenizer's behaviour, pooling and document formatting; nothing else
        (``fingerprint.py`` says what counts and what does not).

        Stored with an index, so that vectors of another model, of a fine-tuned copy, or of a copy whose
        tokenizer no longer lowercases, are never mixed with this one's. The tensors are hashed from the
        checkpoint's files, in their stored precision (``fingerprint.weights_digest``), once per model
        object: one checkpoint matches whether stored as safetensors or ``.bin``, sharded or not, and on
        CPU (float32) or GPU (bfloat16); weights changed in memory after loading are not seen."""
        if self._fingerprint is None:
            config = self.backbone.config.to_dict()
            for key in ("_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version",
                        "attn_implementation", "_attn_implementation"):
                config.pop(key, None)
            digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
            digest.update(weights_digest(self.checkpoint_path, self.backbone,
                                         not_loaded=self.weights_not_loaded).encode())
            # what we apply of the tokenizer ourselves: decoders get an end-of-text id appended and are cut
            # by us; encoders are cut by the tokenizer, on its truncation side
            used = {"eos_token_id": self.eos_token_id} if self.pooling.last_token else \
                {"truncation_side": self.tokenizer.truncation_side}
            self._fingerprint = {
                "model": str(self.model_name_or_path),
                "fingerprint_version": FINGERPRINT_VERSION,
                "weights_sha256": digest.hexdigest(),
                "tokenizer_sha256": tokenizer_digest(self.tokenizer, **used),
                "dim": self.dim,
                "pooling": self.pooling.mode,
                "normalize": self.pooling.normalize,
                "max_length": self.max_length,
                "doc_max_words": self.doc_max_words,
                **({} if self.inference is None else {"inference": self.inference}),
            }
        return dict(self._fingerprint)

    def prompt_vector_settings(self) -> dict:
        """What the vector of a rendered listwise prompt depends on besides its text: the fingerprint, the
        prompt token limit (a longer prompt is cut by an encoder, refused by a decoder), and how the
        backbone computes (dtype, or an exported backbone's precision; device type; attention implementation:
        bfloat16 and float32 vectors differ); not the model's name. The key of a prompt-vector cache
        (``prompt_cache.PromptVectorCache``)."""
        encoder = {k: v for k, v in self.fingerprint().items() if k != "model"}  # a copy's name does not count
        return {"encoder": encoder, "prompt_max_tokens": min(self.prompt_max_tokens, self.position_limit),
                "dtype": self.precision, "device": self.device.type,
                "attn_implementation": self.backbone.config._attn_implementation}

    # ---- transformer factories ------------------------------------------------------------------
    def query_encoder(self, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None) -> pt.Transformer:
        """Q frame -> adds ``query_vec`` and its tag ``query_vec_model`` (``provenance``); empty queries get no
        rows and a warning; a ``query_vec`` of this model (a pseudo-query) is passed on, another refused."""
        from .encoders import E2RankQueryEncoder
        return E2RankQueryEncoder(self, batch_size=batch_size, verbose=verbose)

    def doc_encoder(self, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                    text_field: str = "text") -> pt.Transformer:
        """D frame (``docno``, ``text``) -> adds ``doc_vec`` and its tag ``doc_vec_model`` (``provenance``)."""
        from .encoders import E2RankDocEncoder
        return E2RankDocEncoder(self, batch_size=batch_size, verbose=verbose, text_field=text_field)

    def indexer(self, index, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                text_field: str = "text", mode: str = "create", chunk_size: int = 4096,
                missing_text: str = "error", corpus_stamp: Optional[dict] = None,
                overwrite: Optional[bool] = None) -> pt.Indexer:
        """Indexes records with text (encoded here) or ``doc_vec`` (from ``doc_encoder()``) into ``index`` (an
        ``E2RankIndex``, a FlexIndex or a path): ``mode`` is ``"create"`` (an existing index is refused),
        ``"overwrite"`` or ``"append"`` (new docnos only); built aside and swapped in when complete, in committed
        chunks of ``chunk_size`` documents (a restarted build resumes), sharded under torchrun
        (``index.indexer.E2RankIndexer``). A missing text (None/NaN) is an error unless ``missing_text="empty"``;
        ``corpus_stamp`` (``data.corpus_stamp(dataset)``) is stored with the index. ``overwrite=True``:
        deprecated spelling of ``mode="overwrite"``."""
        from ..index.indexer import E2RankIndexer
        return E2RankIndexer(self, index, batch_size=batch_size, verbose=verbose, text_field=text_field, mode=mode,
                             chunk_size=chunk_size, missing_text=missing_text, corpus_stamp=corpus_stamp,
                             overwrite=overwrite)

    def retriever(self, index, *, num_results: int = 1000, batch_size: Optional[int] = None,
                  verbose: Optional[bool] = None) -> pt.Transformer:
        """Q frame -> top ``num_results`` documents of ``index`` by exact dot product; a frame of this model's
        pseudo-queries (``prompt_encoder()``) is searched with them (PRF re-retrieval)."""
        from ..index.artifact import as_index
        index = as_index(index)
        index.check_model(self)
        return self.query_encoder(batch_size=batch_size, verbose=verbose) >> index.retriever(num_results=num_results)

    def scorer(self, index=None, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
               text_field: str = "text") -> pt.Transformer:
        """Reranks candidates by plain query-document cosine (no listwise prompt)."""
        from ..rerank.scorer import E2RankScorer
        return E2RankScorer(self, index=index, batch_size=batch_size, verbose=verbose, text_field=text_field)

    def prompt_encoder(self, num_input_docs: Optional[int] = None, *, task: Optional[str] = None,
                       prompt_variant: Optional[str] = None, prompt_doc_max_tokens: Optional[int] = None,
                       prompt_max_tokens: Optional[int] = None, batch_size: Optional[int] = None,
                       verbose: Optional[bool] = None, text_field: str = "text", cache=None) -> pt.Transformer:
        """R frame -> Q frame ``qid, query, query_vec, query_vec_model``: the listwise prompt's embedding,
        E2Rank's pseudo-query, tagged with this model (``provenance``). ``>> index.retriever()`` (or
        ``>> model.retriever(index)``) is PRF re-retrieval. ``cache``: a directory for the prompt vectors
        (``prompt_cache.py``: keyed by the rendered prompt and every setting that changes its vector;
        stored as raw float32)."""
        from ..rerank.prompt_encoder import E2RankPromptEncoder
        prompt = self.listwise_prompt(num_input_docs=num_input_docs, task=task, variant=prompt_variant,
                                      prompt_doc_max_tokens=prompt_doc_max_tokens, prompt_max_tokens=prompt_max_tokens)
        return E2RankPromptEncoder(self, prompt, batch_size=batch_size, verbose=verbose, text_field=text_field,
                                   cache=cache)

    def reranker(self, num_input_docs: Optional[int] = None, index=None, *, task: Optional[str] = None,
                 prompt_variant: Optional[str] = None, window: Optional[int] = None, stride: Optional[int] = None,
                 prompt_doc_max_tokens: Optional[int] = None, prompt_max_tokens: Optional[int] = None,
                 batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text", cache=None) -> pt.Transformer:
        """The listwise PRF reranker (pt_docs/specification.rst §6): ``prompt_encoder`` >> the candidates'
        vectors >> dot product; with ``index``, one forward pass per query. Prompt settings left ``None`` are the
        model's (``listwise_prompt``)."""
        from ..rerank.reranker import E2RankReranker
        prompt = self.listwise_prompt(num_input_docs=num_input_docs, task=task, variant=prompt_variant,
                                      prompt_doc_max_tokens=prompt_doc_max_tokens, prompt_max_tokens=prompt_max_tokens)
        return E2RankReranker(self, prompt, index=index, window=window, stride=stride, batch_size=batch_size,
                              verbose=verbose, text_field=text_field, cache=cache)
