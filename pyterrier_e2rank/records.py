"""Document and query files, one reader for every command and dataset: JSONL (``.jsonl``, ``.json``, ``.gz`` or
not) with the keys of ``KEYS``, else TSV (``docno<TAB>text``, an optional header; ``qid<TAB>query``). A bad
record is refused naming ``file:line`` (pt_docs/datasets-and-bm25.rst, "Files every command reads")."""
from typing import Dict, Iterator, Optional, Tuple, Type

from .checks import identifier, is_text
from .io import FileFormatError, json_line, numbered_lines, split_fields
from .model.text import join_title

#: The accepted keys of a JSONL record, by kind of record and field; a field may be given by several
#: keys only if they agree.
KEYS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "document": {"id": ("_id", "id", "docno", "docid", "doc_id"), "text": ("text", "contents")},
    "query": {"id": ("_id", "id", "qid", "query_id"), "text": ("text", "query")},
}
_TSV_FORMS = {"document": "docno<TAB>text", "query": "qid<TAB>query"}
_ID_NAMES = {"document": "docno", "query": "qid"}


def is_jsonl(path) -> bool:
    """Whether a file is JSONL by its name (``.jsonl``, ``.json``, either ``.gz``); else it is read as TSV."""
    return str(path).removesuffix(".gz").endswith((".jsonl", ".json"))


def read_records(path, kind: str, *, error: Type[ValueError] = FileFormatError) -> Iterator[Tuple[int, dict]]:
    """``(line number, {"id": str, "text": str})`` of every record of a ``kind`` (``"document"`` or ``"query"``)
    file in file order; a bad record raises ``error`` naming ``file:line``."""
    first: Dict[str, int] = {}
    jsonl = is_jsonl(path)
    for position, (number, line) in enumerate(numbered_lines(path, error=error)):
        where = f"{path}:{number}"
        if jsonl:
            record = jsonl_record(line, kind, where, error=error)
        else:
            record = _tsv_record(line, kind, where, error, header_allowed=position == 0 and kind == "document")
            if record is None:
                continue
        if kind == "query" and not is_text(record["text"]):
            raise error(f"{where}: the query of qid {record['id']!r} is empty")
        seen = first.setdefault(record["id"], number)
        if seen != number:  # a repeated id would index one document twice, or rerank a query's candidates twice
            raise error(f"{where}: {_ID_NAMES[kind]} {record['id']!r} repeated (first on line {seen})")
        yield number, record
    if not first:  # an empty corpus or topics file would give an empty index, or an experiment of no queries
        raise error(f"{path}: the file holds no {kind} (it is empty)")


def _one_value(record: dict, keys: Tuple[str, ...], field: str, kind: str, where: str, error):
    """The value of ``field`` from whichever of ``keys`` the record uses; several must agree."""
    given = {k: record[k] for k in keys if k in record}
    if not given:
        raise error(f"{where}: a {kind} needs one of the keys {list(keys)} for its {field}; the record has "
                    f"{sorted(record)}")
    if field == "id":
        given = {k: identifier(v, _ID_NAMES[kind], where, error=error) for k, v in given.items()}
    values = [v for i, v in enumerate(given.values()) if v not in list(given.values())[:i]]  # a list is unhashable
    if len(values) > 1:
        raise error(f"{where}: the {kind}'s {field} keys disagree: {given}; give one, or equal ones")
    return values[0]


def jsonl_record(line: str, kind: str, where: str, *, error: Type[ValueError] = FileFormatError) -> dict:
    """``{"id", "text"}`` of one JSONL line of a ``kind`` record (title joined), checked; a bad one raises
    ``error`` naming ``where``."""
    record = json_line(line, where, error=error)
    if not isinstance(record, dict):
        raise error(f"{where}: expected a JSON object, got a {type(record).__name__}")
    identifier_ = _one_value(record, KEYS[kind]["id"], "id", kind, where, error)
    text = _one_value(record, KEYS[kind]["text"], "text", kind, where, error)
    if text is None:  # a missing text is refused as the indexer refuses it, never embedded as the empty text
        raise error(f"{where}: {kind} {identifier_!r} has no text (null)")
    title = record.get("title") if kind == "document" else None
    for key, value in (("text", text), ("title", title)):
        if value is not None and not isinstance(value, str):
            raise error(f"{where}: the {key} of {kind} {identifier_!r} is a {type(value).__name__}, not a string")
    return {"id": identifier_, "text": join_title(title, text) if kind == "document" else text}


def _tsv_record(line: str, kind: str, where: str, error, header_allowed: bool) -> Optional[dict]:
    """A TSV record, or ``None`` for a document file's header line (its first field an id key)."""
    identifier_, text = split_fields(line, 2, where=where, form=_TSV_FORMS[kind], sep="\t", error=error)
    if identifier_.strip() in KEYS[kind]["id"]:
        if header_allowed:
            return None
        raise error(f"{where}: a header line; a {kind} TSV file is '{_TSV_FORMS[kind]}' lines"
                    + ("" if kind == "query" else ", an optional header first"))
    return {"id": identifier(identifier_, _ID_NAMES[kind], where, error=error), "text": text}
