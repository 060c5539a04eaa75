"""BRIGHT (``xlangai/BRIGHT``), the reasoning-intensive retrieval benchmark: its domains' files, from a local copy
in the dataset card's layout or the Hugging Face hub (as ir_datasets downloads them), read as checked records;
each query's ``excluded_ids`` removed from a ranking (pt_docs/reproducing.rst, "BRIGHT")."""
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import pandas as pd
import pyterrier as pt

from .io import FileFormatError, json_line, numbered_lines

DOMAINS = ("biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow", "sustainable_living",
           "pony", "leetcode", "aops", "theoremqa_theorems", "theoremqa_questions")
#: The columns read, by folder of the dataset card's layout (``examples/<domain>-*.parquet``).
COLUMNS = {"examples": ("query", "reasoning", "id", "excluded_ids", "gold_ids"), "documents": ("id", "content")}
QUERY_FIELDS = ("query", "reasoning")


def domain_of(name) -> Optional[Tuple[str, str]]:
    """``(domain, query field)`` of a BRIGHT dataset name (``bright/biology``: the query texts,
    ``bright/biology/reasoning``: the reasoning texts), ``None`` for another name (ir_datasets' own
    ``irds:bright/...`` too); ``ValueError`` naming an unknown domain."""
    parts = str(name).split("/")
    if parts[0] != "bright" or len(parts) not in (2, 3) or parts[2:] not in ([], ["reasoning"]):
        return None
    if parts[1] not in DOMAINS:
        raise ValueError(f"dataset {name!r}: BRIGHT has no domain {parts[1]!r}; its domains: {', '.join(DOMAINS)}")
    return parts[1], parts[2] if len(parts) == 3 else "query"


def domain_files(domain: str, bright_dir=None) -> Dict[str, List[Path]]:
    """``{"examples": [...], "documents": [...]}``: ``domain``'s ``.parquet`` or ``.jsonl`` files under
    ``bright_dir``, or the hub's parquet files (downloaded and checked by ir_datasets) when it is ``None``. Raises
    ``FileNotFoundError`` naming the folder and the domain."""
    if bright_dir is None:
        import ir_datasets
        files = ir_datasets.util.DownloadConfig.context("bright", ir_datasets.util.home_path() / "bright")
        subset = domain.replace("_", "-")  # ir_datasets' names of the hub's files
        return {"examples": [Path(files[f"{subset}/queries"].path())],
                "documents": [Path(files[f"{subset}/docs"].path())]}
    found = {}
    for part in COLUMNS:
        folder = Path(bright_dir) / part
        found[part] = sorted(p for p in folder.glob(f"{domain}-*") if p.suffix in (".parquet", ".jsonl"))
        if not found[part]:
            raise FileNotFoundError(f"{folder}: no {domain}-*.parquet or {domain}-*.jsonl file: the BRIGHT copy at "
                                    f"{bright_dir} lacks the domain {domain!r}")
    return found


def read_records(paths: List[Path], part: str) -> Iterator[dict]:
    """The records of ``part``'s (``COLUMNS``) files, ``.parquet`` or ``.jsonl``. Raises ``FileFormatError`` naming
    the file (and line) and the missing column, ``ImportError`` naming the ``bright`` extra without pyarrow."""
    for path in paths:
        if path.suffix == ".parquet":
            yield from _parquet_records(path, COLUMNS[part])
            continue
        for number, line in numbered_lines(path):
            record = json_line(line, f"{path}:{number}")
            missing = [c for c in COLUMNS[part] if not isinstance(record, dict) or c not in record]
            if missing:
                raise FileFormatError(f"{path}:{number}: no column {missing[0]!r}; BRIGHT's {part} have "
                                      f"{', '.join(COLUMNS[part])}")
            yield record


def _parquet_records(path: Path, columns) -> Iterator[dict]:
    try:
        import pyarrow.parquet
    except ImportError:
        raise ImportError(f"{path}: reading parquet files needs pyarrow: pip install pyterrier-e2rank[bright]"
                          ) from None
    try:
        table = pyarrow.parquet.ParquetFile(path)
    except pyarrow.ArrowException as e:
        raise FileFormatError(f"{path}: not a parquet file ({e})") from None
    missing = [c for c in columns if c not in table.schema_arrow.names]
    if missing:
        raise FileFormatError(f"{path}: no column {missing[0]!r}; BRIGHT's files have {', '.join(columns)} (this one "
                              f"has {', '.join(table.schema_arrow.names)})")
    for batch in table.iter_batches(columns=list(columns)):
        yield from batch.to_pylist()


def excluded_ids(paths: List[Path]) -> Dict[str, Set[str]]:
    """``{qid: excluded docnos}`` of examples files (BRIGHT's ``"N/A"`` placeholder left out)."""
    return {str(r["id"]): {str(d) for d in r["excluded_ids"] or () if d != "N/A"}
            for r in read_records(paths, "examples")}


def drop_excluded(run: pd.DataFrame, excluded: Dict[str, Set[str]]) -> Tuple[pd.DataFrame, int]:
    """``(run without each query's excluded documents, ranks from 0 again; how many rows were removed)``."""
    keep = [docno not in excluded.get(qid, ()) for qid, docno in zip(run["qid"], run["docno"])]
    kept = run[keep]
    ranks = kept.groupby("qid", sort=False)["rank"].rank(method="first").astype(int) - 1
    return kept.assign(rank=ranks), len(run) - len(kept)


def excluding(retriever: Callable[[int], pt.Transformer], excluded: Dict[str, Set[str]],
              top_k: int) -> pt.Transformer:
    """``retriever(num_results)`` giving ``top_k`` results per query with each query's ``excluded`` documents
    removed before the cut (``retriever(top_k)`` itself when nothing is excluded)."""
    if not any(excluded.values()):
        return retriever(top_k)
    depth = top_k + max(map(len, excluded.values()))
    return retriever(depth) >> pt.apply.generic(lambda run: drop_excluded(run, excluded)[0]) % top_k
