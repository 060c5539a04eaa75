"""Model identity (``E2Rank.fingerprint``): the weight tensors the model loads and the tokenizer's behaviour, as
digests of exactly what changes a vector (one checkpoint, one identity, however it is stored or run). A weights
digest of 1 GiB or more is cached beside the files (``CACHE_FILE``), keyed by each file's device, inode, size,
mtime and ctime."""
import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional

import torch

from ..io import ArtifactLocked, atomic_file

CACHE_FROM_BYTES = 1 << 30
CACHE_FILE = ".e2rank-fingerprint.json"

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
    key = {"format": 2, "files": [_stamp(file) for file in files], "selection": selection}
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        cached = json.loads((directory / CACHE_FILE).read_text())
        if cached["key"] == key:
            return cached["sha256"]
    digest = hashlib.sha256()
    with contextlib.ExitStack() as open_files:
        tensors: Dict[str, Callable[[], torch.Tensor]] = {}
        for file in files:
            for stored, read in _tensors(file, open_files).items():
                name = name_of(stored)
                if name is not None:
                    tensors.setdefault(name, read)  # a tied tensor stored twice counts once
        for name, read in sorted(tensors.items()):
            tensor = read().contiguous()
            digest.update(json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)]).encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    value = digest.hexdigest()
    if sum(file.stat().st_size for file in files) >= CACHE_FROM_BYTES:  # best effort: read-only, another writer
        with contextlib.suppress(OSError, ArtifactLocked), atomic_file(directory / CACHE_FILE) as out:
            json.dump({"key": key, "sha256": value}, out)
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


def _tensors(file: Path, open_files: contextlib.ExitStack) -> Dict[str, Callable[[], torch.Tensor]]:
    """Each tensor's stored name and a reader of it, from a safetensors or PyTorch ``.bin`` file."""
    if file.suffix != ".safetensors":
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        return {name: (lambda t=t: t) for name, t in state.items()}
    from safetensors import safe_open
    handle = open_files.enter_context(safe_open(file, "pt"))
    return {name: functools.partial(handle.get_tensor, name) for name in handle.keys()}


def _stamp(file: Path) -> list:
    """What copying a file over ``file`` cannot keep: ctime, and the inode of a file created anew."""
    status = file.stat()
    return [file.name, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
