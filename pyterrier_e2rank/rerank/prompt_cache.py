"""The prompt-vector cache (``cache=``): a rendered prompt's vector is computed once, ever, and kept in
``DIR/prompts-<key>/vectors.sqlite3`` (pt_docs/retrieval-and-reranking.rst)."""
import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..io import CorruptArtifact
from ..model.encoders import ModelTransformer

DB_FILE = "vectors.sqlite3"
BUSY_TIMEOUT_S = 600
FORMAT = 1


def cache_directory(cache, settings: dict) -> Path:
    """``cache/prompts-<digest of settings>``."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache) / f"prompts-{key}"


class PromptVectorCache(ModelTransformer):
    """Frame with ``prompt`` -> + ``query_vec`` and its tag ``query_vec_model``: read from the cache under
    ``cache``, else computed by ``encoder`` (a ``PromptVectorEncoder``) and stored.

    Raises ``io.CorruptArtifact`` naming the directory for a damaged file, or one of other settings."""
    SETTINGS = ("directory", "encoder")

    def __init__(self, cache, encoder: pt.Transformer):
        self.model = encoder.model
        self.encoder = encoder
        self.dim = self.model.dim
        settings = self.model.prompt_vector_settings()
        self.stored = json.dumps({"format": FORMAT, "dim": self.dim, "settings": settings}, sort_keys=True)
        self.directory = cache_directory(cache, settings)
        self.path = self.directory / DB_FILE
        if not self.path.exists():
            self._create()
        with self._database() as db:
            self._check(db)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["prompt"], context=self)
        codes, prompts = pd.factorize(inp["prompt"])
        if not all(isinstance(prompt, str) for prompt in prompts):  # reported by the encoder, by position
            return self.encoder(inp)
        keys = [hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest() for prompt in prompts]
        with self._database() as db:
            found = [self._lookup(db, key) for key in keys]
        vectors = np.empty((len(keys), self.dim), dtype=np.float32)
        missing = [i for i, vector in enumerate(found) if vector is None]
        for i, vector in enumerate(found):
            if vector is not None:
                vectors[i] = vector
        if missing:
            computed = self.encoder(pd.DataFrame({"prompt": prompts[missing]}))["query_vec"]
            vectors[missing] = np.stack(computed.to_numpy())
            rows = [(keys[i], vectors[i].astype("<f4").tobytes()) for i in missing]
            with self._database() as db, db:  # one transaction
                db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", rows)
        return provenance.prompt_vectors_tagged(inp.assign(query_vec=list(vectors[codes])), self.model)

    def _lookup(self, db: sqlite3.Connection, key: bytes) -> Optional[np.ndarray]:
        """The stored vector of ``key`` (``None``: not stored); a damaged entry raises ``CorruptArtifact``."""
        row = db.execute("SELECT vector FROM vectors WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if not isinstance(row[0], bytes) or len(row[0]) != 4 * self.dim:
            raise CorruptArtifact(self._damaged(
                f"the entry of key {key.hex()[:16]}... is {type(row[0]).__name__} of {len(row[0])} bytes, not "
                f"{self.dim} float32 values (never unpickled)"))
        vector = np.frombuffer(row[0], dtype="<f4")
        if not np.isfinite(vector).all():
            raise CorruptArtifact(self._damaged(f"the entry of key {key.hex()[:16]}... is not finite"))
        return vector

    @contextlib.contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call; a file that is not a database raises ``CorruptArtifact``."""
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            try:
                yield db
            finally:
                db.close()
        except sqlite3.OperationalError as e:
            e.add_note(f"(the prompt-vector cache at {self.directory})")
            raise
        except sqlite3.DatabaseError as e:
            raise CorruptArtifact(self._damaged(str(e))) from None

    def _create(self) -> None:
        """The database made complete in a private file, then linked into place (never over another's)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{DB_FILE}.", suffix=".tmp", dir=self.directory)
        os.close(fd)
        try:
            with contextlib.closing(sqlite3.connect(tmp)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE settings (settings TEXT NOT NULL)")
                db.execute("CREATE TABLE vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID")
                db.execute("INSERT INTO settings (settings) VALUES (?)", (self.stored,))
                db.commit()
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.path)
        finally:
            os.unlink(tmp)

    def _check(self, db: sqlite3.Connection) -> None:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables != {"settings", "vectors"}:
            raise CorruptArtifact(self._damaged(f"it holds the tables {sorted(tables)}, not a prompt-vector cache's"))
        rows = db.execute("SELECT settings FROM settings").fetchall()
        if rows != [(self.stored,)]:
            raise CorruptArtifact(self._damaged(f"it holds the vectors of other settings ({str(rows)[:200]}) "
                                                f"than its name says ({self.stored})"))

    def _damaged(self, what: str) -> str:
        return (f"the prompt-vector cache at {self.directory} is damaged or not ours: {what}; delete the "
                f"directory {self.directory} (it holds only cached vectors, which are computed again)")
