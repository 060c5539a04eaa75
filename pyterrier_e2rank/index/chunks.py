"""The committed chunks of an index build (``.<name>.chunks/`` beside the index), so that a restarted build
resumes after its last committed chunk."""
import contextlib
import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from ..io import CorruptArtifact, atomic_file, writer_lock


class EncodedChunk(NamedTuple):
    chunk_id: int
    docnos: List[str]
    vectors: np.ndarray
    digest: str
    texts: Optional[List[str]] = None  # kept in the index, when it keeps text


class OtherChunk(CorruptArtifact):
    """A committed chunk of other documents, or of another model or settings, than the one asked for."""


class ChunkStore:
    """Encoded chunks of one build, committed one by one (``chunk-N.f4``, then ``chunk-N.json``, each atomically),
    reused only for the same content and ``plan`` and when intact; each process locks its shard until the end."""

    def __init__(self, directory: Path, plan: dict, *, rank: int = 0):
        self.directory = Path(directory)
        self.plan = plan
        self.rank = rank
        self._plan_digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
        self._lock = None

    def __enter__(self) -> "ChunkStore":
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = writer_lock(self.directory / f"process-{self.rank}")
        self._lock.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.__exit__(*exc_info)
        with contextlib.suppress(OSError):  # another process's lock still in it, or chunks kept for a restart
            self.directory.rmdir()

    def _paths(self, chunk_id: int):
        stem = self.directory / f"chunk-{chunk_id:07d}"
        return stem.with_suffix(".json"), stem.with_suffix(".f4")

    def has(self, chunk_id: int, digest: str) -> bool:
        """Whether the chunk is committed with this content under this plan, and intact; a damaged one is
        removed, named in a warning, so that it is encoded again."""
        try:
            self._read(chunk_id, digest)
            return True
        except (FileNotFoundError, OtherChunk):  # never committed, or other documents, model or settings
            return False
        except CorruptArtifact as damaged:
            warnings.warn(f"{damaged}; encoding chunk {chunk_id} again", stacklevel=2)
            for path in self._paths(chunk_id):
                path.unlink(missing_ok=True)
            return False

    def commit(self, chunk: EncodedChunk) -> None:
        record, vector_file = self._paths(chunk.chunk_id)
        data = np.ascontiguousarray(chunk.vectors, dtype=np.float32).tobytes()
        with atomic_file(vector_file, mode="wb") as out:
            out.write(data)
        with atomic_file(record) as out:  # last: the chunk is committed once its vectors are on disk
            out.write(json.dumps({"docnos": chunk.docnos, "digest": chunk.digest, "plan": self._plan_digest,
                                  "texts": chunk.texts, "sha256": content_digest(chunk.docnos, chunk.texts, data)}))

    def load(self, chunk_id: int, digest: str) -> Tuple[List[str], np.ndarray, Optional[List[str]]]:
        """The chunk's docnos, vectors ``(n, dim)`` and texts (or ``None``): ``FileNotFoundError`` for a chunk
        never committed, ``CorruptArtifact`` naming the file for a damaged one, or one of other content than
        ``digest`` or of another plan."""
        try:
            return self._read(chunk_id, digest)
        except CorruptArtifact as damaged:
            raise CorruptArtifact(f"{damaged}; nothing was written. Start the build again: this chunk is encoded "
                                  f"again, the intact ones are kept") from None

    def _read(self, chunk_id: int, digest: str) -> Tuple[List[str], np.ndarray, Optional[List[str]]]:
        """``load``'s docnos and vectors; ``OtherChunk`` for other content or plan, ``CorruptArtifact`` naming
        a damaged file."""
        record, vector_file = self._paths(chunk_id)
        if not record.exists():
            raise FileNotFoundError(f"chunk {chunk_id} of the build in {self.directory} is missing: did a process "
                                    f"fail? Start the build again: committed chunks are kept")
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            if not isinstance(saved["docnos"], list) or not isinstance(saved.get("texts"), (list, type(None))) or \
                    not all(isinstance(saved[k], str) for k in ("digest", "plan", "sha256")):
                raise TypeError("docnos, texts, digest, plan or sha256 of another type")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptArtifact(f"the chunk record {record} is damaged ({type(e).__name__}: {e})") from None
        if saved["plan"] != self._plan_digest:
            raise OtherChunk(f"the chunk record {record} was written for another model or other settings")
        if saved["digest"] != digest:
            raise OtherChunk(f"the chunk record {record} holds other documents than chunk {chunk_id} of this "
                             f"build (digest {saved['digest'][:12]}, not {digest[:12]}): another build's")
        try:
            data = vector_file.read_bytes()
        except OSError as e:
            raise CorruptArtifact(f"the chunk vectors {vector_file} cannot be read ({e.strerror})") from None
        shape = (len(saved["docnos"]), self.plan["dim"])
        if len(data) != 4 * shape[0] * shape[1]:
            raise CorruptArtifact(f"the chunk vectors {vector_file} hold {len(data)} bytes, not the {shape[0]} x "
                                  f"{shape[1]} float32 its record {record.name} lists")
        if content_digest(saved["docnos"], saved.get("texts"), data) != saved["sha256"]:
            raise CorruptArtifact(f"the chunk vectors {vector_file} (or the docnos or texts of {record.name}) do not "
                                  f"match the checksum in that record: the file is damaged")
        return saved["docnos"], np.frombuffer(data, dtype=np.float32).reshape(shape), saved.get("texts")

    def remove(self) -> None:
        """Delete the committed chunks (and a dead writer's temporary files), not the processes' lock files."""
        for entry in self.directory.iterdir():
            if not re.fullmatch(r"\.process-\d+\.lock", entry.name):
                entry.unlink(missing_ok=True)


def content_digest(docnos: List[str], texts: Optional[List[str]], data: bytes) -> str:
    """The hex sha256 of ``data`` (vectors' bytes), ``texts`` (if any) and ``docnos``: a chunk's digest and the
    checksum of a committed chunk."""
    digest = hashlib.sha256(data)
    for text in texts or ():
        digest.update(str(text).encode("utf-8", "surrogatepass") + b"\0")
    return docnos_digest(digest, docnos)


def docnos_digest(digest, docnos: List[str]) -> str:
    """The hex digest of ``digest`` (a hashlib object, of vectors) updated with ``docnos``: a chunk's checksum,
    and the ``digest`` of an index's vectors and docnos."""
    for docno in docnos:
        digest.update(str(docno).encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()
