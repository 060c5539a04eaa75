"""Training reliability: records are taken as typed (no string split into characters, no float truncated),
bad bytes are named by file:line, outputs never overwrite inputs, bad settings are refused before any
work, and a checkpoint is replaced only on request, only by a complete one, never over foreign files."""
import hashlib
import json
import shutil

import pytest

import pyterrier_e2rank.training.trainer as trainer
from pyterrier_e2rank.cli.main import main as e2rank_main
from pyterrier_e2rank.io import ArtifactLocked, FileFormatError
from pyterrier_e2rank.cli.train_command import load_examples
from pyterrier_e2rank.cli.main import train_main
from pyterrier_e2rank.training.config import TrainConfig
from pyterrier_e2rank.training.data import DataError, ListwiseExample, from_pairs, read_listwise, read_pairs, write_jsonl
from pyterrier_e2rank.training.trainer import train

from fixtures.training_records import RECORDS as ALL_RECORDS
from fixtures.writers import held_by_another_process

RECORDS = ALL_RECORDS[:2]


def _write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _snapshot(directory) -> dict:
    """Every file under ``directory`` (or the file itself) by relative path, with its SHA-256."""
    files = [directory] if directory.is_file() else sorted(p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _train_args(model, data, output, *extra) -> list:
    return ["--stage", "2", "--model", str(model), "--data", str(data), "--output", str(output),
            "--max-steps", "1", "--batch-size", "1", "--doc-max-length", "16", "--prompt-doc-max-tokens", "8",
            "--lr", "1e-3", *extra]


@pytest.fixture
def data(tmp_path):
    return _write(tmp_path / "train.jsonl", RECORDS)


@pytest.fixture(scope="module")
def checkpoint(fine_tuned_qwen_dir):
    """A checkpoint ``e2rank train`` wrote, trained once for the whole run; tests copy it."""
    return fine_tuned_qwen_dir


# ---- records ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("document", "abc", "'document' must be a list of strings, got a str"),
    ("document", ["a", 3, "c"], "empty document text \\(or not a string\\) at positions \\[2\\]"),
    ("ranking", [1.0, 3.0, 2.0], "'ranking' must be a list of integers"),
    ("ranking", [1.7, 3.2, 2.9], "'ranking' must be a list of integers"),
    ("ranking", [True, 3, 2], "'ranking' must be a list of integers"),
    ("ranking", ["1", "3", "2"], "'ranking' must be a list of integers"),
    ("ranking", "132", "'ranking' must be a list of integers"),
])
def test_listwise_fields_are_not_coerced(tmp_path, field, value, message):
    path = _write(tmp_path / "data.jsonl", [RECORDS[0], {**RECORDS[1], field: value}])
    with pytest.raises(DataError, match=rf"data.jsonl:2: {message}"):
        read_listwise(path)


@pytest.mark.parametrize("record, message", [
    ({"query": "q", "pos": "a passage"}, "'pos' must be a list of strings, got a str"),
    ({"query": "q", "pos": ["p"], "neg": "a negative"}, "'neg' must be a list of strings, got a str"),
    ({"query": "q", "pos": []}, "needs at least one positive passage"),
])
def test_pair_fields_are_not_coerced(tmp_path, record, message):
    path = _write(tmp_path / "pairs.jsonl", [{"query": "q", "pos": ["p"]}, record])
    with pytest.raises(DataError, match=rf"pairs.jsonl:2: {message}"):
        read_pairs(path)


@pytest.mark.parametrize("second_line", [b"\x00\x01\x02binary\xff\n", "{\"query\": \"caf\xe9\"}\n".encode("latin-1")])
def test_binary_or_latin1_data_is_named_by_file_and_line(tmp_path, second_line):
    path = tmp_path / "data.jsonl"
    for first, reader in [(RECORDS[0], read_listwise), (RECORDS[0], load_examples), ({"query": "q", "pos": ["p"]},
                                                                                      from_pairs)]:
        path.write_bytes(json.dumps(first).encode() + b"\n" + second_line)
        with pytest.raises(DataError, match=r"data.jsonl:2: (not UTF-8|a NUL byte)"):
            reader(path)
    assert issubclass(DataError, FileFormatError)
    path.write_bytes(b"\xff\xfe{}\n")  # the CLI's sniffing of the first line goes through the same reader
    with pytest.raises(DataError, match=r"data.jsonl:1: not UTF-8"):
        load_examples(path)


def test_write_jsonl_keeps_the_old_file_when_building_fails(tmp_path):
    path = tmp_path / "out.jsonl"
    assert write_jsonl([ListwiseExample(**RECORDS[0])], path) == 1
    before = path.read_bytes()

    def failing():
        yield ListwiseExample(**RECORDS[1])
        raise RuntimeError("the first stage died")
    with pytest.raises(RuntimeError, match="first stage died"):
        write_jsonl(failing(), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# ---- arguments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--max-steps", "0"), ("--max-steps", "-1"), ("--epochs", "0"),
                                         ("--epochs", "nan"), ("--batch-size", "0"), ("--lr", "0"),
                                         ("--gradient-accumulation", "0"), ("--lora-rank", "0"),
                                         ("--num-input-docs", "0"), ("--doc-max-length", "-5"),
                                         ("--warmup-ratio", "1.5"), ("--ranknet-weight", "-1"),
                                         ("--temperature", "inf"), ("--seed", "-1"), ("--seed", str(2**32))])
@pytest.mark.parametrize("command", [e2rank_main, train_main], ids=["e2rank train", "e2rank-train"])
def test_bad_training_arguments_are_refused_naming_them(tmp_path, data, capsys, command, flag, value):
    argv = ["--model", "unused", "--data", data, "--output", str(tmp_path / "out"), flag, value]
    with pytest.raises(SystemExit):
        command(["train", *argv] if command is e2rank_main else argv)
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["--stage", "1", "--model", "m", "--data", "d", "--output", "o", "--lr", "1e-4",
                                   "--bf16", "--seed", "3"],
                                  ["build-data", "pairs", "--input", "p.jsonl", "--output", "o.jsonl", "--slate", "4"]])
def test_e2rank_train_is_the_e2rank_command(monkeypatch, argv):
    """``e2rank-train X`` runs ``e2rank train X`` (``e2rank build-data X`` for ``build-data X``) with the
    same parser: one set of arguments, two spellings."""
    import sys
    from importlib.metadata import entry_points

    import pyterrier_e2rank.cli.train_command as train_command
    seen = []
    for name in ("_train_command", "_build_data_command"):
        monkeypatch.setattr(train_command, name, lambda args: seen.append(vars(args)) or 0)
    assert e2rank_main(argv if argv[0] == "build-data" else ["train", *argv]) == 0
    assert train_main(argv) == 0
    monkeypatch.setattr(sys, "argv", ["e2rank-train", *argv])  # as the console script calls it
    assert train_main() == 0
    assert seen[0] == seen[1] == seen[2]
    assert seen[0]["command"] == ("build-data" if argv[0] == "build-data" else "train")
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["e2rank"] == "pyterrier_e2rank.cli.main:console"
    assert scripts["e2rank-train"] == "pyterrier_e2rank.cli.main:train_console"


@pytest.mark.parametrize("source", [["dataset", "--dataset", "irds:beir/scifact/train"], ["pairs", "--input", "x"]])
@pytest.mark.parametrize("slate", ["0", "-3"])
def test_slate_must_be_positive(tmp_path, capsys, source, slate):
    with pytest.raises(SystemExit):
        train_main(["build-data", *source, "--slate", slate, "--output", str(tmp_path / "out.jsonl")])
    assert "argument --slate: must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="slate must be an integer >= 1"):
        from_pairs(tmp_path / "unread.jsonl", slate=0)


@pytest.mark.parametrize("setting, value", [("max_steps", 0), ("max_steps", -1), ("max_steps", 1.5),
                                            ("epochs", 0), ("epochs", float("inf")), ("batch_size", 0),
                                            ("gradient_accumulation", 0), ("lora_rank", 0), ("num_input_docs", 0),
                                            ("doc_max_length", 0), ("prompt_max_tokens", -1), ("lr", 0),
                                            ("lr", -1e-5), ("log_every", 0), ("warmup_ratio", 1.5)])
def test_train_config_refuses_what_the_cli_refuses(setting, value):
    with pytest.raises(ValueError, match=rf"^{setting} must be"):
        TrainConfig(model="m", output="o", **{setting: value})


# ---- outputs that are inputs ---------------------------------------------------------------------

def test_output_equal_to_an_input_is_refused_before_anything_is_read(tmp_path, tiny_qwen_dir, data):
    model = shutil.copytree(tiny_qwen_dir, tmp_path / "model")
    before = {**_snapshot(model), **_snapshot(tmp_path / "train.jsonl")}
    for output in (model, data, tmp_path):  # the model, the data, a directory holding them
        with pytest.raises(ValueError, match="is the input (model|data)"):
            train_main(_train_args(model, data, output, "--overwrite"))
    with pytest.raises(ValueError, match="is the input model"):
        train(TrainConfig(model=str(model), output=str(model), overwrite=True), [ListwiseExample(**RECORDS[0])])
    pairs = _write(tmp_path / "pairs.jsonl", [{"query": "q", "pos": ["p"], "neg": ["n"]}])
    before.update(_snapshot(tmp_path / "pairs.jsonl"))
    for source, given in [("pairs", pairs), ("rankllm", data)]:
        with pytest.raises(ValueError, match="is the input input"):
            train_main(["build-data", source, "--input", given, "--output", given])
    with pytest.raises(ValueError, match="is the input bm25_index"):
        train_main(["build-data", "dataset", "--dataset", "irds:beir/scifact/train", "--bm25-index", str(model),
                    "--output", str(model)])
    assert {**_snapshot(model), **_snapshot(tmp_path / "train.jsonl"), **_snapshot(tmp_path / "pairs.jsonl")} == before


# ---- checkpoints --------------------------------------------------------------------------------

def test_checkpoint_lists_its_own_files(checkpoint):
    record = json.loads((checkpoint / "e2rank_training.json").read_text())
    assert set(record["files"]) == {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "e2rank_training.json"} <= set(record["files"])
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # no staging or lock left


def test_existing_checkpoint_is_kept_without_overwrite_and_replaced_with_it(tmp_path, tiny_qwen_dir, checkpoint,
                                                                            data, monkeypatch):
    output = shutil.copytree(checkpoint, tmp_path / "ckpt")
    before = _snapshot(output)
    with monkeypatch.context() as m:  # refused when train() starts: the model is never loaded
        m.setattr(trainer, "E2Rank", lambda *a, **k: pytest.fail("the model was loaded before the refusal"))
        with pytest.raises(FileExistsError, match=r"a checkpoint already exists .*\(--overwrite\)"):
            train_main(_train_args(tiny_qwen_dir, data, output))
        with pytest.raises(FileExistsError, match="a checkpoint already exists"):
            train(TrainConfig(model=str(tiny_qwen_dir), output=str(output)), [ListwiseExample(**RECORDS[0])])
        with held_by_another_process(output), pytest.raises(ArtifactLocked, match="another process is writing"):
            train_main(_train_args(tiny_qwen_dir, data, output, "--overwrite"))
    assert _snapshot(output) == before
    (output / "stale-shard.bin").write_bytes(b"x")  # an old checkpoint's file it lists as its own
    record = json.loads((output / "e2rank_training.json").read_text())
    (output / "e2rank_training.json").write_text(json.dumps({**record, "files": record["files"] + ["stale-shard.bin"]}))
    assert train_main(_train_args(tiny_qwen_dir, data, output, "--overwrite", "--seed", "1")) == 0
    assert _snapshot(output)["ckpt/model.safetensors"] != before["ckpt/model.safetensors"]
    assert not (output / "stale-shard.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "train.jsonl"]


def test_foreign_directory_is_refused_and_kept(tmp_path, tiny_qwen_dir, data):
    output = tmp_path / "results"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    (output / "e2rank_training.json").write_text("{}")  # no "files": nothing here is known to be a checkpoint
    for extra in ([], ["--overwrite"]):
        with pytest.raises(FileExistsError, match=r"not the checkpoint's own \(e2rank_training.json, notes.txt\)"):
            train_main(_train_args(tiny_qwen_dir, data, output, *extra))
    assert sorted(p.name for p in output.iterdir()) == ["e2rank_training.json", "notes.txt"]
    assert (output / "notes.txt").read_text() == "mine"


def test_a_run_that_fails_mid_way_leaves_the_previous_checkpoint(tmp_path, tiny_qwen_dir, checkpoint, data,
                                                                 monkeypatch):
    output = shutil.copytree(checkpoint, tmp_path / "ckpt")
    before = _snapshot(output)
    real, calls = trainer.listwise_loss, []

    def out_of_memory_at_step_two(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("CUDA out of memory")
        return real(*args, **kwargs)
    monkeypatch.setattr(trainer, "listwise_loss", out_of_memory_at_step_two)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_main(_train_args(tiny_qwen_dir, data, output, "--overwrite", "--max-steps", "2"))
    assert len(calls) == 2 and _snapshot(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "train.jsonl"]  # no staging directory left
