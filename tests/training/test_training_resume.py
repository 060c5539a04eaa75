"""Training at cluster scale, on CPU: a run SIGKILLed while saving its state resumes from the last complete
one and ends with the same weights and per-step log as an uninterrupted run (with dropout, three steps after
a mid-epoch resume point); a damaged newest state falls back to the one before it, and states are fsync'd
before they are renamed into place; evaluation every N steps logs the
PRF reranker's nDCG@10 and the eval loss (training record and TensorBoard); gradients are clipped; a
state is resumed only with the settings and data it was made with."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pyterrier_e2rank.cli.main import train_main
from pyterrier_e2rank.io import CorruptArtifact
from pyterrier_e2rank.training.data import ListwiseExample
from pyterrier_e2rank.training.config import TrainConfig
from pyterrier_e2rank.training.trainer import train

from fixtures.durability import recording_fsync_and_rename
from fixtures.training_records import RECORDS

# Three records to train on (one held out), batches of 1 accumulated twice: step 1 is batches 1-2 of epoch 0,
# step 2 its last batch alone, step 3 batches 1-2 of epoch 1, ..., step 6 the last batch of epoch 2; a state
# after each step, an evaluation too. The model has dropout, so a random state not restored shows in the loss.
SETTINGS = ["--stage", "2", "--max-steps", "6", "--batch-size", "1", "--gradient-accumulation", "2",
            "--doc-max-length", "16", "--prompt-doc-max-tokens", "8", "--lr", "1e-3", "--warmup-ratio", "0.34",
            "--eval-fraction", "0.25", "--eval-every", "1", "--save-every", "1"]

# Runs the CLI and SIGKILLs itself while the step-4 state is being written (accelerate's files are out,
# our record is not): the newest complete state must then be step 3, mid-epoch 1, and the one before it
# step 2 (KEEP_STATES).
KILLED_WHILE_SAVING = """
import os, signal, sys
import accelerate
from pyterrier_e2rank.cli.main import train_main as main
real = accelerate.Accelerator.save_state
def save_state(self, output_dir=None, **kwargs):
    real(self, output_dir, **kwargs)
    if os.path.isdir(os.path.join(self.project_dir, "checkpoints", "checkpoint_4")):
        os.kill(os.getpid(), signal.SIGKILL)
accelerate.Accelerator.save_state = save_state
main(sys.argv[1:])
"""


def _args(model, root, *extra, data="train.jsonl"):
    return ["--model", str(model), "--data", str(root / data), "--output", str(root / "out"), *SETTINGS, *extra]


def _write_data(root, records=RECORDS, name="train.jsonl"):
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def dropout_qwen_dir(tiny_qwen_dir, tmp_path_factory):
    """The tiny Qwen3 with attention dropout 0.1: training draws random numbers at every step."""
    path = shutil.copytree(tiny_qwen_dir, tmp_path_factory.mktemp("dropout") / "model")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.1}))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dropout_qwen_dir):
    """An uninterrupted run, logged to TensorBoard: its directory, and the gradient norms its optimizer saw."""
    root = tmp_path_factory.mktemp("reference")
    _write_data(root)
    norms = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", _recording_norms(norms))
        assert train_main(_args(dropout_qwen_dir, root, "--log-with", "tensorboard")) == 0
    return root, norms


def _recording_norms(norms):
    """``AdamW.step`` that first appends the total norm of the gradients it is given to ``norms``."""
    real = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return real(self, *args, **kwargs)
    return step


@pytest.fixture(scope="module")
def killed(tmp_path_factory, dropout_qwen_dir):
    """The same run, SIGKILLed while saving the step-4 state (tests copy it before resuming)."""
    root = tmp_path_factory.mktemp("killed")
    _write_data(root)
    # the same CPU thread count as this process, whose runs it is compared with bit for bit
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, *_args(dropout_qwen_dir, root)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == -9, done.stderr[-3000:]
    states = root / ".out.state" / "checkpoints"
    assert sorted(p.name for p in states.iterdir()) == ["checkpoint_2", "checkpoint_3", "checkpoint_4"]
    assert [(p / "e2rank_state.json").is_file() for p in sorted(states.iterdir())] == [True, True, False]
    assert not (root / "out").exists()
    return root


def _record(root):
    return json.loads((root / "out" / "e2rank_training.json").read_text())


def _same_run(root, reference) -> None:
    """The same weights, and the same log at every step: training figures (loss, lr, gradient norm) bit for
    bit; the evaluation of steps 1-3, which the killed run computed in another process, to float32
    rounding (a process that ran the rest of the suite can differ from a fresh one in the last bits of an
    inference forward pass; the weights it evaluates are bit-equal, checked above)."""
    resumed, uninterrupted = load_file(root / "out" / "model.safetensors"), load_file(
        reference / "out" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    different = [name for name in resumed if not torch.equal(resumed[name], uninterrupted[name])]
    assert not different
    log, expected = _record(root)["log"], _record(reference)["log"]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    for got, want in zip(log, expected):
        assert got.keys() == want.keys(), f"step {want['step']}"
        trained = {k: v for k, v in got.items() if not k.startswith("eval_")}
        assert trained == {k: want[k] for k in trained}, f"step {want['step']}"
        for key in set(got) - set(trained):
            assert got[key] == pytest.approx(want[key], rel=1e-6), f"step {want['step']}: {key}"
    assert sorted(p.name for p in root.iterdir()) == ["out", "train.jsonl"]  # the state is gone once finished


@pytest.mark.slow  # the killed run is another Python process
def test_killed_run_resumes_to_the_same_weights(tmp_path, dropout_qwen_dir, reference, killed, capsys):
    reference, _ = reference
    root = shutil.copytree(killed, tmp_path / "run")
    assert train_main(_args(dropout_qwen_dir, root, "--resume")) == 0
    assert "checkpoint_3 (step 3 of 6)" in capsys.readouterr().out
    _same_run(root, reference)  # steps 1-3 from the state, 4-6 retrained after a mid-epoch resume point


@pytest.mark.slow  # the killed run is another Python process
@pytest.mark.parametrize("damage", ["vectors", "record"])
def test_a_damaged_newest_state_falls_back_to_the_one_before(tmp_path, dropout_qwen_dir, reference, killed, damage):
    """A file of the newest state damaged in place (same size), or its record left empty by a power loss:
    named in a warning, and the run resumes from the state before it, to the same weights."""
    reference, _ = reference
    root = shutil.copytree(killed, tmp_path / "run")
    newest = root / ".out.state" / "checkpoints" / "checkpoint_3"
    damaged = newest / ("model.safetensors" if damage == "vectors" else "e2rank_state.json")
    if damage == "vectors":
        data = bytearray(damaged.read_bytes())
        data[-8:] = bytes(8)
        damaged.write_bytes(bytes(data))
    else:
        damaged.write_bytes(b"")
    with pytest.warns(UserWarning, match=f"{re.escape(str(damaged))} is damaged.*; resuming from an earlier state"):
        assert train_main(_args(dropout_qwen_dir, root, "--resume")) == 0
    _same_run(root, reference)  # from step 2: steps 3-6 retrained


@pytest.mark.slow  # the killed run is another Python process
def test_no_intact_state_is_refused_naming_the_files(tmp_path, dropout_qwen_dir, killed):
    root = shutil.copytree(killed, tmp_path / "run")
    (root / ".out.state" / "checkpoints" / "checkpoint_3" / "e2rank_state.json").write_bytes(b"")
    (root / ".out.state" / "checkpoints" / "checkpoint_2" / "model.safetensors").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(CorruptArtifact) as error:
        train_main(_args(dropout_qwen_dir, root, "--resume"))
    message = str(error.value)
    assert message.startswith("no intact state to resume from: the state record ")
    assert "checkpoint_3/e2rank_state.json is damaged" in message and "checkpoint_2/model.safetensors is damaged: 0 bytes" \
        in message and message.endswith(f"Delete {root / '.out.state'} to start over")
    assert not (root / "out").exists()


def test_a_state_is_on_disk_before_its_record_is_renamed_into_place(tmp_path, tiny_qwen_dir, monkeypatch):
    """Every file of a state, its directory and its record are fsync'd before the rename that puts the
    record, the mark of a complete state, in place: a power loss never leaves a state whose record or
    files are empty."""
    events = recording_fsync_and_rename(monkeypatch)
    train(TrainConfig(model=str(tiny_qwen_dir), output=str(tmp_path / "out"), max_steps=2, batch_size=1,
                      doc_max_length=16, prompt_doc_max_tokens=8, save_every=1), [ListwiseExample(**RECORDS[0])])
    renamed = [i for i, e in enumerate(events)
               if e[0] == "rename" and e[2].endswith("/.out.state/checkpoints/checkpoint_1/e2rank_state.json")]
    assert len(renamed) == 1
    record, state = events[renamed[0]][1], os.path.dirname(events[renamed[0]][2])
    synced = {e[1] for e in events[:renamed[0]] if e[0] == "fsync"}
    files = {"model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl"}
    assert {os.path.join(state, name) for name in files} | {state, record} <= synced


@pytest.mark.slow
def test_evaluation_is_logged_in_the_record_and_tensorboard(reference):
    reference, _ = reference
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = _record(reference)["log"]
    evaluated = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in log] == [r["step"] for r in evaluated] == [1, 2, 3, 4, 5, 6]
    for r in evaluated:
        assert 0 < r["eval_ndcg_10"] <= 1 and r["eval_loss"] > 0 and {"eval_infonce", "eval_ranknet"} <= set(r)
    assert all(r["grad_norm"] > 0 and r["lr"] >= 0 for r in log)
    assert not (reference / ".out.state").exists()
    events = EventAccumulator(str(reference / "out.logs" / "out"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss", "infonce", "ranknet", "lr", "grad_norm", "eval_loss", "eval_ndcg_10"} <= set(scalars)
    assert [(e.step, e.value) for e in events.Scalars("eval_ndcg_10")] == \
        [(r["step"], pytest.approx(r["eval_ndcg_10"])) for r in evaluated]


@pytest.mark.slow  # the killed run is another Python process
def test_resume_is_refused_with_other_settings_or_data(tmp_path, dropout_qwen_dir, killed):
    root = shutil.copytree(killed, tmp_path / "run")
    with pytest.raises(ValueError, match=r"other settings: lr 0\.001 \(saved\) vs 0\.002 \(now\)\. Pass"):
        train_main(_args(dropout_qwen_dir, root, "--resume", "--lr", "2e-3"))
    _write_data(root, RECORDS[::-1], name="other.jsonl")
    with pytest.raises(ValueError, match="the training records differ"):
        train_main(_args(dropout_qwen_dir, root, "--resume", data="other.jsonl"))
    with pytest.raises(FileExistsError, match=r"an unfinished run's state is at .*checkpoint_3: pass --resume"):
        train_main(_args(dropout_qwen_dir, root))
    # where and how often it saves, logs and evaluates may change
    with pytest.raises(ValueError, match=r"other settings: max_grad_norm 1\.0 \(saved\) vs 0\.5 \(now\)\. Pass"):
        train_main(_args(dropout_qwen_dir, root, "--resume", "--max-grad-norm", "0.5", "--eval-every", "3",
                         "--save-every", "1", "--log-every", "1"))
    assert (root / ".out.state" / "checkpoints" / "checkpoint_3").is_dir() and not (root / "out").exists()


def test_gradients_are_clipped_to_max_grad_norm(tmp_path, tiny_qwen_dir, reference, monkeypatch):
    """The optimizer sees gradients of total norm ``max_grad_norm`` (1.0 by default) when they are
    larger; the log keeps the norm before clipping. 0 switches clipping off."""
    reference, seen = reference
    logged = [r["grad_norm"] for r in _record(reference)["log"]]
    assert len(seen) == len(logged) and max(logged) > 1
    assert seen == pytest.approx([min(1.0, norm) for norm in logged], rel=1e-4)
    norms = []
    monkeypatch.setattr(torch.optim.AdamW, "step", _recording_norms(norms))
    output = train(TrainConfig(model=str(tiny_qwen_dir), output=str(tmp_path / "out"), max_steps=1, batch_size=1,
                               doc_max_length=16, prompt_doc_max_tokens=8, max_grad_norm=0),
                   [ListwiseExample(**RECORDS[0])])
    logged = json.loads((output / "e2rank_training.json").read_text())["log"][0]["grad_norm"]
    assert norms == [pytest.approx(logged, rel=1e-5)] and logged > 1


def test_settings_are_checked():
    assert TrainConfig(model="m", output="o").max_grad_norm == 1.0
    for bad, message in [({"eval_every": 2}, "eval_every needs eval_data or eval_fraction"),
                         ({"eval_fraction": 0.1}, "eval_every needs"),
                         ({"eval_every": 2, "eval_fraction": 1.0}, "eval_fraction must be a number > 0 and < 1"),
                         ({"eval_every": 2, "eval_fraction": 0.1, "eval_data": "x"}, "not both"),
                         ({"max_grad_norm": -1}, "max_grad_norm must be"),
                         ({"max_grad_norm": math.nan}, "max_grad_norm must be"),
                         ({"save_every": 0}, "save_every must be")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(model="m", output="o", **bad)
