"""Input checks shared by the transformers and writers: bad values are named, never used silently."""
import math
import numbers
import warnings
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd


def is_text(value) -> bool:
    """A string with something besides whitespace: what a query or a document must be to be embedded."""
    return isinstance(value, str) and bool(value.strip())


def without_empty_queries(frame: pd.DataFrame, context, *, column: str = "query") -> pd.DataFrame:
    """``frame`` without the rows whose ``column`` is empty, whitespace, ``None`` or NaN, and one warning
    naming their qids: what PyTerrier's own retrievers do with an empty query (no results for it), so one
    empty topic does not end a long ``pt.Experiment``. Every first stage of ours calls it."""
    empty = np.array([v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())
                      for v in frame[column].tolist()], dtype=bool)
    if not empty.any():
        return frame
    qids = list(dict.fromkeys(frame["qid"][empty].tolist()))
    warnings.warn(f"{context!r}: skipping {len(qids)} empty quer{'y' if len(qids) == 1 else 'ies'} (qid "
                  f"{qids[:10]}{' ...' if len(qids) > 10 else ''}): no results for "
                  f"{'it' if len(qids) == 1 else 'them'}", stacklevel=3)
    return frame[~empty]


def require_text(frame: pd.DataFrame, column: str, *, key: str) -> List[str]:
    """The column as a list of non-empty, encodable strings; else a ValueError naming the offending
    rows by ``key``."""
    values = frame[column].tolist()
    bad = [i for i, v in enumerate(values) if not is_text(v)]
    if bad:
        keys = frame[key].iloc[bad[:5]].tolist() if key in frame.columns else bad[:5]
        raise ValueError(f"{len(bad)} row(s) have a missing or empty {column!r} ({key}: {keys}; "
                         f"first value: {values[bad[0]]!r})")
    for i, value in enumerate(values):
        check_encodable(value, f"the {column!r} of {key} {frame[key].iat[i] if key in frame.columns else i!r}")
    return values


#: What the indexer does with a document whose text is missing (``None``/NaN): refuse it, or embed it as
#: the empty text.
MISSING_TEXT = ("error", "empty")


def document_texts(docnos: Sequence[str], texts: Sequence, *, missing_text: str = "error") -> Tuple[List[str], List[str]]:
    """The texts to embed, and the docnos of the empty ones. An empty or whitespace-only text is embedded
    as the empty text (as sentence-transformers does: a document may have nothing to say); a missing
    one (``None``, NaN) is a ValueError naming the docnos, unless ``missing_text="empty"``."""
    if missing_text not in MISSING_TEXT:
        raise ValueError(f"missing_text={missing_text!r}: expected one of {list(MISSING_TEXT)}")
    out, empty, missing = [], [], []
    for docno, text in zip(docnos, texts):
        if text is None or (isinstance(text, float) and math.isnan(text)):
            missing.append(docno)
            text = ""
        elif not isinstance(text, str):
            raise ValueError(f"the text of docno {docno!r} is a {type(text).__name__} ({str(text)[:40]!r}), not a string")
        if not text.strip():
            empty.append(docno)
            text = ""
        check_encodable(text, f"the text of docno {docno!r}")
        out.append(text)
    if missing and missing_text == "error":
        raise ValueError(f"{len(missing)} document(s) have no text (None or NaN; docnos {missing[:5]}); pass "
                         f"missing_text='empty' to index them as the empty text")
    return out, empty


def check_encodable(text: str, who: str) -> None:
    """Refuse a lone surrogate (text decoded with ``errors="surrogateescape"``, broken JSON escapes):
    no tokenizer can read it, and it would fail deep inside one."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{who} holds a lone surrogate ({text[e.start]!r} at character {e.start}), which is "
                         f"not text; fix how it was decoded") from None


def check_finite(vectors: np.ndarray, names: Sequence, what: str) -> None:
    """Refuse vectors with NaN or infinite values, naming the first rows by ``names`` (docnos, qids)."""
    if vectors.size and not np.isfinite(vectors).all():
        bad = np.flatnonzero(~np.isfinite(vectors.reshape(len(vectors), -1)).all(axis=1))
        raise ValueError(f"{what} {[names[i] for i in bad[:5]]} {'is' if len(bad) == 1 else 'are'} not finite "
                         f"(NaN or infinity; {len(bad)} row(s))")


def identifier(value, what: str, where) -> str:
    """A docno or qid as the string stored and written: ints as ``str(int)``; ``None``, NaN, floats,
    empty strings and strings with whitespace (they cannot round-trip through a TREC run file or a
    FAISS ``docid`` file) are refused, naming ``where`` (a position or a ``file:line``)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} at {where} is a boolean ({value!r}), not an identifier")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{what} at {where} is missing ({value!r})")
    if not isinstance(value, str):
        raise ValueError(f"{what} at {where} is a {type(value).__name__} ({value!r}); give identifiers as "
                         f"strings (or ints)")
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} at {where} is empty or holds whitespace, which a TREC run file "
                         f"or a FAISS docid file cannot keep")
    return value


def positive_int(value, name: str, *, minimum: int = 1, allow_none: bool = False):
    """``value`` as an int >= ``minimum``; else a ValueError naming the argument."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def stack_vectors(column: pd.Series, names: Sequence, dim: int, what: str) -> np.ndarray:
    """A column of vectors (``query_vec``, ``doc_vec``) as a float32 matrix ``[n, dim]``; a missing,
    misshapen or non-finite vector is refused naming its row by ``names``."""
    values = column.tolist()
    bad = [i for i, v in enumerate(values) if v is None or np.ndim(v) != 1 or len(v) != dim]
    if bad:
        raise ValueError(f"{what} {[names[i] for i in bad[:5]]}: missing or not a vector of {dim} numbers "
                         f"(first: {str(values[bad[0]])[:60]})")
    matrix = np.stack(values).astype(np.float32) if values else np.empty((0, dim), np.float32)
    check_finite(matrix, names, what)
    return matrix
