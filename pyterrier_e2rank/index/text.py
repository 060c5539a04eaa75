"""The documents' text kept in an index: ``text.utf8`` (every text, UTF-8, in the index's row order) and
``text.offsets`` (``doc_count + 1`` little-endian uint64 byte offsets into it), both memory-mapped; written by
``TextWriter`` inside the index's atomic build, read by ``TextStore`` and served by ``TextLoader``
(``index.text_loader()``, PyTerrier's text-loader protocol)."""
import hashlib
import mmap
import os
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import pandas as pd
import pyterrier as pt

from ..equality import EqualBySettings
from ..io import CorruptArtifact

TEXT = "text.utf8"
OFFSETS = "text.offsets"
TEXT_FILES = (TEXT, OFFSETS)


def damaged(where: Path, what: str) -> CorruptArtifact:
    """The error for the index at ``where`` whose ``what`` is damaged: it says to rebuild it."""
    return CorruptArtifact(f"the index at {where} is damaged: {what}; rebuild it (model.indexer(path, "
                           f"mode='overwrite'))")


class TextWriter:
    """Appends texts, in row order, to the text files of a staging directory; ``hash`` (sha256) is updated with
    each text's bytes and a separator."""

    def __init__(self, directory: Path):
        self._text = open(directory / TEXT, "wb")
        self._offsets = open(directory / OFFSETS, "wb")
        self._offsets.write(np.zeros(1, dtype="<u8").tobytes())
        self._end = 0
        self.hash = hashlib.sha256()

    def add(self, texts: Sequence[str]) -> None:
        encoded = [text.encode("utf-8") for text in texts]
        for data in encoded:
            self._text.write(data)
            self.hash.update(data + b"\0")
        ends = self._end + np.cumsum([len(data) for data in encoded], dtype=np.uint64)
        self._offsets.write(ends.astype("<u8").tobytes())
        self._end = int(ends[-1]) if len(ends) else self._end

    def close(self) -> None:
        self._text.close()
        self._offsets.close()


class TextStore:
    """The stored texts of one version of an index (``base``: its directory), by row, mapped when opened;
    ``CorruptArtifact`` when the files disagree with each other or with ``doc_count``, ``FileNotFoundError`` for
    a missing one."""

    def __init__(self, base: Path, doc_count: int, where: Path):
        self.where = where
        self.offsets = np.memmap(base / OFFSETS, dtype="<u8", mode="r") if os.path.getsize(base / OFFSETS) \
            else np.empty(0, "<u8")
        with open(base / TEXT, "rb") as text_file:
            size = os.fstat(text_file.fileno()).st_size
            self._text = mmap.mmap(text_file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        if len(self.offsets) != doc_count + 1 or int(self.offsets[-1]) != size or int(self.offsets[0]) != 0:
            raise damaged(where, f"{OFFSETS} holds {len(self.offsets)} offsets ending at "
                                 f"{int(self.offsets[-1]) if len(self.offsets) else None}, not {doc_count} + 1 "
                                 f"ending at the {size} bytes of {TEXT}")

    def texts(self, rows: np.ndarray) -> List[str]:
        """The texts of the rows ``rows`` (int), in order."""
        starts, ends = self.offsets[rows], self.offsets[np.asarray(rows) + 1]
        try:
            return [self._text[start:end].decode("utf-8") for start, end in zip(starts.tolist(), ends.tolist())]
        except (UnicodeDecodeError, ValueError) as e:
            raise damaged(self.where, f"{TEXT} is not UTF-8 at the offsets of {OFFSETS} ({e})") from None


class TextLoader(EqualBySettings, pt.Transformer):
    """Adds the text the index stores (its one field, ``field``) to each row by ``docno``, replacing a column of
    that name; an unknown docno is a ValueError naming it."""
    schematic = {"label": "TextLoader"}

    def __init__(self, index, fields: Union[str, List[str]] = "*", *, verbose: bool = False):
        self.index = index
        self.field = index.text_field()
        wanted = [fields] if isinstance(fields, str) else list(fields)
        if wanted not in (["*"], [self.field]):
            raise ValueError(f"{index!r} stores the text field {self.field!r}, not {wanted}: ask for '*' or "
                             f"{self.field!r}")
        self.verbose = verbose

    def __repr__(self):
        return f"{self.index!r}.text_loader()"

    def _settings(self) -> tuple:
        return (self.index,)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["docno"], context=self)
        docnos = inp["docno"].tolist()
        texts = self.index.texts(pt.tqdm(docnos, desc="loading text", unit="d") if self.verbose else docnos)
        return inp.assign(**{self.field: pd.Series(texts, index=inp.index, dtype=object)})
