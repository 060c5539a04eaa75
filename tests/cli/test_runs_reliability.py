"""Run files, topics, qrels and FAISS directories: bad input named by file:line, docid or argument;
outputs written whole or not at all, never over an input or an index without ``overwrite``."""
import argparse
import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyterrier_e2rank.cli.main import main
from pyterrier_e2rank import IndexModelMismatch
from pyterrier_e2rank.io import CorruptArtifact, FileFormatError
from pyterrier_e2rank.pyserini import (FaissVectors, HitReranker, read_jsonl_collection, text_lookup,
                                       write_faiss_index)
from pyterrier_e2rank.cli.runs import RunFormatError, read_qrels, read_run, read_topics, rerank_run, write_run

DOCS = {"d0": "gene therapy in mice", "d1": "a virus and the immune response", "d2": "vitamin b12 levels",
        "d3": "birth weight and mortality", "d4": "biomaterials with inductive properties"}
Hit = namedtuple("Hit", "docid score")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": d, "contents": t}) + "\n" for d, t in DOCS.items()))
    (tmp_path / "topics.tsv").write_text("1\tgene therapy\n2\tvirus immune response\n")
    (tmp_path / "bm25.run").write_text("".join(f"{q} Q0 {d} {r + 1} {10 - r}.0 bm25\n"
                                               for q in ("1", "2") for r, d in enumerate(DOCS)))
    return tmp_path


def rerank_args(path, **override):
    args = {"--run": path / "bm25.run", "--topics": path / "topics.tsv", "--docs": path / "docs.jsonl",
            "--model": path / "no-model-needed", "--output": path / "e2rank.run", **override}
    return ["rerank-run"] + [str(x) for item in args.items() for x in item]


# ---- the rerank-run command -------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["--run", "--topics", "--docs"])
def test_rerank_run_refuses_an_output_that_is_an_input_before_reading(files, source):
    args = rerank_args(files)
    target = args[args.index(source) + 1]
    before = open(target, "rb").read()
    with pytest.raises(ValueError, match=f"input {source[2:]}"):  # raised before the (absent) model is loaded
        main(rerank_args(files, **{"--output": target}))
    assert open(target, "rb").read() == before


@pytest.mark.parametrize("option", ["--top-k", "--num-input-docs", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_rerank_run_counts_must_be_positive_integers(files, option, value, capsys):
    with pytest.raises(SystemExit):
        main(rerank_args(files, **{option: value}))
    assert f"argument {option}: must be an integer >= 1, got '{value}'" in capsys.readouterr().err


def test_rerank_run_needs_a_model(files, capsys):
    """No default model: a run reranked by the offline encoder instead of E2Rank would pass unseen."""
    args = rerank_args(files)
    del args[args.index("--model"):args.index("--model") + 2]
    with pytest.raises(SystemExit):
        main(args)
    assert "the following arguments are required: --model" in capsys.readouterr().err


# ---- the e2rank command line -------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--top-k", "--num-input-docs", "--num-queries", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-1", "2.5"])
def test_experiment_counts_are_refused_naming_the_option(option, value, capsys):
    with pytest.raises(SystemExit):
        main(["experiment", option, value])
    assert f"argument {option}: must be an integer >= 1, got '{value}'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_installed_command_prints_a_user_error_as_one_line_and_exits_2(files):
    """The file named, no Python traceback; E2RANK_TRACEBACK=1 brings it back."""
    import os
    import subprocess
    import sys
    same_as_input = rerank_args(files, **{"--output": files / "bm25.run"})
    command = [sys.executable, "-m", "pyterrier_e2rank.cli.main", *same_as_input]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "E2RANK_TRACEBACK": "0"})
    assert done.returncode == 2
    assert done.stderr.startswith("e2rank: error: ") and "input run" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "E2RANK_TRACEBACK": "1"})
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError" in done.stderr


def test_e2rank_help_lists_every_subcommand_without_loading_torch():
    """``e2rank --help`` imports no command module: it lists each subcommand with the line its module registers."""
    import subprocess
    import sys
    from pyterrier_e2rank.cli.main import COMMANDS, build_parser
    code = ("import sys\nfrom pyterrier_e2rank.cli.main import main\ntry:\n    main(['--help'])\n"
            "except SystemExit as exit:\n    print('torch:', 'torch' in sys.modules, 'exit status', exit.code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shown = " ".join(done.stdout.split())
    assert shown.endswith("torch: False exit status 0")
    listed = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    assert len(listed) == len(COMMANDS) and all(f"{line.dest} {' '.join(line.help.split())}" in shown for line in listed)


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from pyterrier_e2rank.cli import main as cli
    monkeypatch.setattr(cli, "main", lambda: None + 1)
    with pytest.raises(TypeError):
        cli.console()


def test_every_number_of_every_subcommand_is_range_checked():
    """A plain ``type=int`` or ``type=float`` would take 0, negatives or nan; only ``choices`` bound one."""
    from pyterrier_e2rank.cli import arguments
    from pyterrier_e2rank.cli.main import build_parser

    def actions(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command, sub in action.choices.items():
                    yield from actions(sub, f"{name} {command}")
            else:
                yield name, action
    checked = vars(arguments).values()
    loose = [(name, action.option_strings) for name, action in actions(build_parser(), "e2rank")
             if action.type is not None and action.type not in checked
             and not isinstance(action.type, arguments.Checked) and action.choices is None]
    assert loose == []


def test_a_run_docid_missing_from_the_docs_is_named_with_the_source(files, tiny_qwen):
    """Looked up in the reranking pipeline (by the process of its query, under torchrun)."""
    run = read_run(files / "bm25.run")
    run.loc[3, "docno"] = "d99"
    with pytest.raises(KeyError, match=r"'d99' is not in the collection .*docs.jsonl"):
        rerank_run(tiny_qwen, run, read_topics(str(files / "topics.tsv")), str(files / "docs.jsonl"))


def test_int_topic_qids_meet_string_run_qids(files, tiny_qwen):
    topics = pd.DataFrame({"qid": [1, 2], "query": ["gene therapy", "virus immune response"]})
    run = read_run(files / "bm25.run")
    out = rerank_run(tiny_qwen, run, topics, str(files / "docs.jsonl"), num_input_docs=3)
    assert out.groupby("qid").size().to_dict() == {"1": 5, "2": 5}
    with pytest.raises(ValueError, match=r"more than once: \['1'\]"):
        rerank_run(tiny_qwen, run, pd.concat([topics, topics.head(1)]), str(files / "docs.jsonl"))


# ---- reading run, topics and qrels files -----------------------------------------------------------

BAD_BYTES = {"latin-1": "q1 Q0 caf\xe9 1 2.0 t\n".encode("latin-1"), "binary": b"\x00\x01\x02 PK\x03\x04\n"}


@pytest.mark.parametrize("kind", list(BAD_BYTES))
@pytest.mark.parametrize("name, reader, good", [
    ("x.run", read_run, b"q1 Q0 d0 1 3.0 t\n"),
    ("x.tsv", lambda p: read_topics(str(p)), b"q1\tgene therapy\n"),
    ("x.jsonl", lambda p: read_topics(str(p)), b'{"_id": "q1", "text": "gene therapy"}\n'),
    ("x.qrels", lambda p: read_qrels(str(p)), b"q1 0 d0 1\n"),
])
def test_non_utf8_lines_are_reported_with_file_and_line(tmp_path, kind, name, reader, good):
    (tmp_path / name).write_bytes(good + b"\n" + BAD_BYTES[kind])
    with pytest.raises(RunFormatError, match=rf"{name}:3: ") as error:
        reader(tmp_path / name)
    assert isinstance(error.value, FileFormatError)


@pytest.mark.parametrize("score", ["nan", "inf", "-Infinity"])
def test_non_finite_run_scores_are_reported_with_file_and_line(tmp_path, score):
    (tmp_path / "x.run").write_text(f"q1 Q0 d0 1 3.0 t\nq1 Q0 d1 2 {score} t\n")
    with pytest.raises(RunFormatError, match=r"x.run:2: score .* of docid 'd1' is not a finite number"):
        read_run(tmp_path / "x.run")


def test_topic_qids_are_checked_and_not_repeated(tmp_path):
    (tmp_path / "t.tsv").write_text("q1\tgene\nq 2\tvirus\n")
    with pytest.raises(RunFormatError, match=r"t.tsv:2"):
        read_topics(str(tmp_path / "t.tsv"))
    (tmp_path / "t.jsonl").write_text('{"_id": 7, "text": "gene"}\n{"_id": "7", "text": "virus"}\n')
    with pytest.raises(RunFormatError, match=r"t.jsonl:2: qid '7' repeated \(first on line 1\)"):
        read_topics(str(tmp_path / "t.jsonl"))


# ---- writing run files -------------------------------------------------------------------------------

def run_frame(**overrides):
    return pd.DataFrame({"qid": ["q1", "q1"], "docno": ["d0", "d1"], "score": [2.0, 1.0], "rank": [0, 1]}
                        ).assign(**overrides)


@pytest.mark.parametrize("column, bad, named", [
    ("docno", "d 1", "docno 'd 1'"), ("docno", "d1\nq9 Q0 d9", "docno 'd1\\\\nq9 Q0 d9'"),
    ("docno", None, "docno at row 1"), ("qid", "q 1", "qid 'q 1'"),
    ("score", float("nan"), "score of docno 'd1' for qid 'q1' is nan"),
    ("score", float("inf"), "score of docno 'd1' for qid 'q1' is inf"),
])
def test_write_run_refuses_what_a_run_file_cannot_keep(tmp_path, column, bad, named):
    (tmp_path / "old.run").write_text("old contents\n")
    values = run_frame()[column].tolist()
    values[1] = bad
    with pytest.raises(ValueError, match=named):
        write_run(run_frame(**{column: values}), tmp_path / "old.run")
    assert (tmp_path / "old.run").read_text() == "old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.run"]  # no temporary file left behind


def test_write_run_with_int_qids_round_trips(tmp_path):
    write_run(run_frame(qid=[3, 3], docno=[10, 11]), tmp_path / "x.run")
    back = read_run(tmp_path / "x.run")
    assert back[["qid", "docno"]].values.tolist() == [["3", "10"], ["3", "11"]]


# ---- FAISS directories -------------------------------------------------------------------------------

def faiss_docids(directory):
    return (directory / "docid").read_text().split()


def test_an_existing_faiss_index_is_replaced_only_with_overwrite(tiny_qwen, files):
    out = files / "faiss"
    write_faiss_index(tiny_qwen, files / "docs.jsonl", out)
    fewer = [{"docno": "n1", "text": "new text"}, {"docno": "n2", "text": "other new text"}]
    with pytest.raises(FileExistsError, match="already exists"):
        write_faiss_index(tiny_qwen, fewer, out)
    assert faiss_docids(out) == list(DOCS)
    write_faiss_index(tiny_qwen, fewer, out, overwrite=True)
    assert faiss_docids(out) == ["n1", "n2"] and FaissVectors(out, tiny_qwen).index.ntotal == 2


def test_a_foreign_directory_is_never_replaced(tiny_qwen, files):
    out = files / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        write_faiss_index(tiny_qwen, files / "docs.jsonl", out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_the_collection_is_not_an_output(tiny_qwen, files):
    with pytest.raises(ValueError, match="input collection"):
        write_faiss_index(tiny_qwen, files, files, overwrite=True)
    with pytest.raises(ValueError, match="input collection"):
        write_faiss_index(tiny_qwen, files / "docs.jsonl", files / "faiss", pyterrier_index=files / "docs.jsonl")


@pytest.mark.parametrize("bad", ["d1\nd2", "d 1", "", None])
def test_a_docid_a_docid_file_cannot_keep_writes_nothing(tiny_qwen, tmp_path, bad):
    docs = [{"docno": "d0", "text": "gene"}, {"docno": bad, "text": "virus"}]
    with pytest.raises(ValueError, match="document 1 of the corpus"):
        write_faiss_index(tiny_qwen, docs, tmp_path / "faiss", pyterrier_index=tmp_path / "pt")
    assert list(tmp_path.iterdir()) == []  # no index, no staging directory, no lock


def test_a_repeated_docid_writes_nothing(tiny_qwen, tmp_path):
    docs = [{"docno": "d0", "text": "gene"}, {"docno": "d0", "text": "virus"}]
    with pytest.raises(ValueError, match="docid 'd0' repeated: documents 0 and 1"):
        write_faiss_index(tiny_qwen, docs, tmp_path / "faiss")
    assert not (tmp_path / "faiss").exists()


def test_faiss_and_pyterrier_indexes_are_built_together(tiny_qwen, files):
    write_faiss_index(tiny_qwen, files / "docs.jsonl", files / "faiss", pyterrier_index=files / "pt")
    with pytest.raises(FileExistsError):  # the E2Rank index exists: neither is replaced
        write_faiss_index(tiny_qwen, NEW_DOCS, files / "faiss2", pyterrier_index=files / "pt")
    assert not (files / "faiss2").exists()
    write_faiss_index(tiny_qwen, NEW_DOCS, files / "faiss", pyterrier_index=files / "pt", overwrite=True)
    from pyterrier_e2rank import E2RankIndex
    assert list(E2RankIndex(files / "pt").docnos()) == ["n1", "n2"] and faiss_docids(files / "faiss") == ["n1", "n2"]


NEW_DOCS = [{"docno": "n1", "text": "x"}, {"docno": "n2", "text": "y"}]


@pytest.fixture
def faiss_dir(tiny_qwen, files):
    return Path(write_faiss_index(tiny_qwen, files / "docs.jsonl", files / "faiss"))


def test_a_faiss_index_without_a_fingerprint_is_refused_with_a_model(tiny_qwen, faiss_dir):
    (faiss_dir / "e2rank_meta.json").unlink()
    with pytest.raises(IndexModelMismatch, match="carries no E2Rank model fingerprint"):
        FaissVectors(faiss_dir, tiny_qwen)
    with pytest.raises(IndexModelMismatch, match="no E2Rank model fingerprint"):
        HitReranker(tiny_qwen, DOCS, vectors=faiss_dir)
    assert FaissVectors(faiss_dir).index.ntotal == len(DOCS)  # without a model: plain vectors by docid


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "docid").write_text("d0\nd1\nd2\n"), "holds 5 vectors but its docid file 3 docids"),
    (lambda d: (d / "docid").write_text("d0\nd1\nd1\nd3\nd4\n"), "repeats 1 docid"),
    (lambda d: (d / "docid").write_bytes(b"d0\nd1\n\xff\xfe\nd3\nd4\n"), r"docid:3: not UTF-8"),
    (lambda d: (d / "e2rank_meta.json").write_text('{"encoder": '), "e2rank_meta.json is not an E2Rank"),
    (lambda d: (d / "e2rank_meta.json").write_text('{"other": 1}'), "e2rank_meta.json is not an E2Rank"),
])
def test_faiss_files_that_disagree_are_a_corrupt_artifact(tiny_qwen, faiss_dir, damage, message):
    damage(faiss_dir)
    with pytest.raises(CorruptArtifact, match=message):
        FaissVectors(faiss_dir, tiny_qwen)


def test_faiss_vectors_are_looked_up_by_docid(tiny_qwen, faiss_dir):
    vectors = FaissVectors(faiss_dir, tiny_qwen).vectors(["d3", "d0"])
    np.testing.assert_allclose(vectors, tiny_qwen.encode_docs([DOCS["d3"], DOCS["d0"]]), atol=1e-5)


# ---- document text -----------------------------------------------------------------------------------

def test_missing_text_names_the_docid_and_the_source(files, tiny_qwen):
    def from_database(docid):
        return DOCS[docid]

    for source, named in [(DOCS, r"the text dict \(5 documents\)"), (files, f"the collection {files}"),
                          (files / "docs.jsonl", "the collection .*docs.jsonl"),
                          (from_database, "the text source .*from_database")]:
        with pytest.raises(KeyError, match=f"docid 'd99' is not in {named}"):
            text_lookup(source)("d99")
        assert text_lookup(source)("d2") == DOCS["d2"]
    with pytest.raises(KeyError, match=r"docid 'd99' is not in the text dict"):
        HitReranker(tiny_qwen, DOCS).rerank("gene therapy", [Hit("d0", 2.0), Hit("d99", 1.0)])


@pytest.mark.parametrize("line, message", [
    (b'{"id": "caf\xe9", "contents": "x"}', "c.jsonl:2: not UTF-8"),
    (b'{"id": "d 1", "contents": "x"}', r"docno 'd 1' at .*c.jsonl:2 is empty or holds whitespace"),
    (b'{"id": 1.5, "contents": "x"}', r"docno at .*c.jsonl:2 is a float"),
    (b'{"contents": "no id"}', r"c.jsonl:2: a document needs one of the keys \['_id', 'id', 'docno'"),
    (b'["a list"]', "c.jsonl:2: expected a JSON object, got a list"),
])
def test_collection_lines_are_reported_with_file_and_line(tmp_path, line, message):
    (tmp_path / "c.jsonl").write_bytes(b'{"id": 7, "contents": "int ids become strings"}\n' + line + b"\n")
    with pytest.raises(ValueError, match=message):
        list(read_jsonl_collection(tmp_path / "c.jsonl"))
    assert next(read_jsonl_collection(tmp_path / "c.jsonl"))["docno"] == "7"
