"""Input checks shared by the transformers and writers: bad values are named, never used silently."""
import math
import numbers
from typing import List

import numpy as np
import pandas as pd


def require_text(frame: pd.DataFrame, column: str, *, key: str) -> List[str]:
    """The column as a list of non-empty, encodable strings; else a ValueError naming the offending
    rows by ``key``."""
    values = frame[column].tolist()
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if bad:
        keys = frame[key].iloc[bad[:5]].tolist() if key in frame.columns else bad[:5]
        raise ValueError(f"{len(bad)} row(s) have a missing or empty {column!r} ({key}: {keys}; "
                         f"first value: {values[bad[0]]!r})")
    for i, value in enumerate(values):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                name = frame[key].iat[i] if key in frame.columns else i
                raise ValueError(f"the {column!r} of {key} {name!r} holds a lone surrogate ({value[e.start]!r} at "
                                 f"character {e.start}), which is not text; fix its decoding") from None
    return values


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
