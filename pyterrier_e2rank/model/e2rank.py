"""``E2Rank``: one embedding model, and the factory of every transformer that uses it."""
import contextlib
import hashlib
import json
import threading
from typing import Iterator, List, Optional, Sequence

import numpy as np
import pyterrier as pt
import torch

from .backends import ExportedBackbone, check_backend, inference_label, openvino_precision
from ..checks import check_encodable, check_finite, positive_int
from ..deprecation import keyword_only_since, renamed_keywords
from ..equality import EqualBySettings
from .fingerprint import tokenizer_digest, weights_digest
from .loading import DEFAULT_MODEL, read_pooling, read_prompt_settings, resolve_model_path
from .pooling import Pooling, pad_batch, pool
from ..rerank.prompt import ListwisePrompt
from .stats import EncodeStats, add_stats
from .text import DEFAULT_QUERY_TASK, DOC_MAX_WORDS, doc_token_cap, format_query, truncate_words

FINGERPRINT_VERSION = 3
_AUTO = "auto"


class E2Rank(EqualBySettings):
    """An E2Rank (or any embedding) model, and a factory of PyTerrier transformers. Decoders follow
    pt_docs/specification.rst §2-§4; sentence-transformers encoders keep their pooling and ``max_seq_length``.

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
        attn_implementation: transformers' attention (e.g. ``"sdpa"``, ``"flash_attention_2"``; default: its choice).
        cache_doc_vectors: keep each document vector computed, keyed by its text (``clear_doc_cache()``).
        backend: ``"torch"``, or on the CPU the backbone exported to ONNX (once per model identity, saved under
            ``backends.export_cache()``) and run by ``"openvino"`` or ``"onnx"`` (ONNX Runtime).
        quantize: ``None``, or ``"int8"`` with ``backend="onnx"``.
        verbose: progress bars.

    Attributes beside the arguments: ``inference`` (the fingerprint's: ``"openvino"`` and ``"onnx"`` for float32,
    ``"openvino-bf16"``, ``"onnx-int8"``; None for PyTorch), ``precision``, ``exported`` (the exported backbone;
    None for PyTorch), ``dim``, ``stats``.

    Raises:
        ValueError: a backend/quantization this model or device cannot use (naming both).
        ImportError: a missing package, with its pip line.
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
        default = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = (dtype or default) if backend == "torch" else torch.float32
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
        # the quantization, or OpenVINO's precision on this CPU: resolved once, for the fingerprint and the export
        variant = openvino_precision(dtype) if backend == "openvino" else quantize
        self.inference = inference_label(backend, variant)
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
        self.prompt_max_tokens = (positive_int(prompt_max_tokens, "prompt_max_tokens", allow_none=True)
                                  or self.position_limit)
        self.prompt_settings = read_prompt_settings(path)
        default_task = DEFAULT_QUERY_TASK if self.pooling.last_token else None
        self.query_task = default_task if query_task == _AUTO else query_task
        self.doc_max_words = doc_max_words
        self.batch_size = batch_size
        self.verbose = verbose
        self.stats = EncodeStats()
        self._counters = threading.local()
        self.doc_cache: Optional[dict] = {} if cache_doc_vectors else None
        self.exported = None if backend == "torch" else ExportedBackbone(
            backend, self.backbone, variant=variant, identity=self.fingerprint())

    def _settings(self) -> tuple:
        """What makes two model objects equal: the checkpoint and every setting that shapes a vector."""
        return (str(self.checkpoint_path), str(self.device), self.inference, self.precision, self.pooling,
                self.query_task, self.max_length, self.prompt_max_tokens, self.doc_max_words,
                tuple(sorted(self.prompt_settings.items())))

    def __repr__(self):
        given = {"backend": None if self.backend == "torch" else self.backend, "quantize": self.quantize,
                 "dtype": self.requested_dtype, "cache_doc_vectors": True if self.doc_cache is not None else None}
        options = "".join(f", {k}={v!r}" for k, v in given.items() if v is not None)
        return (f"E2Rank({self.model_name_or_path!r}, device={str(self.device)!r}, batch_size={self.batch_size}"
                f"{options})")

    @property
    def dim(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def precision(self) -> str:
        """PyTorch's dtype (``"float32"``, ``"bfloat16"``), or an exported backbone's (``"f32"``, ``"bf16"``...)."""
        return str(self.dtype).removeprefix("torch.") if self.exported is None else self.exported.precision

    # ---- encoding -------------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str], *, batch_size: Optional[int] = None,
                       verbose: Optional[bool] = None, task: Optional[str] = _AUTO) -> np.ndarray:
        """Normalised query vectors, shape ``[n, dim]``, instructed with ``task`` (``"auto"``: ``query_task``;
        ``None``: none)."""
        return self._encode(self.tokenize_queries(queries, task=task), batch_size, verbose, "encoding queries")

    def encode_docs(self, texts: Sequence[str], *, batch_size: Optional[int] = None,
                    verbose: Optional[bool] = None, progress=None) -> np.ndarray:
        """Normalised document vectors (cut to ``doc_max_words``), shape ``[n, dim]``; ``progress``: an open
        tqdm bar to advance instead of a new one."""
        if self.doc_cache is None or not all(isinstance(text, str) for text in texts):  # bad texts: reported there
            return self._encode(self.tokenize_docs(texts), batch_size, verbose, "encoding documents", progress)
        keys = [hashlib.sha256(text.encode()).digest() for text in texts]
        new = {key: text for key, text in zip(keys, texts) if key not in self.doc_cache}
        vectors = self._encode(self.tokenize_docs(list(new.values())), batch_size, verbose, "encoding documents",
                               progress)
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
    def tokenize_queries(self, queries: Sequence[str], *, max_length: Optional[int] = None,
                         task: Optional[str] = _AUTO) -> List[List[int]]:
        task = self.query_task if task == _AUTO else task
        return self._tokenize([format_query(q, task) for q in queries], append_eos=True,
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

    @renamed_keywords(variant="prompt_variant")
    def listwise_prompt(self, *, num_input_docs: Optional[int] = None, task: Optional[str] = None,
                        prompt_variant: Optional[str] = None, prompt_doc_max_tokens: Optional[int] = None,
                        prompt_max_tokens: Optional[int] = None) -> ListwisePrompt:
        """The prompt builder of this model: settings left ``None`` come from the checkpoint's
        ``e2rank_prompt.json``, else the paper's defaults; the total budget defaults to the model's positions."""
        given = {"num_input_docs": num_input_docs, "task": task, "prompt_variant": prompt_variant,
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
        bar = pt.tqdm(total=len(ids), desc=desc, unit="text") if own_progress else contextlib.nullcontext(progress)
        with torch.inference_mode(), bar as progress:
            for start in range(0, len(ids), batch_size):
                rows = order[start:start + batch_size]
                out[rows] = self.embed([ids[i] for i in rows]).cpu().numpy()
                if progress is not None:
                    progress.update(len(rows))
        check_finite(out, range(len(out)), f"{desc}: the model's vector of the text at position")
        return out

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
        for counter in getattr(self._counters, "open", ()):
            counter.add(work)
        return pool(hidden, mask, self.pooling)

    @contextlib.contextmanager
    def counting(self) -> Iterator[EncodeStats]:
        """``with model.counting() as stats:`` counts the forward passes this thread makes inside the block
        (blocks nest); ``model.stats`` counts all threads'."""
        stats = EncodeStats()
        counters = self._counters.__dict__.setdefault("open", [])
        counters.append(stats)
        try:
            yield stats
        finally:
            del counters[next(i for i, counter in enumerate(counters) if counter is stats)]

    # ---- identity -------------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """What a document vector depends on besides its text: the loaded weight tensors (hashed from the
        checkpoint's files once per model object), the architecture, the tokenizer's behaviour, pooling,
        document formatting and ``inference``."""
        if self._fingerprint is None:
            config = self.backbone.config.to_dict()
            for key in ("_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version",
                        "attn_implementation", "_attn_implementation"):
                config.pop(key, None)
            digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
            digest.update(weights_digest(self.checkpoint_path, self.backbone,
                                         not_loaded=self.weights_not_loaded).encode())
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

    def save_sentence_transformers(self, path, *, overwrite: bool = False):
        """Write this model to ``path`` for ``SentenceTransformer(path)``: the same query and document vectors,
        and ``E2Rank(path)``'s fingerprint is this one's (``sentence_transformers_export``). Returns the path."""
        from .sentence_transformers_export import save_sentence_transformers
        return save_sentence_transformers(self, path, overwrite=overwrite)

    def prompt_vector_settings(self) -> dict:
        """What a rendered prompt's vector depends on besides its text (the key of ``PromptVectorCache``): the
        fingerprint without the name, the prompt token limit, precision, device type and attention."""
        encoder = {k: v for k, v in self.fingerprint().items() if k != "model"}  # a copy's name does not count
        return {"encoder": encoder, "prompt_max_tokens": min(self.prompt_max_tokens, self.position_limit),
                "dtype": self.precision, "device": self.device.type,
                "attn_implementation": self.backbone.config._attn_implementation}

    # ---- transformer factories ------------------------------------------------------------------
    def query_encoder(self, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None) -> pt.Transformer:
        """Q frame -> + ``query_vec`` and its tag ``query_vec_model`` (``encoders.E2RankQueryEncoder``)."""
        from .encoders import E2RankQueryEncoder
        return E2RankQueryEncoder(self, batch_size=batch_size, verbose=verbose)

    def doc_encoder(self, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                    text_field: str = "text") -> pt.Transformer:
        """D frame (``docno``, ``text``) -> + ``doc_vec`` and its tag ``doc_vec_model``."""
        from .encoders import E2RankDocEncoder
        return E2RankDocEncoder(self, batch_size=batch_size, verbose=verbose, text_field=text_field)

    def indexer(self, index, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                text_field: str = "text", mode: str = "create", chunk_size: int = 4096,
                missing_text: str = "error", corpus_stamp: Optional[dict] = None,
                overwrite: Optional[bool] = None, store_text: Optional[bool] = None) -> pt.Indexer:
        """Indexes records with text or ``doc_vec`` into ``index`` (an ``E2RankIndex``, a FlexIndex or a path), in
        chunks of ``chunk_size`` (pt_docs/indexing.rst): ``mode`` ``"create"``, ``"overwrite"`` or ``"append"``; a
        missing text is an error unless ``missing_text="empty"``; ``corpus_stamp`` (``data.corpus_stamp(dataset)``)
        is stored with the index. ``store_text``: keep the documents' text for ``index.text_loader()`` (default:
        when they carry it, and for an append when the index keeps it; ``False``: never). ``overwrite=True``: the
        deprecated spelling of ``mode="overwrite"``."""
        from ..index.indexer import E2RankIndexer
        return E2RankIndexer(self, index, batch_size=batch_size, verbose=verbose, text_field=text_field, mode=mode,
                             chunk_size=chunk_size, missing_text=missing_text, corpus_stamp=corpus_stamp,
                             overwrite=overwrite, store_text=store_text)

    def retriever(self, index, *, num_results: int = 1000, batch_size: Optional[int] = None,
                  verbose: Optional[bool] = None) -> pt.Transformer:
        """Q frame -> top ``num_results`` documents of ``index`` by exact dot product (pseudo-queries of
        ``prompt_encoder()`` are searched as they are: PRF re-retrieval)."""
        from ..index.artifact import as_index
        index = as_index(index)
        index.check_model(self)
        return self.query_encoder(batch_size=batch_size, verbose=verbose) >> index.retriever(num_results=num_results)

    def scorer(self, index=None, *, batch_size: Optional[int] = None, verbose: Optional[bool] = None,
               text_field: str = "text") -> pt.Transformer:
        """Reranks candidates by plain query-document cosine (no listwise prompt); vectors from ``index`` if given."""
        from ..rerank.scorer import E2RankScorer
        return E2RankScorer(self, index=index, batch_size=batch_size, verbose=verbose, text_field=text_field)

    @keyword_only_since("num_input_docs")
    @renamed_keywords(variant="prompt_variant")
    def prompt_encoder(self, *, num_input_docs: Optional[int] = None, task: Optional[str] = None,
                       prompt_variant: Optional[str] = None, prompt_doc_max_tokens: Optional[int] = None,
                       prompt_max_tokens: Optional[int] = None, batch_size: Optional[int] = None,
                       verbose: Optional[bool] = None, text_field: str = "text", cache=None,
                       index=None) -> pt.Transformer:
        """R frame -> Q frame ``qid, query, query_vec, query_vec_model``: E2Rank's pseudo-query. Prompt settings
        as ``listwise_prompt``; ``cache``: a directory for the prompt vectors (``prompt_cache.py``); ``index``:
        an index keeping the text of frames without a ``text_field`` column."""
        from ..rerank.prompt_encoder import E2RankPromptEncoder
        prompt = self.listwise_prompt(num_input_docs=num_input_docs, task=task, prompt_variant=prompt_variant,
                                      prompt_doc_max_tokens=prompt_doc_max_tokens, prompt_max_tokens=prompt_max_tokens)
        return E2RankPromptEncoder(self, prompt, batch_size=batch_size, verbose=verbose, text_field=text_field,
                                   cache=cache, index=index)

    @keyword_only_since("num_input_docs", "index")
    @renamed_keywords(variant="prompt_variant")
    def reranker(self, index=None, *, num_input_docs: Optional[int] = None, task: Optional[str] = None,
                 prompt_variant: Optional[str] = None, window: Optional[int] = None, stride: Optional[int] = None,
                 prompt_doc_max_tokens: Optional[int] = None, prompt_max_tokens: Optional[int] = None,
                 batch_size: Optional[int] = None, verbose: Optional[bool] = None,
                 text_field: str = "text", cache=None) -> pt.Transformer:
        """The listwise PRF reranker (pt_docs/specification.rst §6): ``prompt_encoder`` >> the candidates'
        vectors (from ``index`` if given: one forward pass per query, and the text of a frame without it) >> dot
        product."""
        from ..rerank.reranker import E2RankReranker
        prompt = self.listwise_prompt(num_input_docs=num_input_docs, task=task, prompt_variant=prompt_variant,
                                      prompt_doc_max_tokens=prompt_doc_max_tokens, prompt_max_tokens=prompt_max_tokens)
        return E2RankReranker(self, prompt, index=index, window=window, stride=stride, batch_size=batch_size,
                              verbose=verbose, text_field=text_field, cache=cache)
