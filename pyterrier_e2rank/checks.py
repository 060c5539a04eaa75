"""Input checks shared by the transformers: bad text is named, never embedded silently."""
from typing import List

import pandas as pd


def require_text(frame: pd.DataFrame, column: str, *, key: str) -> List[str]:
    """The column as a list of non-empty strings; else a ValueError naming the offending rows by ``key``."""
    values = frame[column].tolist()
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if bad:
        keys = frame[key].iloc[bad[:5]].tolist() if key in frame.columns else bad[:5]
        raise ValueError(f"{len(bad)} row(s) have a missing or empty {column!r} ({key}: {keys}; "
                         f"first value: {values[bad[0]]!r})")
    return values
