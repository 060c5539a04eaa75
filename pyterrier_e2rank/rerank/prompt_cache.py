"""The prompt-vector cache: a rendered listwise prompt's vector is computed once, ever (``cache=``).

``model.reranker(cache=DIR)`` and ``model.prompt_encoder(cache=DIR)`` keep the vectors in
``DIR/prompts-<key>/vectors.sqlite3``. ``<key>`` digests ``E2Rank.prompt_vector_settings()``: the model's
fingerprint, its prompt token limit, dtype, device type and attention implementation, everything
besides the prompt's text that changes its vector; so another model, or the same model with another
setting, never meets these entries. The settings are also stored in the file and checked on opening.

Why not pyterrier-caching's ``KeyValueCache`` (used before): it pickles keys and values and offers no
other codec, so reading a cache directory copied from elsewhere runs the code its values hold (observed:
a value planted as the pickle of ``open(path, "w")`` creates that file when the cache is read); and it
stores its misses with a plain ``INSERT`` after the look-up, so two processes encoding the same new
prompts into one directory race, and one dies with ``sqlite3.IntegrityError: UNIQUE constraint failed``
(observed with two processes meeting between look-up and insert). Here:

- a value is the raw little-endian float32 bytes of one vector, its length checked against the model's
  dimension when read: reading never unpickles or runs anything;
- a key is the sha256 of the prompt's UTF-8 bytes;
- writers ``INSERT OR IGNORE`` (a prompt has one vector) in WAL mode with a busy timeout, on a
  connection of their own per call (so threads and forked processes share nothing); the database is
  created complete (tables, settings, WAL mode) in a private file and hard-linked into place, so
  concurrent creators never see a half-made one;
- a file that is not such a database, or holds a value of the wrong length, raises ``io.CorruptArtifact``
  naming the directory and the fix: delete it (it holds nothing but vectors that are recomputed).
"""
import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pandas as pd
import pyterrier as pt

from ..model import provenance
from ..equality import EqualBySettings
from ..io import CorruptArtifact

DB_FILE = "vectors.sqlite3"
#: Seconds a writer waits for another writer's lock before its SQLite call fails.
BUSY_TIMEOUT_S = 600
#: Keys per look-up statement (SQLite limits a statement's parameters, to 999 in older builds).
LOOKUP_BATCH = 500
#: Layout of the database file.
FORMAT = 1


def cache_directory(cache, settings: dict) -> Path:
    """``cache/prompts-<digest of settings>``: a prompt's vector is only valid for the settings that made it."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache) / f"prompts-{key}"


class PromptVectorCache(EqualBySettings, pt.Transformer):
    """Frame with ``prompt`` -> + ``query_vec`` (float32 ``[dim]``) and its tag ``query_vec_model``
    (``provenance``): each distinct prompt's vector read from the cache under ``cache`` where found, else
    computed by ``encoder`` (a ``PromptVectorEncoder``) and stored.

    Raises ``io.CorruptArtifact`` naming the cache directory when its file is damaged, not a cache of
    ours, of other settings, or holds a value that is not a finite ``dim``-float vector."""

    def __init__(self, cache, encoder: pt.Transformer):
        model = encoder.model
        self.encoder = encoder
        self.dim = model.dim
        self.stored = {"format": FORMAT, "dim": self.dim, "settings": model.prompt_vector_settings()}
        self.directory = cache_directory(cache, self.stored["settings"])
        self.path = self.directory / DB_FILE
        if not self.path.exists():
            self._create()
        with self._database() as db:
            self._check(db)

    def __repr__(self):
        return f"PromptVectorCache({str(self.directory)!r}, {self.encoder!r})"

    def _settings(self) -> tuple:
        return (self.directory, self.encoder)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["prompt"], context=self)
        codes, prompts = pd.factorize(inp["prompt"])
        if not all(isinstance(prompt, str) for prompt in prompts):  # reported by the encoder, by position
            return self.encoder(inp)
        keys = [hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest() for prompt in prompts]
        vectors = np.empty((len(keys), self.dim), dtype=np.float32)
        with self._database() as db:
            found = self._lookup(db, keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        for i, key in enumerate(keys):
            if key in found:
                vectors[i] = found[key]
        if missing:
            computed = self.encoder(pd.DataFrame({"prompt": prompts[missing]}))["query_vec"]
            vectors[missing] = np.stack(computed.to_numpy())
            rows = [(keys[i], vectors[i].astype("<f4").tobytes()) for i in missing]
            with self._database() as db, db:  # one transaction
                db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", rows)
        return provenance.prompt_vectors_tagged(inp.assign(query_vec=list(vectors[codes])), self.encoder.model)

    def _lookup(self, db: sqlite3.Connection, keys: List[bytes]) -> Dict[bytes, np.ndarray]:
        found = {}
        for start in range(0, len(keys), LOOKUP_BATCH):
            batch = keys[start:start + LOOKUP_BATCH]
            marks = ", ".join("?" * len(batch))
            for key, value in db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", batch):
                if not isinstance(value, bytes) or len(value) != 4 * self.dim:
                    raise CorruptArtifact(self._damaged(
                        f"the entry of key {bytes(key).hex()[:16]}... is {type(value).__name__} of "
                        f"{len(value)} bytes, not {self.dim} float32 values (never unpickled)"))
                vector = np.frombuffer(value, dtype="<f4")
                if not np.isfinite(vector).all():
                    raise CorruptArtifact(self._damaged(f"the entry of key {bytes(key).hex()[:16]}... is not finite"))
                found[bytes(key)] = vector
        return found

    @contextlib.contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call. A file SQLite cannot read as a database raises ``CorruptArtifact``;
        SQLite's other errors (locked past the timeout, read-only, I/O) keep their type, noted with the path."""
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
        """Build the database complete in a private file, then link it into place (never over another's)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{DB_FILE}.", suffix=".tmp", dir=self.directory)
        os.close(fd)
        try:
            with contextlib.closing(sqlite3.connect(tmp)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE settings (settings TEXT NOT NULL)")
                db.execute("CREATE TABLE vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID")
                db.execute("INSERT INTO settings (settings) VALUES (?)", (json.dumps(self.stored, sort_keys=True),))
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
        try:
            stored = [json.loads(settings) for (settings,) in rows]
        except (TypeError, ValueError):
            stored = rows
        if stored != [self.stored]:
            raise CorruptArtifact(self._damaged(f"it holds the vectors of other settings ({str(stored)[:200]}) "
                                                f"than its name says ({self.stored})"))

    def _damaged(self, what: str) -> str:
        return (f"the prompt-vector cache at {self.directory} is damaged or not ours: {what}; delete the "
                f"directory {self.directory} (it holds only cached vectors, which are computed again)")
