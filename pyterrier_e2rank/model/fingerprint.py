"""Model identity: the parts of a checkpoint that decide its vectors, as digests (``E2Rank.fingerprint``).

The identity covers exactly what changes a vector, and nothing that does not:

- ``weights_digest``: the weight tensors the embedding model loads, hashed from the weight files in their
  stored precision, under the names the model gives them, with one spelling of each dtype. So one
  checkpoint has one identity however it is stored: safetensors or PyTorch ``.bin`` (their dtypes,
  ``F32`` and ``torch.float32``, are both ``float32`` here), sharded or not, saved from a task model
  (tensors under ``model.``/``bert.``, a language-model head) or from the base model, with or without
  buffers the model computes itself (BERT's ``position_ids``), tied tensors stored once or twice; and it
  runs in float32 or bfloat16 alike. Tensors the model did not load (a head) are left out; any other
  stored tensor counts under its stored name (never a silent omission).
- ``tokenizer_digest``: how the tokenizer turns text into ids, as loaded: normalizer (lowercasing,
  accents), pre-tokenizer, vocabulary and merges, added and special tokens, post-processor; so
  ``do_lower_case`` in ``tokenizer_config.json`` counts (it rewrites the normalizer), and a copy holding
  only ``vocab.txt`` equals one holding ``tokenizer.json``. The decoder, and the padding and truncation
  state stored in ``tokenizer.json``, never reach an id we embed and are left out. (0.4 s for Qwen3's
  151,000-token vocabulary; each part is hashed in its own serialisation, never parsed.)
- the architecture (config), pooling and document settings: in ``E2Rank.fingerprint``.

Cost (sha256 of the raw tensor bytes, memory-mapped): see ``benchmarks/fingerprint.py``; for
checkpoints of 1 GiB and more the weights' digest is cached beside them in ``.e2rank-fingerprint.json``
(skipped where the directory is read-only), keyed by each weight file's name, device, inode, size,
mtime and ctime. ``cp -p``, ``rsync -t`` and ``tar -x`` restore a replaced file's mtime, but nothing
but the kernel sets ctime (to the current time, on every write and on every change of the mtime), and
a file written anew under the old name is a new inode or a new ctime: a replaced weight file is hashed
again.
"""
import contextlib
import hashlib
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional

#: Weight files from this size on have their digest cached beside them.
CACHE_FROM_BYTES = 1 << 30
CACHE_FILE = ".e2rank-fingerprint.json"
#: 2: the weight files' stamps hold device, inode and ctime, and the digest its tensor selection.
_CACHE_FORMAT = 2

#: safetensors' dtype codes, in torch's spelling (``torch.float32`` -> ``float32``).
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

#: The parts of a fast tokenizer's backend that turn a text into ids (its decoder turns ids into text, and
#: its padding and truncation state is set by ``E2Rank`` per call).
_TOKENIZER_PARTS = ("normalizer", "pre_tokenizer", "model", "post_processor")
#: Settings of a Python (slow) tokenizer that say where and how it was loaded, or what it does beyond
#: text to ids (decoding, padding, truncating: ``E2Rank`` pads, and records the length limits itself).
_UNUSED_TOKENIZER_SETTINGS = ("name_or_path", "vocab_file", "merges_file", "tokenizer_file", "special_tokens_map_file",
                              "is_local", "local_files_only", "backend", "cache_dir", "revision", "token",
                              "trust_remote_code", "use_fast", "_commit_hash", "model_max_length",
                              "clean_up_tokenization_spaces", "padding_side", "truncation_side")


def local_checkpoint_dir(path: str) -> Path:
    """The directory holding a model's weight files: ``path`` itself, or a hub id's cached snapshot."""
    if os.path.isdir(path):
        return Path(path)
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(path, local_files_only=True))


def weight_files(directory: Path) -> List[Path]:
    """The checkpoint's weight files: safetensors (sharded or not), else PyTorch ``.bin`` files."""
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        files = sorted(directory.glob(pattern))
        if files:
            return files
    raise FileNotFoundError(f"no weight files (*.safetensors, pytorch_model*.bin) in {directory}: cannot "
                            f"fingerprint the model")


def weights_digest(path: str, model, *, not_loaded: Collection[str] = ()) -> str:
    """sha256 over the name, dtype, shape and bytes of each tensor that ``model`` (the ``nn.Module``
    loaded from ``path``) is made of, in name order, read from the weight files of ``path``.

    Names are the model's own (a stored ``model.layers.0...`` of a task model counts as ``layers.0...``;
    of tied tensors, the first name); ``not_loaded``: stored names that loading reported unused
    (transformers' ``unexpected_keys``, e.g. ``lm_head.weight``); they and the model's own non-persistent
    buffers are left out. Raises ``FileNotFoundError`` without weight files."""
    directory = local_checkpoint_dir(path)
    files = weight_files(directory)
    name_of = _model_names(model, not_loaded)
    selection = hashlib.sha256(json.dumps([model.base_model_prefix, sorted(not_loaded),
                                           sorted(model.state_dict())]).encode()).hexdigest()
    stamp = [_stamp(file) for file in files]
    cached = _read_cache(directory, stamp, selection)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with contextlib.ExitStack() as open_files:
        tensors: Dict[str, tuple] = {}
        for file in files:
            for stored, dtype, shape, read in _tensor_entries(file, open_files):
                name = name_of(stored)
                if name is not None:
                    tensors.setdefault(name, (dtype, shape, read))  # a tied tensor stored twice counts once
        for name, (dtype, shape, read) in sorted(tensors.items()):
            digest.update(json.dumps([name, dtype, shape]).encode())
            digest.update(read())
    value = digest.hexdigest()
    if sum(file.stat().st_size for file in files) >= CACHE_FROM_BYTES:
        _write_cache(directory, stamp, selection, value)
    return value


def tokenizer_digest(tokenizer, **used) -> str:
    """sha256 of how ``tokenizer`` (as loaded) turns text into ids, and of ``used``: the settings of it
    that the caller applies (the end-of-text id appended, the side truncation cuts).

    A fast tokenizer: its backend's normalizer, pre-tokenizer, model (vocabulary, merges), added tokens
    and post-processor. A slow one: its class, vocabulary, added tokens and settings."""
    if tokenizer.is_fast:  # each part's own serialisation (the model's lists its vocabulary and merges by id)
        backend = tokenizer.backend_tokenizer
        parts = {name: getattr(backend, name) for name in _TOKENIZER_PARTS}
        state = {name: part if part is None else hashlib.sha256(part.__getstate__()).hexdigest()
                 for name, part in parts.items()}
        state["added_tokens"] = {i: repr(t) for i, t in backend.get_added_tokens_decoder().items()}  # with flags
    else:
        state = {"class": type(tokenizer).__name__, "vocab": tokenizer.get_vocab(),
                 "added_tokens": {i: repr(t) for i, t in tokenizer.added_tokens_decoder.items()},
                 "settings": {k: str(v) for k, v in tokenizer.init_kwargs.items()
                              if k not in _UNUSED_TOKENIZER_SETTINGS}}
    return hashlib.sha256(json.dumps([state, used], sort_keys=True).encode()).hexdigest()


def _model_names(model, not_loaded: Collection[str]) -> Callable[[str], Optional[str]]:
    """Stored tensor name -> the model's name for it (``None``: a tensor the model does not load)."""
    state = model.state_dict(keep_vars=True)
    first: Dict[int, str] = {}
    own = {name: first.setdefault(id(tensor), name) for name, tensor in sorted(state.items())}
    computed = {name for name, _ in model.named_buffers()} - set(state)  # non-persistent: never read from a file
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else None

    def name_of(stored: str) -> Optional[str]:
        bare = stored[len(prefix):] if prefix and stored.startswith(prefix) else stored
        for name in (stored, bare):
            if name in own:
                return own[name]
        return None if stored in not_loaded or bare in computed else stored
    return name_of


def _tensor_entries(file: Path, open_files: contextlib.ExitStack):
    """``(name, dtype, shape, read)`` of each tensor, ``read()`` giving its bytes one tensor at a time
    (a checkpoint is never held in memory whole); safetensors are read without torch. ``dtype`` is
    spelled as torch spells it, without ``torch.``, whatever the file format."""
    if file.suffix != ".safetensors":
        import torch
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        return [(name, str(t.dtype).removeprefix("torch."), list(t.shape),
                 lambda t=t: t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                for name, t in state.items()]
    handle = open_files.enter_context(open(file, "rb"))
    data = open_files.enter_context(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_size])
    start = 8 + header_size
    return [(name, _SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"].lower()), entry["shape"],
             lambda b=entry["data_offsets"]: data[start + b[0]:start + b[1]])
            for name, entry in header.items() if name != "__metadata__"]


def _stamp(file: Path) -> list:
    """What copying a file over ``file`` cannot keep: ctime, and the inode of a file created anew."""
    status = file.stat()
    return [file.name, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]


def _read_cache(directory: Path, stamp, selection: str) -> Optional[str]:
    try:
        cached = json.loads((directory / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or [cached.get(k) for k in ("format", "files", "selection")] != \
            [_CACHE_FORMAT, stamp, selection]:
        return None
    return cached.get("sha256")


def _write_cache(directory: Path, stamp, selection: str, value: str) -> None:
    """Best effort: a read-only directory (a shared hub cache) just means hashing again next time."""
    try:
        tmp = directory / f"{CACHE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"format": _CACHE_FORMAT, "files": stamp, "selection": selection,
                                   "sha256": value}))
        os.replace(tmp, directory / CACHE_FILE)
    except OSError:
        pass
