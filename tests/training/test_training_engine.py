"""Training engine: mixed list lengths are masked (no fake documents), negatives are gathered across
processes, steps/accumulation/checkpointing/bf16/LoRA run through the CLI, and the SciFact builder."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli.main import main as e2rank
from pyterrier_e2rank.model.text import join_title
from pyterrier_e2rank.training.config import TrainConfig
from pyterrier_e2rank.training.data import DataError, ListwiseExample, from_pairs, from_rankllm, read_listwise
from pyterrier_e2rank.training.losses import gather_with_grad, info_nce, listwise_loss

MIXED = [
    ListwiseExample("what do fibroblasts secrete", ["collagen and ground substance", "bone is hard",
                                                    "fibroblasts make the extracellular matrix"], [3, 1, 2]),
    ListwiseExample("capital of france", ["paris is the capital of france", "lyon is a city", "berlin",
                                          "france borders spain", "the eiffel tower is in paris"], [1, 5, 4, 2, 3]),
]


def test_mixed_lengths_enter_the_losses_as_they_are(tiny_qwen_dir):
    """The batch loss equals the losses computed by hand from each text embedded alone: the short list
    adds no padded document to InfoNCE's candidates nor to RankNet's pairs."""
    model = E2Rank(str(tiny_qwen_dir))
    config = TrainConfig(model=str(tiny_qwen_dir), output="unused")
    prompt = model.listwise_prompt(num_input_docs=5)
    with torch.no_grad():
        loss, parts = listwise_loss(model, prompt, MIXED, config)

    queries = torch.tensor(model.encode_queries([e.query for e in MIXED]))
    docs = torch.tensor(model.encode_docs([d for e in MIXED for d in e.document]))
    assert len(docs) == 8
    logits = queries @ docs.T / 0.03
    infonce = np.mean([float(-F.log_softmax(logits[0], 0)[2]), float(-F.log_softmax(logits[1], 0)[3 + 0])])
    pseudo = torch.tensor(model.encode_prompts([prompt.render(model.tokenizer, e.query, e.document) for e in MIXED]))
    pair_losses = []
    for row, (start, e) in enumerate(zip([0, 3], MIXED)):
        scores = 10 * (docs[start:start + len(e.document)] @ pseudo[row])
        relevance = e.relevance()
        for i in range(len(e.document)):
            for j in range(len(e.document)):
                if relevance[i] > relevance[j]:
                    pair_losses.append(math.log1p(math.exp(-float(scores[i] - scores[j]))))
    assert len(pair_losses) == 3 + 10  # n(n-1)/2 pairs per list, nothing from padding
    assert parts["infonce"] == pytest.approx(infonce, rel=1e-4)
    assert parts["ranknet"] == pytest.approx(np.mean(pair_losses), rel=1e-4)
    assert float(loss) == pytest.approx(infonce + 2.0 * np.mean(pair_losses), rel=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_qwen_dir):
    grads = []
    for checkpointing in (False, True):
        model = E2Rank(str(tiny_qwen_dir))
        if checkpointing:
            model.backbone.gradient_checkpointing_enable()
        model.backbone.train()
        loss, _ = listwise_loss(model, model.listwise_prompt(num_input_docs=5), MIXED,
                                TrainConfig(model="unused", output="unused"))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.backbone.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6)


def _gather_worker(rank, world, store, queries, docs, positives, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    local_docs = docs[rank].clone().requires_grad_(True)
    all_docs, offset = gather_with_grad(local_docs)
    loss = info_nce(queries[rank], all_docs, positives[rank] + offset)
    loss.backward()
    out[rank] = (float(loss), offset, local_docs.grad.clone())
    dist.destroy_process_group()


@pytest.mark.slow
def test_in_batch_negatives_are_gathered_across_processes(tmp_path):
    """Two processes with 3 and 5 documents: each one's loss and document gradients are those of one
    process holding all 8 documents. They meet through a file (no port to collide) and each returns its
    own results."""
    torch.manual_seed(0)
    queries = [F.normalize(torch.randn(2, 8), dim=-1), F.normalize(torch.randn(1, 8), dim=-1)]
    docs = [F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)]
    positives = [torch.tensor([0, 2]), torch.tensor([4])]
    out = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_gather_worker, args=(2, tmp_path / "store", queries, docs, positives, out), nprocs=2)
    everything = torch.cat(docs)
    for rank, offset in [(0, 0), (1, 3)]:
        alone = everything.clone().requires_grad_(True)
        loss = info_nce(queries[rank], alone, positives[rank] + offset)
        loss.backward()
        got_loss, got_offset, got_grad = out[rank]
        assert got_offset == offset and got_loss == pytest.approx(float(loss.detach()), rel=1e-6)
        torch.testing.assert_close(got_grad, alone.grad[offset:offset + len(docs[rank])])


@pytest.mark.slow
def test_cli_accumulation_checkpointing_bf16_lora(tmp_path, tiny_qwen_dir):
    pytest.importorskip("peft")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e.__dict__) + "\n" for e in MIXED * 3))  # 6 records
    output = tmp_path / "lora"
    # 6 records, batch 2 -> 3 batches; accumulating 2 -> 2 updates per epoch (the last one from 1 batch)
    assert e2rank(["train", "--stage", "2", "--model", str(tiny_qwen_dir), "--data", str(data),
                   "--output", str(output), "--epochs", "1", "--batch-size", "2", "--gradient-accumulation", "2",
                   "--gradient-checkpointing", "--bf16", "--lora-rank", "4", "--lr", "1e-3",
                   "--num-input-docs", "3", "--prompt-doc-max-tokens", "8", "--log-every", "1"]) == 0
    saved = json.loads((output / "e2rank_training.json").read_text())
    assert [r["step"] for r in saved["log"]] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["ranknet"] >= 0 for r in saved["log"])
    assert saved["config"]["num_input_docs"] == 3
    assert not any(p.name.startswith("adapter_") for p in output.iterdir())  # merged: a plain HF directory
    trained, base = E2Rank(str(output)), E2Rank(str(tiny_qwen_dir))
    assert trained.pooling == base.pooling
    assert not np.allclose(trained.encode_queries(["q"]), base.encode_queries(["q"]), atol=1e-5)


def test_max_steps_runs_past_one_epoch_with_a_decaying_learning_rate(tmp_path, tiny_qwen_dir):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e.__dict__) + "\n" for e in MIXED))
    output = tmp_path / "steps"
    assert e2rank(["train", "--stage", "1", "--model", str(tiny_qwen_dir), "--data", str(data),
                   "--output", str(output), "--max-steps", "3", "--batch-size", "2", "--lr", "1e-3",
                   "--warmup-ratio", "0"]) == 0
    log = json.loads((output / "e2rank_training.json").read_text())["log"]
    assert [r["step"] for r in log] == [1, 2, 3] and "ranknet" not in log[0]
    assert [r["lr"] for r in log] == pytest.approx([1e-3, 1e-3 * 2 / 3, 1e-3 / 3])


def test_converters_report_bad_lines(tmp_path, shared_path):
    path = shared_path("data", "msmarco-train-samples", "llm4ranking_listwise_train.jsonl")
    lines = open(path, encoding="utf-8").read().splitlines()[:3]
    record = json.loads(lines[1])
    answer = next(m for m in record["messages"] if m["role"] == "assistant")
    answer["content"] = "[2] > [1]"  # the teacher ranked only 2 of the passages
    (tmp_path / "rankllm.jsonl").write_text("\n".join([lines[0], json.dumps(record), lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"rankllm.jsonl:2: .*not a permutation"):
        from_rankllm(tmp_path / "rankllm.jsonl")
    (tmp_path / "pairs.jsonl").write_text('{"query": "q", "pos": ["p"]}\n\n{"query": "q", "neg": ["n"]}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:3: missing field 'pos'"):
        from_pairs(tmp_path / "pairs.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"query": "q", "document": ["a"], "ranking": [1]}\n{"query": \n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: "):
        read_listwise(tmp_path / "broken.jsonl")


def test_scifact_train_records_from_bm25_and_qrels(tmp_path, shared_path):
    import subprocess

    import pyterrier as pt
    subprocess.run(["bash", str(shared_path("tools", "seed-irds-cache"))], check=True, capture_output=True)
    output = tmp_path / "scifact-train.jsonl"
    assert e2rank(["build-data", "dataset", "--dataset", "irds:beir/scifact/train", "--slate", "16",
                   "--bm25-index", str(tmp_path / "bm25"), "--output", str(output)]) == 0
    examples = read_listwise(output)
    dataset = pt.get_dataset("irds:beir/scifact/train")
    assert 600 < len(examples) <= len(dataset.get_topics())  # queries with a judged document in BM25's top 16
    assert all(len(e.document) == 16 for e in examples)
    qrels = dataset.get_qrels()
    corpus = {d["docno"]: d for d in dataset.get_corpus_iter(verbose=False)}
    relevant_texts = {join_title(corpus[d]["title"], corpus[d]["text"]) for d in qrels[qrels["label"] > 0]["docno"]}
    assert all(e.positive in relevant_texts for e in examples)


@pytest.mark.slow
def test_evidence_script_evaluates_with_the_trained_prompt(tmp_path, tiny_qwen_dir, small_scifact, repo_dir):
    """training/evaluate_scifact.py on a tiny checkpoint, SciFact cut small and two queries: both PRF rerankers
    read the prompt the checkpoint was trained with, and every system of the write-up is there."""
    import importlib.util

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e.__dict__) + "\n" for e in MIXED))
    trained = tmp_path / "trained"
    assert e2rank(["train", "--stage", "2", "--model", str(tiny_qwen_dir), "--data", str(data),
                   "--output", str(trained), "--max-steps", "1", "--batch-size", "2", "--num-input-docs", "3",
                   "--prompt-doc-max-tokens", "8"]) == 0
    spec = importlib.util.spec_from_file_location("evaluate_scifact",
                                                  repo_dir / "training" / "evaluate_scifact.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    output = tmp_path / "evidence.json"
    script.main(["--base", str(tiny_qwen_dir), "--trained", str(trained), "--dataset", str(small_scifact),
                 "--index-dir", str(tmp_path / "idx"), "--num-queries", "2", "--output", str(output)])
    evidence = json.loads(output.read_text())
    assert evidence["prompt"] == {"num_input_docs": 3, "prompt_doc_max_tokens": 8, "prompt_max_tokens": None}
    assert list(evidence["systems"]) == ["(d) bm25", "PRF reranker, base", "embedding reranker, base", "dense, base",
                                         "PRF reranker, trained", "embedding reranker, trained", "dense, trained"]


def test_encoder_retrained_with_cls_pooling_is_saved_and_loaded_with_it(tmp_path, minilm_dir, tiny_qwen_dir):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e.__dict__) + "\n" for e in MIXED))
    output = tmp_path / "cls"
    assert e2rank(["train", "--stage", "2", "--model", str(minilm_dir), "--data", str(data), "--output", str(output),
                   "--max-steps", "1", "--batch-size", "2", "--pooling", "cls"]) == 0
    trained = E2Rank(str(output))
    assert trained.pooling.mode == "cls" and trained.pooling.normalize
    ids = trained.tokenize_docs(["fibroblasts make the extracellular matrix"])
    with torch.no_grad():
        cls_state = trained.backbone(input_ids=torch.tensor(ids)).last_hidden_state[0, 0]
    np.testing.assert_allclose(trained.encode_docs(["fibroblasts make the extracellular matrix"])[0],
                               F.normalize(cls_state, dim=-1).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="--pooling is for sentence-transformers encoders"):
        e2rank(["train", "--stage", "2", "--model", str(tiny_qwen_dir), "--data", str(data),
                "--output", str(tmp_path / "decoder"), "--max-steps", "1", "--pooling", "cls"])


# ---- the recipes of the top-level training/ folder ------------------------------------------------

RECIPE_VARIABLES = ("MODEL", "DATA", "OUTPUT", "ACCELERATE_CONFIG", "QUERIES_PER_STEP", "BATCH_SIZE", "BF16")


@pytest.mark.parametrize("config", [None, "single_gpu.yaml", "multi_gpu_8.yaml", "deepspeed_zero3_8.yaml"])
@pytest.mark.parametrize("stage", [1, 2])
def test_recipes_run_e2rank_train_with_flags_it_has(tmp_path, repo_dir, stage, config):
    """Each recipe runs with ``e2rank`` and ``accelerate`` replaced by stubs that record their arguments
    (bash substitutes the variables): the real parser accepts them, and every launch makes the paper's
    128 queries per step."""
    import os
    import subprocess

    import yaml

    from pyterrier_e2rank.cli.main import build_parser
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("e2rank", "accelerate"):
        (stubs / name).write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" {name} "$@" > "{tmp_path}/called"\n')
        (stubs / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARIABLES}
    env.update(PATH=f"{stubs}{os.pathsep}{env['PATH']}", MODEL="base model", DATA="train.jsonl", OUTPUT="out")
    processes = 1
    if config is not None:
        env["ACCELERATE_CONFIG"] = f"training/accelerate/{config}"
        processes = yaml.safe_load((repo_dir / env["ACCELERATE_CONFIG"]).read_text())["num_processes"]
    subprocess.run(["bash", f"training/stage{stage}.sh", "--max-steps", "3"], cwd=repo_dir, env=env, check=True)
    called = (tmp_path / "called").read_text().split("\0")[:-1]
    if config is None:
        assert called[0] == "e2rank"
        argv = called[1:]
    else:
        assert called[:6] == ["accelerate", "launch", "--config_file", env["ACCELERATE_CONFIG"], "-m",
                              "pyterrier_e2rank.cli.main"]
        argv = called[6:]
    args = build_parser().parse_args(argv)
    assert (args.command, args.stage, args.model, args.data, args.output) == ("train", stage, "base model",
                                                                               "train.jsonl", "out")
    assert args.batch_size * processes * args.gradient_accumulation == 128
    assert args.bf16 and args.gradient_checkpointing and args.lr == 5e-6 and args.warmup_ratio == 0.03
    assert args.max_steps == 3  # the script's own arguments are passed on


def test_accelerate_configs_load(repo_dir):
    """The YAML files parse, accelerate knows every key, and a DeepSpeed config file they name exists and
    leaves batch, accumulation and precision to ``e2rank train`` ("auto")."""
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file
    configs = sorted((repo_dir / "training" / "accelerate").glob("*.yaml"))
    assert [c.name for c in configs] == ["deepspeed_zero3_8.yaml", "multi_gpu_8.yaml", "single_gpu.yaml"]
    for path in configs:
        assert isinstance(yaml.safe_load(path.read_text()), dict)
        config = load_config_from_file(str(path))  # unknown keys are refused
        deepspeed_file = config.deepspeed_config.get("deepspeed_config_file")
        if deepspeed_file is not None:
            deepspeed = json.loads((repo_dir / deepspeed_file).read_text())
            assert deepspeed["zero_optimization"]["stage"] == 3
            assert deepspeed["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]  # to save
            assert {deepspeed[k] for k in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps")} == {"auto"}
            assert deepspeed["bf16"]["enabled"] == "auto"
