"""Text files read as users' tools write them (one line reader, ``io.numbered_lines``: a byte-order mark,
CRLF or CR line ends and extra fields get one rule for every file kind), and files we write look like the
user's own (the umask's mode or the replaced file's, written through symbolic links, scores kept exactly)."""
import gzip
import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.cli.main import _reporting_errors, main
from pyterrier_e2rank.cli.runs import RunFormatError, evaluate_run, parse_measure, read_qrels, read_run, read_topics, \
    write_run
from pyterrier_e2rank.data import DocumentText, corpus_iter, dataset
from pyterrier_e2rank.index.artifact import E2RankIndex
from pyterrier_e2rank.index.indexer import IndexWriter
from pyterrier_e2rank.io import FileFormatError, atomic_file, numbered_lines
from pyterrier_e2rank.pyserini import read_jsonl_collection
from pyterrier_e2rank.training.data import from_rankllm, read_pairs

BOM = "\ufeff"

# ---- class 4: one line reader for every text file -------------------------------------------------------

#: How users' tools write a text file: Windows editors and PowerShell (a BOM, CRLF), classic Mac (CR).
WRITERS = {
    "bom": lambda text: (BOM + text).encode(),
    "crlf": lambda text: text.replace("\n", "\r\n").encode(),
    "cr": lambda text: text.replace("\n", "\r").encode(),
    "bom+crlf": lambda text: (BOM + text.replace("\n", "\r\n")).encode(),
    "bom+crlf+gz": lambda text: gzip.compress((BOM + text.replace("\n", "\r\n")).encode()),
}
DOCS_JSONL = "".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"text {i}"}) + "\n" for i in range(3))


def frame_rows(frame: pd.DataFrame) -> list:
    return frame.values.tolist()


def in_dataset(what: str):
    """A reader of topics or qrels through ``dataset(corpus, topics=/qrels=)``: ir_datasets' own readers."""
    def read(path):
        (path.parent / "docs.jsonl").write_text(DOCS_JSONL)
        ds = dataset(path.parent / "docs.jsonl", **{what: path})
        frame = ds.get_topics() if what == "topics" else ds.get_qrels()[["qid", "docno", "label"]]
        return frame_rows(frame)
    return read


def corpus(path):
    """Documents through the dataset's ir_datasets reader and its document store (``DocumentText``)."""
    ds = dataset(path)
    records = [(r["docno"], r["text"]) for r in corpus_iter(ds)]
    return records, DocumentText(ds)(pd.DataFrame({"docno": ["d2"]}))["text"].tolist()


#: name -> (file name, content as written with ``\n``, reader, what it reads).
FILE_KINDS = {
    "run": ("x.run", "1 Q0 d0 1 3.5 bm25\n1 Q0 d1 2 2.5 bm25\n2 Q0 d2 1 1.5 bm25\n",
            lambda p: frame_rows(read_run(p)), [["1", "d0", 3.5, 0], ["1", "d1", 2.5, 1], ["2", "d2", 1.5, 0]]),
    "topics tsv": ("t.tsv", "q1\tgene therapy\nq2\tvirus\n", lambda p: frame_rows(read_topics(str(p))),
                   [["q1", "gene therapy"], ["q2", "virus"]]),
    "topics tsv, dataset": ("t.tsv", "q1\tgene therapy\nq2\tvirus\n", in_dataset("topics"),
                            [["q1", "gene therapy"], ["q2", "virus"]]),
    "topics jsonl": ("t.jsonl", '{"_id": "q1", "text": "gene therapy"}\n{"_id": "q2", "text": "virus"}\n',
                     lambda p: frame_rows(read_topics(str(p))), [["q1", "gene therapy"], ["q2", "virus"]]),
    "topics jsonl, dataset": ("t.jsonl", '{"_id": "q1", "text": "gene therapy"}\n{"_id": "q2", "text": "virus"}\n',
                              in_dataset("topics"), [["q1", "gene therapy"], ["q2", "virus"]]),
    "qrels trec": ("q.txt", "q1 0 d0 1\nq2 0 d2 2\n", lambda p: frame_rows(read_qrels(str(p))),
                   [["q1", "d0", 1], ["q2", "d2", 2]]),
    "qrels trec, dataset": ("q.txt", "q1 0 d0 1\nq2 0 d2 2\n", in_dataset("qrels"), [["q1", "d0", 1], ["q2", "d2", 2]]),
    "qrels beir": ("q.tsv", "query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td2\t2\n",
                   lambda p: frame_rows(read_qrels(str(p))), [["q1", "d0", 1], ["q2", "d2", 2]]),
    "corpus jsonl": ("corpus.jsonl", DOCS_JSONL, corpus,
                     ([("d0", "t0 text 0"), ("d1", "t1 text 1"), ("d2", "t2 text 2")], ["t2 text 2"])),
    "corpus tsv with header": ("docs.tsv", "docno\ttext\nd0\ttext 0\nd1\ttext 1\nd2\ttext 2\n", corpus,
                               ([("d0", "text 0"), ("d1", "text 1"), ("d2", "text 2")], ["text 2"])),
    "pyserini collection": ("c.jsonl", '{"id": "d0", "contents": "text 0"}\n{"id": "d1", "contents": "text 1"}\n',
                            lambda p: list(read_jsonl_collection(p)),
                            [{"docno": "d0", "text": "text 0"}, {"docno": "d1", "text": "text 1"}]),
    "training pairs": ("pairs.jsonl", '{"query": "q", "pos": ["p"], "neg": ["n"]}\n',
                       lambda p: [(e.query, e.pos, e.neg) for e in read_pairs(p)], [("q", ["p"], ["n"])]),
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("kind", list(FILE_KINDS))
def test_every_file_kind_reads_the_same_whatever_tool_wrote_it(tmp_path, kind, writer):
    """A BOM made a qrels judgment's qid '\\ufeffq1' (dropped silently), a BEIR header or a TSV corpus header
    unrecognised (read as a document), a JSONL line unreadable; CRLF kept '\\r' in every TSV query."""
    name, text, reader, expected = FILE_KINDS[kind]
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / name).write_text(text)
    assert reader(tmp_path / "plain" / name) == expected
    name = f"{name}.gz" if writer.endswith("gz") else name
    (tmp_path / writer).mkdir()
    (tmp_path / writer / name).write_bytes(WRITERS[writer](text))
    assert reader(tmp_path / writer / name) == expected


def test_a_qrels_file_with_a_bom_scores_as_without(tmp_path, capsys):
    """The issue's case: the BOM dropped the first judgment (nDCG@10 0.5 here instead of 1.0)."""
    (tmp_path / "x.run").write_text("q1 Q0 d0 1 2.0 t\nq1 Q0 d1 2 1.0 t\nq2 Q0 d2 1 2.0 t\nq2 Q0 d3 2 1.0 t\n")
    (tmp_path / "q.txt").write_bytes((BOM + "q1 0 d0 1\nq2 0 d2 1\n").encode())
    assert main(["eval-run", "--run", str(tmp_path / "x.run"), "--qrels", str(tmp_path / "q.txt"),
                 "--metrics", "nDCG@10"]) == 0
    assert capsys.readouterr().out == "nDCG@10\t1.0000\n"


def test_a_bom_where_files_were_joined_is_dropped_and_numbers_count_cr_lines(tmp_path):
    (tmp_path / "q.txt").write_bytes((BOM + "q1 0 d0 1\n" + BOM + "q2 0 d2 1\n").encode())  # cat a.txt b.txt
    assert frame_rows(read_qrels(str(tmp_path / "q.txt"))) == [["q1", "d0", 1], ["q2", "d2", 1]]
    (tmp_path / "x.run").write_bytes(b"q1 Q0 d0 1 3.0 t\r\rq1 Q0 d1 two 2.0 t\r")
    assert list(numbered_lines(tmp_path / "x.run")) == [(1, "q1 Q0 d0 1 3.0 t"), (3, "q1 Q0 d1 two 2.0 t")]
    with pytest.raises(RunFormatError, match=r"x.run:3: rank must be an integer"):
        read_run(tmp_path / "x.run")


def test_a_tab_inside_a_topics_query_is_refused_by_both_readers_alike(tmp_path):
    """It cut the query at the tab ('gene'); the dataset reader refused the same line: now both refuse it."""
    (tmp_path / "docs.jsonl").write_text(DOCS_JSONL)
    (tmp_path / "t.tsv").write_text("q1\tgene\ttherapy\n")
    with pytest.raises(RunFormatError) as by_runs:
        read_topics(str(tmp_path / "t.tsv"))
    with pytest.raises(FileFormatError) as by_dataset:
        dataset(tmp_path / "docs.jsonl", topics=tmp_path / "t.tsv").get_topics()
    assert str(by_runs.value) == str(by_dataset.value)
    assert str(by_runs.value).startswith(f"{tmp_path / 't.tsv'}:1: expected 2 tab-separated fields 'qid<TAB>query', "
                                         f"got 3")


@pytest.mark.parametrize("name, text, read, message", [
    ("x.run", "q1 Q0 d0 1 3.0 t\nq1 Q0 d1 2 2.0 t extra\n", read_run, r"x.run:2: expected 6 fields 'qid Q0 docid"),
    ("q.txt", "q1 0 d0 1\nq1 0 d1 1 extra\n", lambda p: read_qrels(str(p)), r"q.txt:2: expected 4 fields"),
    ("q.tsv", "query-id\tcorpus-id\tscore\nq1\td0\t1\t0\n", lambda p: read_qrels(str(p)),
     r"q.tsv:2: expected 3 fields"),
    ("docs.tsv", "d0\ttext 0\nd1\ttext\t1\n", lambda p: list(corpus_iter(dataset(p))),
     r"docs.tsv:2: expected 2 tab-separated fields 'docno<TAB>text', got 3"),
])
def test_a_line_with_an_extra_field_is_refused_naming_file_and_line(tmp_path, name, text, read, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(FileFormatError, match=message):
        read(tmp_path / name)


@pytest.mark.parametrize("damage", ["plain text", "cut short"])
@pytest.mark.parametrize("kind", list(FILE_KINDS))
def test_a_gz_name_over_what_is_not_gzip_is_refused_naming_the_file(tmp_path, kind, damage):
    """``docs.jsonl.gz`` holding plain text ended in gzip's bare "Not a gzipped file (b'{"')"."""
    name, text, reader, _ = FILE_KINDS[kind]
    data = text.encode() if damage == "plain text" else gzip.compress(text.encode())[:-12]
    (tmp_path / f"{name}.gz").write_bytes(data)
    with pytest.raises(FileFormatError, match=rf"{name}.gz: its name ends in .gz but it is not gzip data, or is "
                                              rf"cut short"):
        reader(tmp_path / f"{name}.gz")


@pytest.mark.parametrize("line, message", [
    ('[{"query": "q", "pos": ["p"]}]', "expected a JSON object, got a list"),
    ('"query"', "expected a JSON object, got a str"),
])
def test_a_training_line_that_is_not_an_object_is_named(tmp_path, line, message):
    (tmp_path / "pairs.jsonl").write_text('{"query": "q", "pos": ["p"]}\n' + line + "\n")
    with pytest.raises(FileFormatError, match=rf"pairs.jsonl:2: {message}"):
        read_pairs(tmp_path / "pairs.jsonl")


@pytest.mark.parametrize("messages", [[{"role": "user", "content": "x"}], [], [{"role": "assistant", "content": 3}]])
def test_a_rankllm_record_without_its_turns_is_named(tmp_path, messages):
    """A record with no assistant turn ended in a bare StopIteration."""
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": messages}) + "\n")
    with pytest.raises(FileFormatError, match=r"chat.jsonl:1: 'messages' needs a user turn and an assistant turn"):
        from_rankllm(tmp_path / "chat.jsonl")


# ---- class 5: files we write look like the user's own ---------------------------------------------------

DIM = 4
ENCODER = {"model": "synthetic", "dim": DIM}


def build_index(path, docnos, *, overwrite=False):
    with IndexWriter(path, DIM, ENCODER, overwrite=overwrite) as writer:
        writer.add(docnos, np.eye(len(docnos), DIM, dtype=np.float32))
        writer.finish()


def run_frame():
    return pd.DataFrame({"qid": ["q1", "q1"], "docno": ["d0", "d1"], "score": [2.0, 1.0], "rank": [0, 1]})


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Sets the process umask for one test, then restores it."""
    before = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002], ids=["umask 022", "umask 027", "umask 002"])
def test_new_run_files_and_indexes_take_the_umask(tmp_path, umask, mask):
    """They came out 0600/0700 (mkstemp/mkdtemp's private modes) whatever the umask."""
    umask(mask)
    write_run(run_frame(), tmp_path / "x.run")
    with atomic_file(tmp_path / "y.bin", mode="wb") as out:
        out.write(b"\0")
    build_index(tmp_path / "index", ["a", "b"])
    assert (mode(tmp_path / "x.run"), mode(tmp_path / "y.bin")) == (0o666 & ~mask, 0o666 & ~mask)
    assert mode(tmp_path / "index") == 0o777 & ~mask
    assert mode(tmp_path / "index" / "vecs.f4") == 0o666 & ~mask


def test_an_overwrite_keeps_the_mode_of_what_it_replaces(tmp_path, umask):
    write_run(run_frame(), tmp_path / "x.run")
    os.chmod(tmp_path / "x.run", 0o640)
    build_index(tmp_path / "index", ["a", "b"])
    os.chmod(tmp_path / "index", 0o750)
    write_run(run_frame().assign(score=[5.0, 4.0]), tmp_path / "x.run")
    build_index(tmp_path / "index", ["c", "d"], overwrite=True)
    assert read_run(tmp_path / "x.run")["score"].tolist() == [5.0, 4.0]
    assert E2RankIndex(tmp_path / "index").vectors(["c"]).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert (mode(tmp_path / "x.run"), mode(tmp_path / "index")) == (0o640, 0o750)


def test_a_run_file_reached_through_a_symlink_is_replaced_where_it_points(tmp_path):
    """The link was replaced by a plain file and its target left stale."""
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    (tmp_path / "real" / "x.run").write_text("old\n")
    (tmp_path / "links" / "x.run").symlink_to("../real/x.run")
    (tmp_path / "links" / "new.run").symlink_to("../real/new.run")  # dangling: the file is created
    write_run(run_frame(), tmp_path / "links" / "x.run")
    write_run(run_frame(), tmp_path / "links" / "new.run")
    for name in ("x.run", "new.run"):
        assert os.readlink(tmp_path / "links" / name) == f"../real/{name}"
        assert read_run(tmp_path / "real" / name)["docno"].tolist() == ["d0", "d1"]
    assert sorted(os.listdir(tmp_path / "links")) == ["new.run", "x.run"]
    assert sorted(os.listdir(tmp_path / "real")) == ["new.run", "x.run"]


def test_an_index_reached_through_a_symlink_is_replaced_where_it_points(tmp_path):
    """The link was replaced by a new local directory, the linked index orphaned, a temp link left behind."""
    (tmp_path / "disk").mkdir()
    build_index(tmp_path / "disk" / "index", ["a", "b"])
    (tmp_path / "index").symlink_to(tmp_path / "disk" / "index")
    build_index(tmp_path / "index", ["c", "d"], overwrite=True)
    assert (tmp_path / "index").is_symlink() and os.readlink(tmp_path / "index") == str(tmp_path / "disk" / "index")
    assert E2RankIndex(tmp_path / "disk" / "index").vectors(["d"]).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    with pytest.raises(KeyError):
        E2RankIndex(tmp_path / "disk" / "index").vectors(["a"])
    assert sorted(os.listdir(tmp_path)) == ["disk", "index"]
    assert os.listdir(tmp_path / "disk") == ["index"]


def test_run_scores_are_written_exactly_so_evaluation_keeps_our_order(tmp_path):
    """Six decimals tied 0.5000004 and 0.5000001; trec_eval and ir-measures break ties by docno, so the
    file's P@1 was 0.0 where the ranking's is 1.0."""
    run = pd.DataFrame({"qid": ["q1", "q1", "q1"], "docno": ["a", "b", "c"],
                        "score": [0.5000004, 0.5000001, float(np.float32(0.1))], "rank": [0, 1, 2]})
    qrels = pd.DataFrame({"query_id": ["q1"], "doc_id": ["a"], "relevance": [1]})
    write_run(run, tmp_path / "x.run")
    back = read_run(tmp_path / "x.run")
    assert back["score"].tolist() == run["score"].tolist()
    expected = {"P@1": 1.0, "RR": 1.0}
    assert evaluate_run(back, qrels, ["P@1", "RR"]) == evaluate_run(run, qrels, ["P@1", "RR"]) == expected


# ---- issue 17: measures named, printed in the order given -------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("nDCG@ten", "not an ir-measures name"), ("foo", "ir-measures has no measure called 'foo'"),
    ("R@0", "its cutoff must be an integer >= 1, got 0"),  # pytrec_eval aborts the process on it
    ("P(foo=1)@10", r"unsupported params found: \['foo'\]"),
])
def test_an_unknown_measure_is_named_in_one_line(tmp_path, capsys, name, reason):
    with pytest.raises(ValueError, match=rf"unknown measure '{name.replace('(', '.').replace(')', '.')}': {reason}"):
        parse_measure(name)
    write_run(run_frame(), tmp_path / "x.run")
    (tmp_path / "q.txt").write_text("q1 0 d0 1\n")
    argv = ["eval-run", "--run", str(tmp_path / "x.run"), "--qrels", str(tmp_path / "q.txt"), "--metrics", name]
    assert _reporting_errors(lambda: main(argv)) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"e2rank: error: unknown measure {name!r}: ")


def test_eval_run_prints_metrics_in_the_order_given(tmp_path, capsys):
    write_run(run_frame(), tmp_path / "x.run")
    (tmp_path / "q.txt").write_text("q1 0 d0 1\nq1 0 d1 0\n")
    given = ["R@100", "nDCG@10", "P@1", "AP", "RR"]
    assert main(["eval-run", "--run", str(tmp_path / "x.run"), "--qrels", str(tmp_path / "q.txt"),
                 "--metrics", *given]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == given
