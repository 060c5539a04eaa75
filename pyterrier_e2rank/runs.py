"""TREC run files shared by PyTerrier and Pyserini users: read, write, rerank with E2Rank, evaluate.

A run line is ``qid Q0 docid rank score tag``. Malformed lines are reported with their line number.
Ranks are 1-based in files and 0-based in frames (PyTerrier's convention).
"""
import json
from pathlib import Path

import ir_measures
import pandas as pd


class RunFormatError(ValueError):
    """A run, topics or qrels file line that cannot be read; the message names file and line."""


def read_run(path) -> pd.DataFrame:
    """``qid, docno, score, rank`` (rank from 0, in score order; ties keep the file's ranks)."""
    rows, seen = [], {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 6:
                raise RunFormatError(f"{path}:{number}: expected 6 fields 'qid Q0 docid rank score tag', "
                                     f"got {len(fields)}: {line.rstrip()!r}")
            qid, _, docno, rank, score, _ = fields
            try:
                rank, score = int(rank), float(score)
            except ValueError:
                raise RunFormatError(f"{path}:{number}: rank must be an integer and score a number: "
                                     f"{line.rstrip()!r}") from None
            if (qid, docno) in seen:
                raise RunFormatError(f"{path}:{number}: docid {docno!r} repeated for query {qid!r} "
                                     f"(first on line {seen[qid, docno]})")
            seen[qid, docno] = number
            rows.append((qid, docno, score, rank))
    frame = pd.DataFrame(rows, columns=["qid", "docno", "score", "file_rank"])
    frame["_order"] = pd.factorize(frame["qid"])[0]
    frame = frame.sort_values(["_order", "score", "file_rank"], ascending=[True, False, True], kind="stable")
    frame["rank"] = frame.groupby("qid", sort=False).cumcount()
    return frame.drop(columns=["_order", "file_rank"]).reset_index(drop=True)


def write_run(frame: pd.DataFrame, path, tag: str = "e2rank") -> None:
    """Writes ``qid Q0 docno rank+1 score tag`` lines in rank order."""
    ordered = frame.sort_values(["qid", "rank"], kind="stable")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for row in ordered.itertuples():
            out.write(f"{row.qid} Q0 {row.docno} {int(row.rank) + 1} {float(row.score):.6f} {tag}\n")


def read_topics(source: str) -> pd.DataFrame:
    """``qid, query`` from ``irds:<dataset>``, a ``qid<TAB>query`` file, or a JSONL file (``_id``/``text``)."""
    if source.startswith("irds:"):
        import pyterrier as pt
        return pt.get_dataset(source).get_topics()
    rows = []
    with open(source, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if source.endswith((".jsonl", ".json")):
                try:
                    record = json.loads(line)
                    rows.append((str(next(record[k] for k in ("_id", "id", "qid") if k in record)),
                                 next(record[k] for k in ("text", "query", "title") if k in record)))
                except (json.JSONDecodeError, StopIteration):
                    raise RunFormatError(f"{source}:{number}: expected a JSON object with an id and a text") from None
            else:
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 2 or not fields[1].strip():
                    raise RunFormatError(f"{source}:{number}: expected 'qid<TAB>query': {line.rstrip()!r}")
                rows.append((fields[0].strip(), fields[1]))
    return pd.DataFrame(rows, columns=["qid", "query"])


def read_qrels(source: str) -> pd.DataFrame:
    """``query_id, doc_id, relevance`` from ``irds:<dataset>`` or a TREC qrels file."""
    if source.startswith("irds:"):
        import pyterrier as pt
        qrels = pt.get_dataset(source).get_qrels()
        return qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    rows = []
    with open(source, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4 or not fields[3].lstrip("-").isdigit():
                raise RunFormatError(f"{source}:{number}: expected 'qid iter docid relevance': {line.rstrip()!r}")
            rows.append((fields[0], fields[2], int(fields[3])))
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "relevance"])


def evaluate_run(run: pd.DataFrame, qrels: pd.DataFrame, measures) -> dict:
    """Aggregate ir-measures (names like ``nDCG@10`` or measure objects) of a run frame."""
    measures = [ir_measures.parse_measure(m) if isinstance(m, str) else m for m in measures]
    scored = run.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]]
    return {str(m): float(v) for m, v in ir_measures.calc_aggregate(measures, qrels, scored).items()}


def rerank_run(model, run: pd.DataFrame, topics: pd.DataFrame, docs: str, *, index=None, top_k: int = 100,
               num_input_docs: int = 20, verbose: bool = False) -> pd.DataFrame:
    """The top ``top_k`` of each query of ``run``, reranked by E2Rank. ``docs`` is ``irds:<dataset>``, a JSONL
    collection or a Lucene index directory (Pyserini, raw documents stored)."""
    missing = sorted(set(run["qid"]) - set(topics["qid"]))
    if missing:
        raise KeyError(f"{len(missing)} run queries have no topic: {missing[:5]}")
    candidates = run[run["rank"] < top_k].merge(topics[["qid", "query"]], on="qid")
    if docs.startswith("irds:"):
        from .data import DocumentText
        candidates = DocumentText(docs)(candidates)
    else:
        from .pyserini import text_lookup
        lookup = text_lookup(docs)
        candidates["text"] = [lookup(d) for d in candidates["docno"]]
    return model.reranker(num_input_docs=num_input_docs, index=index, verbose=verbose)(candidates)


def _rerank_command(args) -> int:
    from .model import E2Rank
    model = E2Rank(args.model, device=args.device, batch_size=args.batch_size, verbose=True)
    reranked = rerank_run(model, read_run(args.run), read_topics(args.topics), args.docs, index=args.index,
                          top_k=args.top_k, num_input_docs=args.num_input_docs, verbose=True)
    write_run(reranked, args.output, tag=args.tag)
    print(f"reranked {reranked['qid'].nunique()} queries into {args.output}")
    return 0


def _eval_command(args) -> int:
    results = evaluate_run(read_run(args.run), read_qrels(args.qrels), args.metrics)
    for name, value in results.items():
        print(f"{name}\t{value:.4f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("rerank-run", help="rerank a TREC run file with E2Rank, write a TREC run file")
    p.add_argument("--run", required=True, help="TREC run: qid Q0 docid rank score tag")
    p.add_argument("--topics", required=True, help="irds:<dataset>, qid<TAB>query file, or JSONL queries")
    p.add_argument("--docs", required=True, help="irds:<dataset>, JSONL collection, or Lucene index (stored raw)")
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--index", help="an E2Rank index of the collection (one forward pass per query)")
    p.add_argument("--output", required=True)
    p.add_argument("--tag", default="e2rank")
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--num-input-docs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_rerank_command)

    p = subparsers.add_parser("eval-run", help="evaluate a TREC run file with ir-measures")
    p.add_argument("--run", required=True)
    p.add_argument("--qrels", required=True, help="irds:<dataset> or a TREC qrels file")
    p.add_argument("--metrics", nargs="+", default=["nDCG@10", "R@100"])
    p.set_defaults(func=_eval_command)
