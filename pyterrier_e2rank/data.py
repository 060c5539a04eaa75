"""Datasets through ir_datasets: the corpus as ``docno``/``text`` records and a text loader for
reranking, both writing BEIR documents as ``title + " " + text`` (``text.join_title``)."""
from typing import Iterable, Union

import pandas as pd
import pyterrier as pt

from .text import join_title


def load_dataset(dataset: Union[str, "pt.datasets.Dataset"]) -> "pt.datasets.Dataset":
    """``pt.get_dataset`` for a name such as ``irds:beir/scifact/test``; datasets pass through."""
    return pt.get_dataset(dataset) if isinstance(dataset, str) else dataset


def corpus_id(dataset: str) -> str:
    """The ir_datasets id that owns the documents (``beir/scifact`` for ``irds:beir/scifact/test``),
    so that splits of one collection share their indexes."""
    import ir_datasets
    return ir_datasets.docs_parent_id(dataset.removeprefix("irds:"))


def _text_fields(dataset) -> list:
    docs_cls = dataset.irds_ref().docs_cls()
    return [f for f in ("title", "text") if f in docs_cls._fields]


def corpus_iter(dataset, *, verbose: bool = False) -> Iterable[dict]:
    """``{"docno", "text"}`` for every document of the collection; sized, so progress bars show a total."""
    docs = load_dataset(dataset).get_corpus_iter(verbose=verbose)
    records = ({"docno": doc["docno"], "text": join_title(doc.get("title"), doc.get("text"))} for doc in docs)
    return pt.utils.GeneratorLen(records, len(docs))


class DocumentText(pt.Transformer):
    """Adds ``text`` (title joined) to a result frame by ``docno``, from the dataset's document store."""

    def __init__(self, dataset, *, verbose: bool = False):
        self.dataset = load_dataset(dataset)
        self.fields = _text_fields(self.dataset)
        self.loader = self.dataset.text_loader(self.fields, verbose=verbose)

    def __repr__(self):
        return f"DocumentText({self.dataset!r})"

    def __eq__(self, other):  # equal for the same collection, so pt.Experiment(plan="tree") shares it
        return isinstance(other, DocumentText) and (repr(self.dataset), self.fields) == (repr(other.dataset), other.fields)

    def __hash__(self):
        return hash((DocumentText, repr(self.dataset), tuple(self.fields)))

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=["docno"], context=self)
        if len(inp) == 0:
            return inp.assign(text=pd.Series(dtype=str))
        out = self.loader(inp.drop(columns=[f for f in self.fields if f in inp.columns]))
        if "title" in self.fields:
            out["text"] = [join_title(t, x) for t, x in zip(out.pop("title"), out["text"])]
        return out
