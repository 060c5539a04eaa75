"""Model identity: a digest of every weight tensor of a checkpoint, as stored on disk.

Stored with every index, so that vectors of another model, or of a fine-tuned copy of the same model
(one training step changes document vectors down to cosine 0.5), are refused. The tensors are hashed
from the weight files in their stored precision, not from the loaded model, so a checkpoint has one
identity whether it runs in float32 on a CPU or bfloat16 on a GPU.

Cost (sha256 of the raw tensor bytes, memory-mapped): see ``benchmarks/fingerprint.py``; for
checkpoints of 1 GiB and more the digest is cached beside the weights in ``.e2rank-fingerprint.json``,
keyed by the weight files' names, sizes and modification times (skipped where the directory is
read-only).
"""
import contextlib
import hashlib
import json
import mmap
import os
import struct
from pathlib import Path
from typing import List, Optional

#: Weight files from this size on have their digest cached beside them.
CACHE_FROM_BYTES = 1 << 30
CACHE_FILE = ".e2rank-fingerprint.json"

#: Tensors that never reach an embedding (a causal LM's vocabulary projection).
_IGNORED_PREFIXES = ("lm_head.",)


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


def weights_digest(path: str) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order, of all weight files."""
    directory = local_checkpoint_dir(path)
    files = weight_files(directory)
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cached = _read_cache(directory, stamp)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with contextlib.ExitStack() as open_files:
        entries = [entry for file in files for entry in _tensor_entries(file, open_files)]
        for name, dtype, shape, read in sorted(entries, key=lambda entry: entry[0]):
            if name.startswith(_IGNORED_PREFIXES):
                continue
            digest.update(json.dumps([name, dtype, shape]).encode())
            digest.update(read())
    value = digest.hexdigest()
    if sum(size for _, size, _ in stamp) >= CACHE_FROM_BYTES:
        _write_cache(directory, stamp, value)
    return value


def _tensor_entries(file: Path, open_files: contextlib.ExitStack):
    """``(name, dtype, shape, read)`` of each tensor, ``read()`` giving its bytes one tensor at a time
    (a checkpoint is never held in memory whole); safetensors are read without torch."""
    if file.suffix != ".safetensors":
        import torch
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        return [(name, str(t.dtype), list(t.shape),
                 lambda t=t: t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                for name, t in state.items()]
    handle = open_files.enter_context(open(file, "rb"))
    data = open_files.enter_context(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_size])
    start = 8 + header_size
    return [(name, entry["dtype"], entry["shape"],
             lambda b=entry["data_offsets"]: data[start + b[0]:start + b[1]])
            for name, entry in header.items() if name != "__metadata__"]


def _read_cache(directory: Path, stamp) -> Optional[str]:
    try:
        cached = json.loads((directory / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return cached.get("sha256") if cached.get("files") == stamp else None


def _write_cache(directory: Path, stamp, value: str) -> None:
    """Best effort: a read-only directory (a shared hub cache) just means hashing again next time."""
    try:
        tmp = directory / f"{CACHE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"files": stamp, "sha256": value}))
        os.replace(tmp, directory / CACHE_FILE)
    except OSError:
        pass
