"""Training data (JSONL): stage-II records ``{"query", "document": [first-stage order], "ranking": [1-based, best
first], "source"}``, stage-I pairs ``{"query", "pos": [...], "neg": [...]}`` (FlagEmbedding), and converters. A bad
record is refused naming its file and line; fields are never coerced (a string is not a list, 2.7 is not 2)."""
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, List, Optional

import pandas as pd

from pyterrier_e2rank.checks import is_text, positive_int
from pyterrier_e2rank.io import FileFormatError, atomic_file, numbered_lines


class DataError(FileFormatError):
    """A training record that cannot be used; the message names the file and line."""


def _texts(value, name: str, empty: Optional[str] = None) -> None:
    """A list of strings, or a ValueError (a bare string would otherwise be iterated as characters); with
    ``empty``, the message that refuses an empty list."""
    if not isinstance(value, list):
        raise ValueError(f"{name!r} must be a list of strings, got a {type(value).__name__} ({value!r:.60})")
    bad = [i + 1 for i, v in enumerate(value) if not is_text(v)]
    if bad:
        raise ValueError(f"empty {name} text (or not a string) at positions {bad}")
    if empty is not None and not value:
        raise ValueError(empty)


@dataclass
class ListwiseExample:
    """A query, its candidate documents (first-stage order) and the teacher ranking (1-based, best first)."""
    query: str
    document: List[str]
    ranking: List[int]
    source: str = ""

    def check(self) -> None:
        _texts(self.document, "document", "no documents")
        if not isinstance(self.ranking, list) or any(type(r) is not int for r in self.ranking):
            raise ValueError(f"'ranking' must be a list of integers (1-based document numbers), "
                             f"got {self.ranking!r:.80}")
        if not isinstance(self.source, str):
            raise ValueError(f"'source' must be a string, got {self.source!r:.60}")
        if sorted(self.ranking) != list(range(1, len(self.document) + 1)):
            raise ValueError(f"ranking {self.ranking} is not a permutation of 1..{len(self.document)}")

    @property
    def positive(self) -> str:
        """The teacher's best document (InfoNCE positive)."""
        return self.document[self.ranking[0] - 1]

    def relevance(self) -> List[float]:
        """Per document (first-stage order): ``slate - position`` in the teacher ranking (best = slate)."""
        slate = len(self.document)
        relevance = [0.0] * slate
        for position, doc in enumerate(self.ranking):
            relevance[doc - 1] = float(slate - position)
        return relevance


@dataclass
class PairExample:
    """Stage I: a query with positive and hard-negative passages."""
    query: str
    pos: List[str]
    neg: List[str] = field(default_factory=list)

    def check(self) -> None:
        _texts(self.pos, "pos", "needs at least one positive passage")
        _texts(self.neg, "neg")


def _read(path, make) -> List:
    examples = []
    for number, line in numbered_lines(path, error=DataError):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got a {type(record).__name__}")
            example = make(record)
            if not is_text(example.query):
                raise ValueError("empty query")
            example.check()
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise DataError(f"{path}:{number}: {detail}") from None
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no records")
    return examples


def read_listwise(path) -> List[ListwiseExample]:
    """Stage-II records, checked."""
    return _read(path, lambda r: ListwiseExample(r["query"], r["document"], r["ranking"], r.get("source", "")))


def read_pairs(path) -> List[PairExample]:
    """Stage-I records, checked."""
    return _read(path, lambda r: PairExample(r["query"], r["pos"], r.get("neg", [])))


def write_jsonl(examples: Iterable, path) -> int:
    """Writes records one a line, replacing ``path`` only once all are written; returns their number."""
    count = 0
    with atomic_file(path) as out:
        for example in examples:
            out.write(json.dumps(asdict(example), ensure_ascii=False) + "\n")
            count += 1
    return count


# ---- converters ---------------------------------------------------------------------------------

_PASSAGE = re.compile(r"(?:^|\n)\[(\d+)\] ")
_QUERY = re.compile(r"Search Query: (.*?)\.?\nRank the", re.S)


def _parse_rankllm(record: dict) -> ListwiseExample:
    messages = record["messages"]
    user, answer = (next((m["content"] for m in messages if m["role"] == role), None) for role in ("user", "assistant"))
    if not isinstance(user, str) or not isinstance(answer, str):
        raise ValueError("'messages' needs a user turn and an assistant turn, each with a string 'content'")
    query = _QUERY.search(user)
    if query is None:
        raise ValueError("no 'Search Query: ...' in the user turn")
    listing = user[user.index("\n\n") + 2:query.start()]
    pieces = _PASSAGE.split(listing)
    numbers = [int(n) for n in pieces[1::2]]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"passages are not numbered 1..n: {numbers}")
    documents = [text.strip() for text in pieces[2::2]]
    ranking = [int(n) for n in re.findall(r"\[(\d+)\]", answer)]
    return ListwiseExample(query.group(1).strip(), documents, ranking, source=record.get("id", "rankllm"))


def from_rankllm(path) -> List[ListwiseExample]:
    """RankGPT/RankLLM chat examples: passages ``[i] ...`` in the user turn, ``[3] > [1] > ...`` answered."""
    return _read(path, _parse_rankllm)


def from_pairs(path, *, slate: Optional[int] = None) -> List[ListwiseExample]:
    """Stage-I pairs as records: the first positive, then the hard negatives in file order."""
    slate = positive_int(slate, "slate", allow_none=True)
    examples = []
    for pair in read_pairs(path):
        documents = ([pair.pos[0]] + pair.neg)[:slate]
        examples.append(ListwiseExample(pair.query, documents, list(range(1, len(documents) + 1)), "pairs"))
    return examples


def from_run(topics: pd.DataFrame, run: pd.DataFrame, qrels: pd.DataFrame, *, slate: int = 16,
             source: str = "run") -> Iterator[ListwiseExample]:
    """Records of the top ``slate`` of each query of a run with text, ranked relevant first (by label), then
    in first-stage order; queries without a relevant document in the slate are skipped."""
    slate = positive_int(slate, "slate")
    labels = {(str(q), str(d)): int(label) for q, d, label in qrels[["qid", "docno", "label"]].itertuples(index=False)}
    queries = dict(zip(topics["qid"].astype(str), topics["query"]))
    ordered = run.sort_values(["qid", "rank"], kind="stable")
    for qid, group in ordered.groupby("qid", sort=False):
        group = group.head(slate)
        judged = [labels.get((str(qid), str(d)), 0) for d in group["docno"]]
        if max(judged, default=0) <= 0:
            continue
        order = sorted(range(len(group)), key=lambda i: (-judged[i] if judged[i] > 0 else 1, i))
        yield ListwiseExample(queries[str(qid)], group["text"].tolist(), [i + 1 for i in order], source)


def build_from_dataset(dataset: str, *, bm25_index_dir: str, slate: int = 16) -> List[ListwiseExample]:
    """``from_run`` over a dataset: BM25 (PISA) top ``slate`` of each query, labels from its qrels."""
    slate = positive_int(slate, "slate")
    from pyterrier_e2rank.bm25 import pisa_bm25
    from pyterrier_e2rank import data
    ds = data.dataset(dataset)
    topics, qrels = (data.dataset_part(ds, part, dataset) for part in ("topics", "qrels"))
    run = (pisa_bm25(bm25_index_dir, ds, num_results=slate) >> data.DocumentText(ds))(topics)
    return list(from_run(topics, run, qrels, slate=slate, source=dataset))
