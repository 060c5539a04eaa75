"""TREC run files (``qid Q0 docid rank score tag``; ranks from 1 in files, from 0 in frames; ids the exact
strings of the file): read, written, reranked with E2Rank, evaluated."""
import math
from pathlib import Path
from typing import Optional

import ir_measures
import pandas as pd
import pyterrier as pt

from ..checks import identifier, positive_int
from ..data import DocumentText, dataset, dataset_part, is_beir_folder, read_qrels_file
from ..io import FileFormatError, atomic_file, numbered_lines, refuse_output_as_input, split_fields
from ..pyserini import text_lookup
from ..records import read_records
from . import arguments
from .sharding import is_main_process, transform_by_query


class RunFormatError(FileFormatError):
    """A run, topics or qrels file line that cannot be read; the message names file and line."""


def read_run(path) -> pd.DataFrame:
    """``qid, docno, score, rank`` of a TREC run file (rank from 0, in score order; ties keep the file's ranks).
    Raises ``RunFormatError`` naming file:line for a line that is not UTF-8 or has another number of fields, a
    rank not an integer, a score not finite, a docid repeated for a query; and for an empty file."""
    columns, seen = {"qid": [], "docno": [], "score": [], "file_rank": []}, {}
    for number, line in numbered_lines(path, error=RunFormatError):
        qid, _, docno, rank, score, _ = split_fields(line, 6, where=f"{path}:{number}",
                                                     form="qid Q0 docid rank score tag", error=RunFormatError)
        try:
            columns["file_rank"].append(int(rank))
            columns["score"].append(float(score))
        except ValueError:
            raise RunFormatError(f"{path}:{number}: rank must be an integer and score a number: {line!r}") from None
        if not math.isfinite(columns["score"][-1]):  # nan would sort anywhere, inf above every real score
            raise RunFormatError(f"{path}:{number}: score {score!r} of docid {docno!r} is not a finite number")
        first = seen.setdefault((qid, docno), number)
        if first != number:
            raise RunFormatError(f"{path}:{number}: docid {docno!r} repeated for query {qid!r} (first on line {first})")
        columns["qid"].append(qid)
        columns["docno"].append(docno)
    if not seen:  # it would evaluate to 0 and rerank into an empty run, silently
        raise RunFormatError(f"{path}: no run lines (the file is empty)")
    frame = pd.DataFrame(columns)
    frame["_order"] = pd.factorize(frame["qid"])[0]
    frame = frame.sort_values(["_order", "score", "file_rank"], ascending=[True, False, True], kind="stable")
    frame["rank"] = frame.groupby("qid", sort=False).cumcount()
    return frame.drop(columns=["_order", "file_rank"]).reset_index(drop=True)


def write_run(frame: pd.DataFrame, path, tag: str = "e2rank") -> None:
    """Writes ``qid Q0 docno rank+1 score tag`` lines in rank order, atomically, scores exactly. Raises
    ``ValueError`` naming a qid, docno or tag with whitespace or a non-finite score."""
    tag = identifier(tag, "the run tag", "tag")
    qids = [identifier(q, "qid", f"row {i}") for i, q in enumerate(frame["qid"])]
    docnos = [identifier(d, "docno", f"row {i} (qid {q!r})") for i, (q, d) in enumerate(zip(qids, frame["docno"]))]
    for qid, docno, score in zip(qids, docnos, frame["score"]):
        if not math.isfinite(score):
            raise ValueError(f"the score of docno {docno!r} for qid {qid!r} is {score!r}, not a finite number")
    ordered = frame.assign(qid=qids, docno=docnos, rank=frame["rank"].astype(int) + 1,
                           score=frame["score"].astype(float)).sort_values(["qid", "rank"], kind="stable")
    with atomic_file(path) as out:
        pt.io.write_results(ordered, out, format="trec", run_name=tag)


def _is_dataset(source) -> bool:
    """``irds:<dataset>`` or a BEIR folder: sources read through ``data.dataset``."""
    return str(source).startswith("irds:") or is_beir_folder(source)


def _is_folder_or_dataset(source) -> bool:
    """A topics or qrels source for ``data.dataset``, which refuses a folder that is not a BEIR one by name."""
    return _is_dataset(source) or Path(source).is_dir()


def read_topics(source: str) -> pd.DataFrame:
    """``qid, query`` from ``irds:<dataset>``, a BEIR folder (its test split), or a query file (``records``)."""
    if _is_folder_or_dataset(source):
        return dataset_part(dataset(source), "topics", source)
    records = [record for _, record in read_records(source, "query", error=RunFormatError)]
    return pd.DataFrame({"qid": [r["id"] for r in records], "query": [r["text"] for r in records]},
                        columns=["qid", "query"])


def read_qrels(source: str) -> pd.DataFrame:
    """``query_id, doc_id, relevance`` from ``irds:<dataset>``, a BEIR folder (its test split), or a TREC or
    BEIR qrels file."""
    if _is_folder_or_dataset(source):
        qrels = dataset_part(dataset(source), "qrels", source)
        return qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    return read_qrels_file(source, error=RunFormatError)


def parse_measure(measure) -> "ir_measures.Measure":
    """An ir-measures measure from its name (``nDCG@10``, ``P(rel=2)@5``) or a measure object; ``ValueError``
    naming it for a name ir-measures cannot read, a parameter the measure does not take, or a cutoff below 1."""
    try:
        parsed = ir_measures.parse_measure(measure) if isinstance(measure, str) else measure
        parsed.validate_params()  # AssertionError naming the parameter
        positive_int(parsed.params.get(parsed.AT_PARAM), "its cutoff", allow_none=True)
        return parsed
    except NameError:  # ir-measures' "measure not found"
        reason = f"ir-measures has no measure called {str(measure).split('@')[0].split('(')[0]!r}"
    except (ValueError, AssertionError) as e:
        reason = "not an ir-measures name (its cutoff or parameters cannot be read)" if "problem parsing" in str(e) \
            else str(e)
    raise ValueError(f"unknown measure {measure!r}: {reason}; measures are written as ir-measures names, e.g. "
                     f"nDCG@10, R@100, P(rel=2)@5, AP, RR@10")


def _string_ids(frame: pd.DataFrame, name: str, **columns: str) -> pd.DataFrame:
    """``frame`` with its id columns (``column=what``) as strings (``checks.identifier``: ints as ``str(int)``)."""
    converted = {}
    for column, what in columns.items():
        values = frame[column].tolist()
        if not all(isinstance(v, str) for v in values):
            converted[column] = [identifier(v, what, f"{name} row {i}") for i, v in enumerate(values)]
    return frame.assign(**converted) if converted else frame


def evaluate_run(run: pd.DataFrame, qrels: pd.DataFrame, measures) -> dict:
    """``{measure name: aggregate value}`` of a run frame (``qid, docno, score``) against qrels (``query_id,
    doc_id, relevance``), ids compared as strings, in the order of ``measures`` (``parse_measure``).
    Raises ``KeyError`` naming missing columns, ``ValueError`` for a run of no judged query."""
    measures = list(dict.fromkeys(parse_measure(m) for m in measures))
    pt.validate.result_frame(run, extra_columns=["score"])
    pt.validate.columns(qrels, includes=["query_id", "doc_id", "relevance"])
    run = _string_ids(run, "run", qid="qid", docno="docno")
    qrels = _string_ids(qrels, "qrels", query_id="qid", doc_id="docno")
    scored = run.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]]
    run_qids, judged = scored["query_id"].unique(), set(qrels["query_id"])
    if len(run_qids) and judged.isdisjoint(run_qids):
        raise ValueError(f"none of the run's {len(run_qids)} queries ({', '.join(map(repr, run_qids[:3]))}, ...) is in "
                         f"the qrels ({', '.join(map(repr, sorted(judged)[:3]))}, ...): nothing would be evaluated; "
                         f"are the run and the qrels of one dataset?")
    values = ir_measures.calc_aggregate(measures, qrels, scored)
    return {str(m): float(values[m]) for m in measures}


def rerank_run(model, run: pd.DataFrame, topics: pd.DataFrame, docs: str, *, index=None, top_k: int = 100,
               num_input_docs: Optional[int] = None, verbose: bool = False) -> Optional[pd.DataFrame]:
    """The top ``top_k`` of each query of ``run`` (``qid, docno, rank``) reranked with the ``topics`` (``qid,
    query``) and the text of ``docs`` (``irds:<dataset>``, a BEIR folder, a JSONL collection or a Lucene index with
    raw documents), in process 0 (``None`` in the others). Raises ``KeyError`` for missing columns or a run query
    without a topic, ``ValueError`` for a topic given twice."""
    top_k = positive_int(top_k, "top_k")
    num_input_docs = positive_int(num_input_docs, "num_input_docs", allow_none=True)
    pt.validate.result_frame(run, extra_columns=["rank"])  # an InputValidationError naming the missing columns
    pt.validate.query_frame(topics, extra_columns=["query"])
    run = _string_ids(run, "run", qid="qid", docno="docno")
    topics = _string_ids(topics, "topics", qid="qid")
    repeated = topics["qid"][topics["qid"].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"{len(repeated)} topic qid(s) are given more than once: {repeated[:5]}")
    missing = sorted(set(run["qid"]) - set(topics["qid"]))
    if missing:
        raise KeyError(f"{len(missing)} run queries have no topic: {missing[:5]}")
    candidates = run[run["rank"] < top_k].merge(topics[["qid", "query"]], on="qid")
    if _is_dataset(docs):
        text = DocumentText(docs)
    else:
        lookup = text_lookup(docs)
        text = pt.apply.generic(lambda frame: frame.assign(text=[lookup(d) for d in frame["docno"]]))
    reranker = model.reranker(num_input_docs=num_input_docs, index=index, verbose=verbose)
    return transform_by_query(text >> reranker, candidates, verbose=verbose)


def _rerank_command(args) -> int:
    refuse_output_as_input(args.output, run=args.run, topics=args.topics, docs=args.docs, index=args.index)
    main = is_main_process()
    model = arguments.load_model(args)
    topics, docs = (arguments.bright_source(args, source) for source in (args.topics, args.docs))
    reranked = rerank_run(model, read_run(args.run), read_topics(topics), docs, index=args.index,
                          top_k=args.top_k, num_input_docs=args.num_input_docs, verbose=main)
    if not main:  # process 0 writes the merged run
        return 0
    write_run(reranked, args.output, tag=args.tag)
    print(f"reranked {reranked['qid'].nunique()} queries into {args.output}")
    return 0


def _eval_command(args) -> int:
    measures = [parse_measure(m) for m in args.metrics]  # before reading the files
    results = evaluate_run(read_run(args.run), read_qrels(arguments.bright_source(args, args.qrels)), measures)
    for name, value in results.items():
        print(f"{name}\t{value:.4f}")
    return 0


def register(parsers: dict) -> None:
    p = parsers["rerank-run"]
    p.add_argument("--run", required=True, help="TREC run: qid Q0 docid rank score tag")
    p.add_argument("--topics", required=True,
                   help="irds:<dataset>, a BEIR folder, bright/<domain>, qid<TAB>query file, or JSONL queries")
    p.add_argument("--docs", required=True,
                   help="irds:<dataset>, a BEIR folder, bright/<domain>, JSONL collection, or Lucene index (raw texts)")
    p.add_argument("--index", help="an E2Rank index of the collection (one forward pass per query)")
    p.add_argument("--output", required=True)
    p.add_argument("--tag", default="e2rank")
    arguments.add_options(p, "--model", "--top-k", "--num-input-docs")
    arguments.add_model_run_options(p)
    arguments.add_bright_options(p)
    p.set_defaults(func=_rerank_command)

    p = parsers["eval-run"]
    p.add_argument("--run", required=True)
    p.add_argument("--qrels", required=True,
                   help="irds:<dataset>, a BEIR folder, bright/<domain>, or a TREC or BEIR qrels file")
    p.add_argument("--metrics", nargs="+", default=["nDCG@10", "R@100"])
    arguments.add_bright_options(p)
    p.set_defaults(func=_eval_command)
