"""Training at cluster scale, on CPU: a run SIGKILLed while saving its state resumes from the last complete
one and ends with the same weights and log as an uninterrupted run; evaluation every N steps logs the
PRF reranker's nDCG@10 and the eval loss (training record and TensorBoard); gradients are clipped; a
state is resumed only with the settings and data it was made with."""
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pyterrier_e2rank.app.cli import train_main
from pyterrier_e2rank.training.data import ListwiseExample
from pyterrier_e2rank.training.trainer import TrainConfig, train

from fixtures.training_records import RECORDS

# Three records to train on (one held out), batches of 1 accumulated twice: step 1 is batches 1-2 of epoch 0,
# step 2 its last batch alone, step 3 batches 1-2 of epoch 1; a state after each step, an evaluation too.
SETTINGS = ["--stage", "2", "--max-steps", "3", "--batch-size", "1", "--gradient-accumulation", "2",
            "--doc-max-length", "16", "--prompt-doc-max-tokens", "8", "--lr", "1e-3", "--warmup-ratio", "0.34",
            "--eval-fraction", "0.25", "--eval-every", "1", "--save-every", "1"]

# Runs the CLI and SIGKILLs itself while the step-2 state is being written (accelerate's files are out,
# the record and the rename are not): the newest complete state must then be step 1, mid-epoch.
KILLED_WHILE_SAVING = """
import os, signal, sys
import accelerate
from pyterrier_e2rank.app.cli import train_main as main
real = accelerate.Accelerator.save_state
def save_state(self, output_dir=None, **kwargs):
    real(self, output_dir, **kwargs)
    if output_dir.endswith(".step-2.tmp"):
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
def reference(tmp_path_factory, tiny_qwen_dir):
    """An uninterrupted run, logged to TensorBoard: its directory, and the gradient norms its optimizer saw."""
    root = tmp_path_factory.mktemp("reference")
    _write_data(root)
    norms = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", _recording_norms(norms))
        assert train_main(_args(tiny_qwen_dir, root, "--log-with", "tensorboard")) == 0
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
def killed(tmp_path_factory, tiny_qwen_dir):
    """The same run, SIGKILLed while saving the step-2 state (tests copy it before resuming)."""
    root = tmp_path_factory.mktemp("killed")
    _write_data(root)
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, *_args(tiny_qwen_dir, root)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-3000:]
    state = root / ".out.state"
    assert sorted(p.name for p in state.iterdir()) == [".step-2.tmp", "step-1"]
    assert not (root / "out").exists()
    return root


def _record(root):
    return json.loads((root / "out" / "e2rank_training.json").read_text())


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_qwen_dir, reference, killed):
    reference, _ = reference
    root = shutil.copytree(killed, tmp_path / "run")
    assert train_main(_args(tiny_qwen_dir, root, "--resume")) == 0
    resumed, uninterrupted = load_file(root / "out" / "model.safetensors"), load_file(
        reference / "out" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    different = [name for name in resumed if not torch.equal(resumed[name], uninterrupted[name])]
    assert not different
    assert _record(root)["log"] == _record(reference)["log"]  # step 1 from the state, 2-3 retrained: all equal
    assert sorted(p.name for p in root.iterdir()) == ["out", "train.jsonl"]  # the state is gone once finished


def test_evaluation_is_logged_in_the_record_and_tensorboard(reference):
    reference, _ = reference
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = _record(reference)["log"]
    evaluated = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in log] == [r["step"] for r in evaluated] == [1, 2, 3]
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


def test_resume_is_refused_with_other_settings_or_data(tmp_path, tiny_qwen_dir, killed):
    with pytest.raises(ValueError, match=r"other settings: lr 0\.001 \(saved\) vs 0\.002 \(now\)\. Pass"):
        train_main(_args(tiny_qwen_dir, killed, "--resume", "--lr", "2e-3"))
    _write_data(killed, RECORDS[::-1], name="other.jsonl")
    with pytest.raises(ValueError, match="the training records differ"):
        train_main(_args(tiny_qwen_dir, killed, "--resume", data="other.jsonl"))
    with pytest.raises(FileExistsError, match=r"an unfinished run's state is at .*step-1: pass --resume"):
        train_main(_args(tiny_qwen_dir, killed))
    # where and how often it saves, logs and evaluates may change
    with pytest.raises(ValueError, match=r"other settings: max_grad_norm 1\.0 \(saved\) vs 0\.5 \(now\)\. Pass"):
        train_main(_args(tiny_qwen_dir, killed, "--resume", "--max-grad-norm", "0.5", "--eval-every", "3",
                         "--save-every", "1", "--log-every", "1"))
    assert (killed / ".out.state" / "step-1").is_dir() and not (killed / "out").exists()


def test_gradients_are_clipped_to_max_grad_norm(tmp_path, tiny_qwen_dir, reference, monkeypatch):
    """The optimizer sees gradients of total norm ``max_grad_norm`` (1.0 by default) when they are
    larger; the log keeps the norm before clipping. 0 switches clipping off."""
    reference, seen = reference
    logged = [r["grad_norm"] for r in _record(reference)["log"]]
    assert len(seen) == len(logged) and min(logged) > 1
    assert seen == pytest.approx([1.0] * len(logged), rel=1e-4)
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
