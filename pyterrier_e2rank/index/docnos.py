"""The docno store of an index: npids (FlexIndex's), with exact lookups (``DocnoLookup``) and a builder that keeps
every docno as given (``build_docnos``)."""
from pathlib import Path
from typing import Iterable, List, Sequence

import numpy as np
from npids import Lookup
from npids.builder import FwdLookupBuilder, InvLookupBuilder
from npids.codecs import FwdHexDigest


class _HexDigestOfOneLength(FwdHexDigest):
    """npids' hexdigest codec, refusing (``None``) a docno whose hex part is not of the block's length."""

    def encode(self, id):
        encoded = super().encode(id)
        return encoded if encoded is not None and 2 * len(encoded) == self.length else None


def build_docnos(path: Path, docnos: Iterable[str]) -> None:
    """Write ``docnos``, in order, as an npids store at ``path`` (``_HexDigestOfOneLength`` for npids' hexdigest
    codec). ValueError for a single docno."""
    docnos = list(docnos)
    if len(docnos) == 1:
        raise ValueError(f"an index needs at least two documents; the corpus held one ({docnos[0]!r})")
    builder = FwdLookupBuilder(path)
    builder.formats[FwdHexDigest.NAME] = _HexDigestOfOneLength()
    builder.seeded_formats = builder.formats.copy()
    for docno in docnos:
        builder.add(docno)
    builder.close()
    InvLookupBuilder.build(path)


class DocnoLookup:
    """The docnos of an index (an npids ``Lookup``) whose docno -> row lookups, ``inv[docnos]`` (rows, int64) and
    ``inv[docno]`` (a row), are exact: each row's docno checked to be the one asked for, a ``KeyError`` naming
    those not in the index. ``fwd[rows]`` is npids'; ``lookup[key]`` routes as npids does (docnos to ``inv``, rows
    to ``fwd``)."""

    def __init__(self, lookup: Lookup, path: Path):
        self._lookup = lookup
        self.path = path
        self.fwd = lookup.fwd
        self.inv = self  # routes docnos to ``rows``

    def __len__(self) -> int:
        return len(self._lookup)

    def __iter__(self):
        return iter(self._lookup)

    def __contains__(self, docno) -> bool:
        try:
            self.rows([docno])
        except KeyError:
            return False
        return True

    def __getitem__(self, key):
        if isinstance(key, str):
            return int(self.rows([key])[0])
        if np.ndim(key) == 0 or not isinstance(next(iter(key), ""), str):
            return self.fwd[key]
        return self.rows(key)

    def rows(self, docnos: Sequence[str]) -> np.ndarray:
        """The rows (int64) of ``docnos``; a KeyError names those not in the index (or not strings)."""
        docnos = list(docnos)
        found = np.array([isinstance(d, str) for d in docnos], dtype=bool)
        rows = np.full(len(docnos), -1, dtype=np.int64)
        rows[found] = self._npids_rows([d for d in docnos if isinstance(d, str)]) if found.any() else []
        found &= rows >= 0
        if found.any():  # npids' hexdigest codec fails on no rows at all (numpy.vectorize of size 0)
            found[found] = np.asarray(self.fwd[rows[found]], dtype=object) == np.asarray(docnos, dtype=object)[found]
        if not found.all():
            missing = [d for d, ok in zip(docnos, found) if not ok]
            raise KeyError(f"{len(missing)} docno(s) are not in the index at {self.path}: {missing[:5]}")
        return rows

    def _npids_rows(self, docnos: List[str]) -> np.ndarray:
        """npids' rows of ``docnos`` (-1: absent); a lookup its codec raises on (a docno of another form) is
        done docno by docno, those failing being absent."""
        try:
            return np.asarray(self._lookup.inv[docnos], dtype=np.int64)
        except (ValueError, OverflowError):
            if len(docnos) == 1:
                return np.array([-1], dtype=np.int64)
            return np.concatenate([self._npids_rows([docno]) for docno in docnos])

