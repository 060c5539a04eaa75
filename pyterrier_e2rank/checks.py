"""Input checks shared by the transformers and writers: bad values are named, never used silently."""
import math
import numbers
import re
import warnings
from typing import List, Optional, Sequence, Tuple, Type

import numpy as np
import pandas as pd
import pyterrier as pt


def is_text(value) -> bool:
    """A string with something besides whitespace: what a query or a document must be to be embedded."""
    return isinstance(value, str) and bool(value.strip())


def without_empty_queries(frame: pd.DataFrame, context) -> pd.DataFrame:
    """``frame`` without the rows whose ``query`` is empty, whitespace, ``None`` or NaN, with one warning
    naming their qids (as PyTerrier's own retrievers give an empty query no results)."""
    empty = (frame["query"].isna() | frame["query"].map(lambda v: isinstance(v, str) and not v.strip())).to_numpy()
    if not empty.any():
        return frame
    qids = list(dict.fromkeys(frame["qid"][empty].tolist()))
    warnings.warn(f"{context!r}: skipping {len(qids)} empty quer{'y' if len(qids) == 1 else 'ies'} (qid "
                  f"{qids[:10]}{' ...' if len(qids) > 10 else ''}): no results for "
                  f"{'it' if len(qids) == 1 else 'them'}", stacklevel=3)
    return frame[~empty]


def require_text(frame: pd.DataFrame, column: str, *, key: str) -> List[str]:
    """The column as a list of non-empty, encodable strings; else a ValueError naming the rows by ``key``."""
    values = frame[column].tolist()
    bad = [i for i, v in enumerate(values) if not is_text(v)]
    if bad:
        raise ValueError(f"{len(bad)} row(s) have a missing or empty {column!r} ({key}: "
                         f"{frame[key].iloc[bad[:5]].tolist()}; first value: {values[bad[0]]!r})")
    for i, value in enumerate(values):
        check_encodable(value, f"the {column!r} of {key} {frame[key].iat[i]!r}")
    return values


#: What the indexer does with a document whose text is missing (``None``/NaN): refuse it, or embed the empty text.
MISSING_TEXT = ("error", "empty")


def document_texts(docnos: Sequence[str], texts: Sequence, *,
                   missing_text: str = "error") -> Tuple[List[str], List[str]]:
    """The texts to embed (an empty or whitespace-only one as the empty text), and the docnos of the empty ones;
    a missing one (``None``, NaN) is a ValueError naming the docnos, unless ``missing_text="empty"`` (one of
    ``MISSING_TEXT``, checked by the indexer)."""
    out, empty, missing = [], [], []
    for docno, text in zip(docnos, texts):
        if text is None or (isinstance(text, float) and math.isnan(text)):
            missing.append(docno)
            text = ""
        elif not isinstance(text, str):
            raise ValueError(f"the text of docno {docno!r} is a {type(text).__name__} ({str(text)[:40]!r}), not a "
                             f"string")
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
    """Refuse (ValueError naming ``who``) a text holding a lone surrogate, which no tokenizer can read."""
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


#: What no identifier may hold: whitespace, control characters and lone surrogates.
_UNKEEPABLE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def identifier(value, what: str, where, *, error: Type[ValueError] = ValueError) -> str:
    """A docno or qid as the string stored and written (ints as ``str(int)``); ``None``, NaN, floats, arrays,
    lists, empty strings and strings with whitespace or control characters are an ``error`` naming ``where``."""
    if isinstance(value, (bool, np.bool_)):
        raise error(f"{what} at {where} is a boolean ({value!r}), not an identifier")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        raise error(f"{what} at {where} is missing ({value!r})")
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        raise error(f"{what} at {where} is a {type(value).__name__} ({str(value)[:60]}), not one identifier: "
                         f"a cell holds one {what}")
    if not isinstance(value, str):
        raise error(f"{what} at {where} is a {type(value).__name__} ({value!r}); give identifiers as "
                         f"strings (or ints)")
    bad = _UNKEEPABLE.search(value)
    if not value or (bad and bad.group().isspace()):
        raise error(f"{what} {value!r} at {where} is empty or holds whitespace, which a TREC run file "
                         f"or a FAISS docid file cannot keep")
    if bad:
        kind = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise error(f"{what} {value!r} at {where} holds {kind} ({bad.group()!r} at character {bad.start()}), "
                         f"which a TREC run file or a FAISS docid file cannot keep")
    return value


#: The columns of which a frame needs one for its candidates' order (``validate_frame``'s ``one_of``).
RANKED = (("rank",), ("score",))


def validate_frame(inp: pd.DataFrame, context, *, includes: Sequence[str], queries: bool = False,
                   texts: Optional[str] = None, one_of: Sequence[Sequence[str]] = ((),)) -> None:
    """The input check of every transformer of ours that takes qids or docnos: the columns ``includes`` and
    ``texts`` present, and those of one of the column sets ``one_of`` (else ``pt.validate.InputValidationError``,
    a KeyError, listing each set: what ``pt.inspect`` reports as the inputs); every ``qid`` and ``docno`` an
    ``identifier``; no docno twice for one qid; with ``queries``, one encodable ``query`` per qid; with
    ``texts``, one text per docno. Raises ValueError naming rows and ids."""
    required = list(includes) + ([texts] if texts is not None else [])
    with pt.validate.any(inp, context=context) as modes:
        for columns in one_of:
            modes.columns(includes=required + list(columns))
    if not len(inp):
        return
    qids = _identifiers(inp, "qid") if "qid" in inp.columns else None
    if "docno" in inp.columns:
        _identifiers(inp, "docno", qids)
    if qids is not None and "docno" in inp.columns:
        repeated = inp.duplicated(["qid", "docno"], keep=False).to_numpy()
        if repeated.any():
            first = np.flatnonzero(repeated)[0]
            qid, docno = inp["qid"].iat[first], inp["docno"].iat[first]
            rows = np.flatnonzero(repeated & (inp["qid"] == qid).to_numpy() & (inp["docno"] == docno).to_numpy())
            raise ValueError(f"qid {qid!r} lists docno {docno!r} {len(rows)} times (rows {rows[:5].tolist()}; "
                             f"{int(repeated.sum())} repeated row(s) in all): a candidate appears once per query")
    if queries and "query" in inp.columns:
        firsts = _one_value_per_key(inp, "qid", "query")
        for row in firsts:
            if isinstance(inp["query"].iat[row], str):
                check_encodable(inp["query"].iat[row], f"the query of qid {inp['qid'].iat[row]!r}")
    if texts is not None:
        _one_value_per_key(inp, "docno", texts)


def _identifiers(inp: pd.DataFrame, column: str, qids: Optional[List] = None) -> List:
    """The cells of ``column``, each an ``identifier`` (refused naming its row, and its qid)."""
    values = inp[column].tolist()
    if pd.api.types.is_integer_dtype(inp[column].dtype) and not pd.api.types.is_bool_dtype(inp[column].dtype):
        return values
    where = (lambda i: f"row {i}") if qids is None else (lambda i: f"row {i} (qid {qids[i]!r})")
    if all(isinstance(v, str) for v in values):  # the usual frame: one regex pass
        bad = next((i for i, v in enumerate(values) if not v or _UNKEEPABLE.search(v)), None)
        if bad is not None:
            identifier(values[bad], column, where(bad))
        return values
    strings = [identifier(v, column, where(i)) for i, v in enumerate(values)]
    if len(set(strings)) != len(set(values)):
        first = {}
        for i, (text, value) in enumerate(zip(strings, values)):
            if first.setdefault(text, value) != value:
                raise ValueError(f"{column}s {first[text]!r} and {value!r} (row {i}) are one {column} in a run "
                                 f"file but two in this frame: give ids of one type")
    return values


def _one_value_per_key(inp: pd.DataFrame, key: str, column: str) -> np.ndarray:
    """Row positions of each ``key``'s first row; a ValueError if a key has two different ``column``
    values (a ``None`` and a NaN are one missing value)."""
    keys = pd.factorize(inp[key])[0]
    try:
        values = pd.factorize(inp[column])[0]
    except TypeError:  # an unhashable cell: a list or an array
        row = next(i for i, v in enumerate(inp[column]) if not isinstance(v, (str, numbers.Number, type(None))))
        raise ValueError(f"the {column} of {key} {inp[key].iat[row]!r} (row {row}) is a "
                         f"{type(inp[column].iat[row]).__name__}, not a text") from None
    pairs = pd.DataFrame({"key": keys, "value": values}).drop_duplicates()
    clashing = pairs["key"][pairs["key"].duplicated()]
    if len(clashing):
        rows = pairs.index[pairs["key"] == clashing.iat[0]]  # the first row of each value
        different = inp[column].iloc[rows]
        raise ValueError(f"{key} {inp[key].iat[rows[0]]!r} has {len(rows)} different {column!r} values "
                         f"({', '.join(repr(str(v)[:40]) for v in different[:3])}; rows {rows[:5].tolist()}): "
                         f"one {key} means one {column}; give each its own {key}")
    return pairs.drop_duplicates("key").index.to_numpy()


def positive_int(value, name: str, *, minimum: int = 1, maximum: Optional[int] = None, allow_none: bool = False):
    """``value`` as an int >= ``minimum`` (and <= ``maximum``); else a ValueError naming the argument."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum \
            or (maximum is not None and value > maximum):
        wanted = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
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
