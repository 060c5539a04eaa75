"""Model identity (``E2Rank.fingerprint``): the weight tensors the model loads and the tokenizer's behaviour, as
digests of exactly what changes a vector (one checkpoint, one identity, however it is stored or run). A weights
digest of 1 GiB or more is cached beside the files (``CACHE_FILE``), keyed by each file's device, inode, size,
mtime and ctime."""
import contextlib
import hashlib
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional

CACHE_FROM_BYTES = 1 << 30
CACHE_FILE = ".e2rank-fingerprint.json"
_CACHE_FORMAT = 2

#: safetensors' dtype codes, in torch's spelling (``torch.float32`` -> ``float32``).
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

#: The parts of a fast tokenizer that turn a text into ids (``E2Rank`` sets padding and truncation per call).
_TOKENIZER_PARTS = ("normalizer", "pre_tokenizer", "model", "post_processor")
#: Settings of a slow tokenizer that do not turn text into ids.
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
    """sha256 over the name (the model's own), dtype, shape and bytes of each tensor ``model`` (loaded from
    ``path``) is made of, read from the weight files in name order; ``not_loaded``: stored names loading left
    unused (a head). Raises ``FileNotFoundError`` without weight files."""
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
    """sha256 of how ``tokenizer`` turns text into ids (a fast one's normalizer, pre-tokenizer, model, added
    tokens and post-processor; a slow one's class, vocabulary, added tokens and settings) and of ``used``, the
    settings of it the caller applies."""
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
    """``(name, dtype, shape, read)`` of each tensor, ``read()`` giving its bytes (dtype in torch's spelling)."""
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
    """Best effort: a read-only directory means hashing again next time."""
    try:
        tmp = directory / f"{CACHE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"format": _CACHE_FORMAT, "files": stamp, "selection": selection,
                                   "sha256": value}))
        os.replace(tmp, directory / CACHE_FILE)
    except OSError:
        pass
