"""Run files: TREC (``qid Q0 docid rank score tag``; ranks from 1 in files, from 0 in frames; ids the exact
strings of the file) or JSONL candidates with their texts (the authors' ``{dataset}_top100.jsonl``, rank_llm's
requests): read, written, reranked with E2Rank, evaluated."""
import json
import math
import sys
from pathlib import Path
from typing import Iterator, Optional

import ir_measures
import pandas as pd
import pyterrier as pt

from ..checks import identifier, is_text, positive_int
from ..data import DocumentText, dataset, dataset_part, is_beir_folder, read_qrels_file
from ..io import FileFormatError, atomic_file, json_line, numbered_lines, refuse_output_as_input, split_fields
from ..model.text import join_title
from ..pyserini import text_lookup
from ..records import read_records
from . import arguments
from .sharding import is_main_process, transform_by_query


class RunFormatError(FileFormatError):
    """A run, topics or qrels file line that cannot be read; the message names file and line."""


def is_candidates_file(path) -> bool:
    """Whether a run file holds JSONL candidates (its first line a JSON object), else TREC run lines."""
    return next(numbered_lines(path, error=RunFormatError), (0, ""))[1].lstrip().startswith("{")


def _key(mapping, key: str, where: str, what: str):
    """``mapping[key]``; ``RunFormatError`` naming ``where`` and ``what`` when it is no JSON object or lacks it."""
    if not isinstance(mapping, dict):
        raise RunFormatError(f"{where}: {what} is a {type(mapping).__name__}, not a JSON object")
    if key not in mapping:
        raise RunFormatError(f"{where}: {what} has no {key!r} key (its keys: {sorted(mapping)})")
    return mapping[key]


#: rank_llm's keys of a candidate's text in its ``doc`` object, in the order rank_llm prefers them.
DOC_TEXT_KEYS = ("text", "segment", "contents", "content", "body", "passage")


def _doc_text(doc, where: str, docno: str):
    """The text of a rank_llm candidate's ``doc``: a string as it is; of an object, its first ``DOC_TEXT_KEYS`` key
    with its ``title`` joined as a document's (``None`` for none)."""
    if not isinstance(doc, dict):
        return doc  # a string, None, or what the caller refuses
    text, title = next((doc[k] for k in DOC_TEXT_KEYS if k in doc), None), doc.get("title")
    if not isinstance(text, str):
        return text
    if title is not None and not isinstance(title, str):
        raise RunFormatError(f"{where}: the title of docid {docno!r} is a {type(title).__name__}, not a string")
    return join_title(title, text)


def candidates_line(line: str, where: str) -> tuple:
    """``(record, qid, query, list key, [(docno, score, text or None), ...])`` of one JSONL candidates line: the
    authors' ``{"query": str, "hits": [{"qid", "docid", "rank", "score", "content"}, ...]}`` or rank_llm's
    ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc"}, ...]}``. Raises ``RunFormatError``
    naming ``where`` for bad JSON, a missing key, hits of several qids, a score not a number, a text not a string."""
    record = json_line(line, where, error=RunFormatError)
    key = next((k for k in ("hits", "candidates") if isinstance(record, dict) and k in record), None)
    if key is None:
        raise RunFormatError(f"{where}: expected a JSON object with 'hits' (the authors' candidates) or 'candidates' "
                             f"(rank_llm's requests): {line[:80]!r}")
    items, query = record[key], _key(record, "query", where, "the line")
    if not isinstance(items, list) or not items:
        raise RunFormatError(f"{where}: {key!r} must be a non-empty list of the query's candidates")
    if key == "hits":
        qids = [identifier(_key(hit, "qid", where, f"hit {i + 1}"), "qid", where, error=RunFormatError)
                for i, hit in enumerate(items)]
        other = next((q for q in qids if q != qids[0]), None)
        if other is not None:
            raise RunFormatError(f"{where}: the hits of one line have qids {qids[0]!r} and {other!r}; a line holds "
                                 f"one query's hits")
        qid = qids[0]
    else:
        qid = identifier(_key(query, "qid", where, "the query"), "qid", where, error=RunFormatError)
        query = _key(query, "text", where, "the query")
    if not is_text(query):
        raise RunFormatError(f"{where}: the query text of qid {qid!r} is empty or not a string: {query!r}")
    entries = []
    for i, item in enumerate(items):
        what = f"{'hit' if key == 'hits' else 'candidate'} {i + 1}"
        docno = identifier(_key(item, "docid", where, what), "docid", where, error=RunFormatError)
        score = _key(item, "score", where, what)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise RunFormatError(f"{where}: the score of docid {docno!r} is {score!r}, not a number")
        text = item.get("content") if key == "hits" else _doc_text(item.get("doc"), where, docno)
        if text is not None and not isinstance(text, str):
            raise RunFormatError(f"{where}: the text of docid {docno!r} is a {type(text).__name__}, not a string")
        entries.append((docno, float(score), text))
    return record, qid, query, key, entries


def run_entries(path) -> Iterator[tuple]:
    """``(line number, qid, docno, rank in the file, score, query text, document text)`` of each candidate of a run
    file in file order: TREC lines (texts ``None``), or JSONL candidates (``candidates_line``; a query on one line,
    every candidate's text given or none). Raises ``RunFormatError`` naming file:line."""
    if is_candidates_file(path):
        first_line, first_text = {}, None
        for number, line in numbered_lines(path, error=RunFormatError):
            _, qid, query, _, entries = candidates_line(line, f"{path}:{number}")
            if first_line.setdefault(qid, number) != number:
                raise RunFormatError(f"{path}:{number}: query {qid!r} repeated (first on line {first_line[qid]})")
            for position, (docno, score, text) in enumerate(entries):
                first_text = first_text or (number, text is not None)
                if first_text[1] != (text is not None):
                    raise RunFormatError(f"{path}:{number}: docid {docno!r} {'has no' if text is None else 'has a'} "
                                         f"text, unlike the first candidate (line {first_text[0]}): give every "
                                         f"candidate's text, or none")
                yield number, qid, docno, position, score, query, text
        return
    for number, line in numbered_lines(path, error=RunFormatError):
        qid, _, docno, rank, score, _ = split_fields(line, 6, where=f"{path}:{number}",
                                                     form="qid Q0 docid rank score tag", error=RunFormatError)
        try:
            rank, score = int(rank), float(score)
        except ValueError:
            raise RunFormatError(f"{path}:{number}: rank must be an integer and score a number: {line!r}") from None
        yield number, qid, docno, rank, score, None, None


def read_run(path) -> pd.DataFrame:
    """``qid, docno, score, rank`` of a run file (``run_entries``; rank from 0, in score order; ties keep the file's
    order), and from JSONL candidates ``query`` and, when the file gives them, ``text``. Raises ``RunFormatError``
    naming file:line for a line ``run_entries`` refuses, a score not finite, a docid repeated for a query; and for
    an empty file."""
    rows, seen = [], {}
    for number, qid, docno, file_rank, score, query, text in run_entries(path):
        if not math.isfinite(score):  # nan would sort anywhere, inf above every real score
            raise RunFormatError(f"{path}:{number}: score {score!r} of docid {docno!r} is not a finite number")
        if (qid, docno) in seen:
            raise RunFormatError(f"{path}:{number}: docid {docno!r} repeated for query {qid!r} (first on line "
                                 f"{seen[qid, docno]})")
        seen[qid, docno] = number
        rows.append((qid, docno, score, file_rank, query, text))
    if not seen:  # it would evaluate to 0 and rerank into an empty run, silently
        raise RunFormatError(f"{path}: no run lines (the file is empty)")
    frame = pd.DataFrame.from_records(rows, columns=["qid", "docno", "score", "file_rank", "query", "text"])
    frame = frame.drop(columns=[c for c in ("query", "text") if frame[c].isna().all()])
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


def write_candidates(run: pd.DataFrame, path, source) -> None:
    """Writes ``run`` (``qid, docno, score, rank``) atomically in the form of the JSONL candidates file ``source``:
    each of its lines whose query ``run`` holds, with that query's candidates of ``run`` in rank order, their new
    ``score`` (and hits their ``rank`` from 1), every other key and text kept. Raises ``KeyError`` naming a docno
    ``source`` lacks for its query."""
    ranked = {qid: group for qid, group in run.sort_values("rank", kind="stable").groupby("qid", sort=False)}
    with atomic_file(path) as out:
        for number, line in numbered_lines(source, error=RunFormatError):
            record, qid, _, key, entries = candidates_line(line, f"{source}:{number}")
            if qid not in ranked:
                continue
            items = {docno: item for (docno, _, _), item in zip(entries, record[key])}
            group = ranked[qid]
            missing = sorted(set(group["docno"]) - set(items))
            if missing:
                raise KeyError(f"{source}:{number}: query {qid!r} has no candidates {missing[:5]}")
            record[key] = [{**items[docno], "score": float(score), **({"rank": int(rank) + 1} if key == "hits" else {})}
                           for docno, score, rank in zip(group["docno"], group["score"], group["rank"])]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


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
    records = read_records(source, "query", error=RunFormatError)
    return pd.DataFrame([(record["id"], record["text"]) for _, record in records], columns=["qid", "query"])


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


def check_texts(run: pd.DataFrame, topics, docs) -> None:
    """Raises ``ValueError`` naming what to give when the query texts (``topics``, else the run's ``query``) or the
    document texts (``docs``, else the run's ``text``) are missing."""
    for given, column, name, what in ((topics, "query", "topics", "query"), (docs, "text", "docs", "document")):
        if given is None and column not in run.columns:
            raise ValueError(f"the run holds no {what} texts (a TREC run, or candidates without them): give "
                             f"{name} (--{name})")


def rerank_run(model, run: pd.DataFrame, topics: Optional[pd.DataFrame] = None, docs: Optional[str] = None, *,
               index=None, top_k: int = 100, num_input_docs: Optional[int] = None,
               verbose: bool = False) -> Optional[pd.DataFrame]:
    """The top ``top_k`` of each query of ``run`` (``qid, docno, rank``) reranked with the ``topics`` (``qid,
    query``) and the text of ``docs`` (``irds:<dataset>``, a BEIR folder, a JSONL collection or a Lucene index with
    raw documents), in process 0 (``None`` in the others); without ``topics`` or ``docs``, with the run's own
    ``query`` or ``text`` (``read_run`` of JSONL candidates). Raises ``KeyError`` for missing columns or a run query
    without a topic, ``ValueError`` for missing texts (``check_texts``) or a topic given twice."""
    top_k = positive_int(top_k, "top_k")
    num_input_docs = positive_int(num_input_docs, "num_input_docs", allow_none=True)
    pt.validate.result_frame(run, extra_columns=["rank"])  # an InputValidationError naming the missing columns
    check_texts(run, topics, docs)
    run = _string_ids(run, "run", qid="qid", docno="docno")
    candidates = run[run["rank"] < top_k]
    if topics is not None:
        pt.validate.query_frame(topics, extra_columns=["query"])
        topics = _string_ids(topics, "topics", qid="qid")
        repeated = topics["qid"][topics["qid"].duplicated()].unique().tolist()
        if repeated:
            raise ValueError(f"{len(repeated)} topic qid(s) are given more than once: {repeated[:5]}")
        missing = sorted(set(run["qid"]) - set(topics["qid"]))
        if missing:
            raise KeyError(f"{len(missing)} run queries have no topic: {missing[:5]}")
        candidates = candidates.drop(columns=["query"], errors="ignore").merge(topics[["qid", "query"]], on="qid")
    reranker = model.reranker(num_input_docs=num_input_docs, index=index, verbose=verbose)
    if docs is None:
        return transform_by_query(reranker, candidates, verbose=verbose)
    if _is_dataset(docs):
        text = DocumentText(docs)
    else:
        lookup = text_lookup(docs)
        text = pt.apply.generic(lambda frame: frame.assign(text=[lookup(d) for d in frame["docno"]]))
    return transform_by_query(text >> reranker, candidates.drop(columns=["text"], errors="ignore"), verbose=verbose)


def _rerank_command(args) -> int:
    refuse_output_as_input(args.output, run=args.run, topics=args.topics, docs=args.docs, index=args.index)
    if args.output_format == "jsonl" and not is_candidates_file(args.run):
        raise ValueError(f"--output-format jsonl writes the JSONL candidates form of --run, and {args.run} is a "
                         f"TREC run: give --output-format trec")
    run = read_run(args.run)
    topics, docs = (arguments.bright_source(args, source) for source in (args.topics, args.docs))
    topics = None if topics is None else read_topics(topics)
    check_texts(run, topics, docs)  # before the model is loaded
    main = is_main_process()
    model = arguments.load_model(args)
    reranked = rerank_run(model, run, topics, docs, index=args.index, top_k=args.top_k,
                          num_input_docs=args.num_input_docs, verbose=main)
    if not main:  # process 0 writes the merged run
        return 0
    if args.output_format == "jsonl":
        write_candidates(reranked, args.output, args.run)
    else:
        write_run(reranked, args.output, tag=args.tag)
    print(f"reranked {reranked['qid'].nunique()} queries into {args.output}")
    return 0


def _eval_command(args) -> int:
    measures = [parse_measure(m) for m in args.metrics]  # before reading the files
    run, qrels = read_run(args.run), read_qrels(arguments.bright_source(args, args.qrels))
    absent = set(qrels["query_id"].astype(str)) - set(run["qid"].astype(str))
    if absent:  # never silent: a partial run would otherwise score as if its other queries failed, or as complete
        how = ("left out (--queries run)" if args.queries == "run" else
               "counted as 0, as trec_eval -c does (--queries run averages over the run's queries only)")
        print(f"note: {len(absent)} of the qrels' {qrels['query_id'].nunique()} queries have no line in the run, "
              f"e.g. {sorted(absent)[:3]}: {how}", file=sys.stderr)
        if args.queries == "run":
            qrels = qrels[~qrels["query_id"].astype(str).isin(absent)]
    for name, value in evaluate_run(run, qrels, measures).items():
        print(f"{name}\t{value:.4f}")
    return 0


def register(parsers: dict) -> None:
    p = parsers["rerank-run"]
    p.add_argument("--run", required=True, help="a TREC run (qid Q0 docid rank score tag), or JSONL candidates "
                                                "with texts: the authors' {dataset}_top100.jsonl, rank_llm's requests")
    p.add_argument("--topics", help="irds:<dataset>, a BEIR folder, bright/<domain>, qid<TAB>query file, or JSONL "
                                    "queries (default: the query texts of JSONL --run)")
    p.add_argument("--docs", help="irds:<dataset>, a BEIR folder, bright/<domain>, JSONL collection, or Lucene index "
                                  "(raw texts) (default: the document texts of JSONL --run)")
    p.add_argument("--index", help="an E2Rank index of the collection (one forward pass per query)")
    p.add_argument("--output", required=True, help="the reranked run (TREC, or the JSONL form of --run)")
    p.add_argument("--tag", default="e2rank", help="the TREC run's tag")
    p.add_argument("--output-format", choices=["trec", "jsonl"], default="trec",
                   help="trec, or jsonl: the form of a JSONL --run, its candidates reordered with their new scores")
    arguments.add_options(p, "--model", "--top-k", "--num-input-docs")
    arguments.add_model_run_options(p)
    arguments.add_bright_options(p)
    p.set_defaults(func=_rerank_command)

    p = parsers["eval-run"]
    p.add_argument("--run", required=True, help="a TREC run, or JSONL candidates (as rerank-run reads)")
    p.add_argument("--qrels", required=True,
                   help="irds:<dataset>, a BEIR folder, bright/<domain>, or a TREC or BEIR qrels file")
    p.add_argument("--metrics", nargs="+", default=["nDCG@10", "R@100"],
                   help="ir-measures names (default: %(default)s)")
    p.add_argument("--queries", choices=["qrels", "run"], default="qrels",
                   help="average over every judged query, those missing from the run as 0 (qrels, the default), or "
                        "over the run's judged queries only (run); a note says how many are missing")
    arguments.add_bright_options(p)
    p.set_defaults(func=_eval_command)
