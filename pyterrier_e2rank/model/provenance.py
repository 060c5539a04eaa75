"""Provenance of vectors: beside a vector column ``c`` (``query_vec``, ``doc_vec``) our stages write ``c_model``,
each row's tag ``"<model> #<space> <recipe>"``: ``space`` digests the model's fingerprint's ``identity``,
``recipe`` says from what the vector was made (``query-<instruction>:<query>``, ``prompt:<query>``,
``doc:<text>``, each a digest, or ``doc``: an index's stored vector). Vectors of another space raise
``IndexModelMismatch`` where they meet an index or another model's vectors; an encoder passes on a column of its
own space made from the row's current text and refuses any other; untagged vectors are the user's own.
"""
import hashlib
import json
from typing import Callable, Dict, List, Optional, Sequence, Union

import pandas as pd

from .backends import SHARES_PYTORCH_IDENTITY, backend_arguments


class IndexModelMismatch(ValueError):
    """The index was built with another model or other document settings than the one in use."""


def identity(fingerprint: dict) -> dict:
    """What vectors must share to meet: the fingerprint without the model's name, and without an ``inference``
    that shares PyTorch's identity (``backends.SHARES_PYTORCH_IDENTITY``)."""
    return {k: v for k, v in fingerprint.items()
            if k != "model" and not (k == "inference" and SHARES_PYTORCH_IDENTITY.get(v, False))}


def fingerprint_differences(stored: dict, current: dict) -> list:
    """The settings in which the identities of two model fingerprints differ."""
    a, b = identity(stored), identity(current)
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def describe_differences(a: dict, b: dict) -> str:
    """``key A vs B`` for each setting in which fingerprint ``a`` differs from ``b``, and the backend arguments that
    compute like ``a`` when they differ in ``inference``."""
    def short(value) -> str:
        return repr(value[:12] + "...") if isinstance(value, str) and len(value) > 40 else repr(value)
    differ = fingerprint_differences(a, b)
    text = ", ".join(f"{k} {short(a.get(k))} vs {short(b.get(k))}" for k in differ)
    if "inference" in differ:
        text += f"; vectors like these come from {backend_arguments(a.get('inference'))}"
    return text


def check_fingerprint(stored: Optional[dict], current: dict, what: str) -> None:
    """Raise ``IndexModelMismatch`` unless ``current`` (``model.fingerprint()``) made the vectors of ``what``,
    made by the model of ``stored`` (``None``: an unknown one)."""
    if stored is None:
        raise IndexModelMismatch(f"{what} carries no E2Rank model fingerprint, so the model that made its vectors "
                                 f"is unknown; build it with model.indexer(path) (or write_faiss_index)")
    differ = fingerprint_differences(stored, current)
    if "fingerprint_version" in differ:
        raise IndexModelMismatch(f"{what} was written by an older pyterrier_e2rank whose model fingerprint cannot "
                                 f"tell a fine-tuned checkpoint from its base model; rebuild it with "
                                 f"{current.get('model')!r}")
    if differ:
        model = (f"model {stored.get('model')!r} with other settings than now" if stored.get("model") ==
                 current.get("model") else f"model {stored.get('model')!r}, not {current.get('model')!r} now in use")
        fix = ("compute as it does (below), or rebuild it with this model" if differ == ["inference"] else
               "rebuild it with this model, or load the model it was built with")
        raise IndexModelMismatch(f"{what} was built with {model}: {fix} (differing, built vs now: "
                                 f"{describe_differences(stored, current)})")


#: Fingerprints seen in this process, by space digest: messages name the settings two spaces differ in.
_KNOWN: Dict[str, dict] = {}


def tag_column(column: str) -> str:
    return f"{column}_model"


def space(fingerprint: dict) -> str:
    """16 hex digits of a model fingerprint's ``identity``."""
    digest = hashlib.sha256(json.dumps(identity(fingerprint), sort_keys=True, default=str).encode()).hexdigest()[:16]
    _KNOWN.setdefault(digest, dict(fingerprint))
    return digest


def text_digest(text) -> str:
    return hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:12]


def query_recipe(model, query) -> str:
    return f"query-{text_digest(model.query_task)[:8]}:{text_digest(query)}"


def prompt_recipe(query) -> str:
    return f"prompt:{text_digest(query)}"


def doc_recipe(text) -> str:
    return f"doc:{text_digest(text)}"


#: The recipe of an index's stored vectors (looked up by docno).
STORED = "doc"


def make_tag(fingerprint: dict, recipe: str) -> str:
    return f"{fingerprint.get('model')} #{space(fingerprint)} {recipe}"


def tagged(frame: pd.DataFrame, column: str, fingerprint: Optional[dict],
           recipes: Union[str, Sequence[str]]) -> pd.DataFrame:
    """``frame`` with the tags of ``column``, made by the model of ``fingerprint`` (``None``: untagged) by
    ``recipes`` (one for all rows, or one per row)."""
    recipes = [recipes] * len(frame) if isinstance(recipes, str) else list(recipes)
    prefix = None if fingerprint is None else make_tag(fingerprint, "")
    values = [None if prefix is None else prefix + recipe for recipe in recipes]
    return frame.assign(**{tag_column(column): pd.Series(values, index=frame.index, dtype=object)})


def prompt_vectors_tagged(frame: pd.DataFrame, model) -> pd.DataFrame:
    """``frame`` with the tags of its ``query_vec`` pseudo-queries, made by ``model`` from each row's ``query``
    (else ``prompt``)."""
    sources = frame["query"] if "query" in frame.columns else frame["prompt"]
    return tagged(frame, "query_vec", model.fingerprint(), [prompt_recipe(q) for q in sources])


def without(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """``frame`` without the vector ``columns`` and the tags of the vectors (``query_vec``, ``doc_vec``) it lacks."""
    frame = frame.drop(columns=[column for column in columns if column in frame.columns])
    return frame.drop(columns=[tag_column(c) for c in ("query_vec", "doc_vec")
                               if tag_column(c) in frame.columns and c not in frame.columns])


def tags(frame: pd.DataFrame, column: str) -> List[Optional[str]]:
    """The tag of each row's vector in ``column`` (``None``: untagged)."""
    if tag_column(column) not in frame.columns:
        return [None] * len(frame)
    return [_tag(value) for value in frame[tag_column(column)].tolist()]


def record_tag(record: dict, column: str) -> Optional[str]:
    return _tag(record.get(tag_column(column)))


def _tag(value) -> Optional[str]:
    """``None``, NaN and the empty string are no tag."""
    return value if isinstance(value, str) and value else None


def _parts(tag: str):
    """``(model, space, recipe)`` of a tag; a value that is not a tag of ours is refused, quoted."""
    try:
        model, digest, recipe = tag.rsplit(" ", 2)
    except ValueError:
        model = digest = recipe = ""
    if not digest.startswith("#"):
        raise ValueError(f"{tag!r} is not a vector tag of pyterrier_e2rank ('<model> #<space> <recipe>')")
    return model, digest[1:], recipe


def _spaces(values: Sequence[Optional[str]], names: Sequence, what: str) -> Dict[str, list]:
    """``{space: [(first row's name, model)...]}`` of the tags; more than one space is refused."""
    found: Dict[str, list] = {}
    seen = {None}
    for name, value in zip(names, values):
        if value not in seen:
            seen.add(value)
            model, digest, _ = _parts(value)
            found.setdefault(digest, []).append((name, model))
    if len(found) > 1:
        (a, rows_a), (b, rows_b) = list(found.items())[:2]
        raise IndexModelMismatch(f"{what} mixes vectors of two models: {rows_a[0][1]!r} (#{a}; e.g. {rows_a[0][0]!r}) "
                                 f"and {rows_b[0][1]!r} (#{b}; e.g. {rows_b[0][0]!r}){_differing(a, b)}; make all "
                                 f"of them with one model")
    return found


def _differing(a: str, b: str) -> str:
    if a in _KNOWN and b in _KNOWN:
        return f" (differing: {describe_differences(_KNOWN[a], _KNOWN[b])})"
    return ""


def check_tags(values: Sequence[Optional[str]], names: Sequence, fingerprint: Optional[dict], what: str,
               where: str, *, fix: str) -> None:
    """Raise ``IndexModelMismatch`` (naming both models and ``fix``) for tags (``values``, rows named by ``names``)
    of another space than ``fingerprint``'s (the model of ``where``; ``None``: unknown) or of two spaces."""
    found = _spaces(values, names, what)
    if not found:
        return
    ((digest, rows),) = found.items()
    made = f"the {what} {[name for name, _ in rows[:5]]} were made by model {rows[0][1]!r} (#{digest})"
    if fingerprint is None:
        raise IndexModelMismatch(f"{made}, but {where} carries no E2Rank model fingerprint, so they cannot be "
                                 f"checked against it; build it with model.indexer(path)")
    if digest != space(fingerprint):
        raise IndexModelMismatch(f"{made}, but {where} is of model {fingerprint.get('model')!r} "
                                 f"(#{space(fingerprint)}){_differing(digest, space(fingerprint))}: vectors of two "
                                 f"models are never compared; {fix}")


def check_frame(frame: pd.DataFrame, column: str, fingerprint: Optional[dict], where: str, *, key: str,
                text: Optional[str] = None, fix: str) -> None:
    """``check_tags`` for ``column`` of ``frame``, rows named by ``key``; with the ``text`` column the vectors
    were made from, a ``ValueError`` names the rows whose text changed since they were encoded."""
    values, names = tags(frame, column), frame[key].tolist()
    check_tags(values, names, fingerprint, f"{column} of {key}", where, fix=fix)
    if text is None or text not in frame.columns:
        return
    stale = [name for name, value, current in zip(names, values, frame[text].tolist())
             if value is not None and _parts(value)[2].partition(":")[2] not in ("", text_digest(current))]
    if stale:
        raise ValueError(f"the {column} of {key} {stale[:5]} were made from another {text!r} than the frame holds now "
                         f"(changed since they were encoded?), for {where}: drop {column!r} and "
                         f"{tag_column(column)!r} to encode the current {text!r}, or drop only {tag_column(column)!r} "
                         f"to use the vectors as they are")


def check_one_space(frame: pd.DataFrame, columns: Sequence[str], *, key: str) -> None:
    """Refuse a frame whose vector ``columns`` (``query_vec``, ``doc_vec``) hold tagged vectors of two spaces."""
    values = [value for column in columns for value in tags(frame, column)]
    names = [f"{column} of {key} {name}" for column in columns for name in frame[key].tolist()]
    _spaces(values, names, f"the frame's {' and '.join(columns)}")


def carried(frame: pd.DataFrame, column: str, fingerprint: dict, accepts: Callable[[int, str], bool], who, *,
            key: str, fix: str) -> bool:
    """Whether ``frame`` carries ``column`` made in ``fingerprint``'s space by recipes ``accepts(row, recipe)``
    (``who`` passes it on); a column of unknown origin, another model or another recipe is refused naming
    ``fix``."""
    if column not in frame.columns:
        return False
    values = tags(frame, column)
    names = frame[key].tolist()
    unknown = [name for name, value in zip(names, values) if value is None]
    if unknown:
        raise ValueError(f"{who!r}: the frame already carries a {column!r} column, of unknown origin for {key} "
                         f"{unknown[:5]} (no {tag_column(column)!r} tag), and it is never replaced silently: "
                         f"{fix}")
    check_tags(values, names, fingerprint, f"{column} of {key}", f"{who!r}", fix=fix)
    other = [(name, _parts(value)[2]) for i, (name, value) in enumerate(zip(names, values))
             if not accepts(i, _parts(value)[2])]
    if other:
        raise ValueError(f"{who!r}: the {column!r} the frame carries for {key} {other[0][0]!r} was made from another "
                         f"text or with other settings ({other[0][1]!r}: e.g. the query was rewritten since, or "
                         f"encoded with another instruction), and it is never replaced silently: {fix}")
    return True
