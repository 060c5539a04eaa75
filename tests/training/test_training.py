"""Training: losses by hand, converters on real samples, bad records, a tiny model that learns, and
checkpoints that E2Rank loads."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.cli.main import train_main
from pyterrier_e2rank.training.config import TrainConfig
from pyterrier_e2rank.training.data import DataError, ListwiseExample, from_pairs, from_rankllm, from_run, read_listwise
from pyterrier_e2rank.training.losses import info_nce, listwise_loss, ranknet
from pyterrier_e2rank.training.trainer import train


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    got = info_nce(q, d, torch.tensor([0, 2]), temperature=0.5)
    logits = np.array([[1.0, 0.6, 0.0], [0.0, 0.8, 1.0]]) / 0.5
    expected = np.mean([-(logits[0, 0] - np.log(np.exp(logits[0]).sum())),
                        -(logits[1, 2] - np.log(np.exp(logits[1]).sum()))])
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_ranknet_by_hand_and_masked_positions_do_not_count():
    scores = torch.tensor([[2.0, 1.0, 0.5, 99.0]])
    relevance = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    # pairs (i better than j): (0,1): 1.0, (0,2): 1.5, (2,1): -0.5
    expected = np.mean([math.log1p(math.exp(-1.0)), math.log1p(math.exp(-1.5)), math.log1p(math.exp(0.5))])
    assert float(ranknet(scores, relevance, mask)) == pytest.approx(expected, rel=1e-6)
    scores[0, 3] = -50.0  # a padded slot's score must not matter
    assert float(ranknet(scores, relevance, mask)) == pytest.approx(expected, rel=1e-6)


def test_relevance_is_slate_minus_position():
    example = ListwiseExample("q", ["a", "b", "c"], [2, 3, 1])
    assert example.relevance() == [1.0, 3.0, 2.0] and example.positive == "b"


def test_rankllm_converter_on_real_samples(shared_path):
    examples = from_rankllm(shared_path("data", "msmarco-train-samples", "llm4ranking_listwise_train.jsonl"))
    assert len(examples) == 100
    first = examples[0]
    assert first.query == "fibroblasts synthesize what of the ground substance"
    assert len(first.document) == 20 and first.ranking[:3] == [3, 8, 14]
    assert first.document[0].startswith("The ground substance secreted by a fibroblast")
    assert {len(e.document) for e in examples} >= {3, 20}  # mixed list lengths


def test_pairs_converter_on_real_samples(shared_path):
    path = shared_path("data", "msmarco-train-samples", "flagembedding_msmarco.jsonl")
    examples = from_pairs(path, slate=8)
    record = json.loads(open(path).readline())
    assert examples[0].query == record["query"] and examples[0].document[0] == record["pos"][0]
    assert len(examples[0].document) <= 8 and examples[0].ranking[0] == 1


def test_run_converter_puts_judged_documents_first():
    topics = pd.DataFrame({"qid": ["1", "2"], "query": ["a", "b"]})
    run = pd.DataFrame({"qid": ["1"] * 4 + ["2"] * 2, "docno": ["w", "x", "y", "z", "u", "v"],
                        "rank": [0, 1, 2, 3, 0, 1], "text": ["tw", "tx", "ty", "tz", "tu", "tv"]})
    qrels = pd.DataFrame({"qid": ["1", "1"], "docno": ["z", "x"], "label": [2, 1]})
    examples = list(from_run(topics, run, qrels, slate=4))
    assert len(examples) == 1  # query 2 has no judged document in its slate
    assert examples[0].document == ["tw", "tx", "ty", "tz"] and examples[0].ranking == [4, 2, 1, 3]


@pytest.mark.parametrize("record, message", [
    ({"query": "q", "document": ["a", "b"], "ranking": [1, 1]}, "not a permutation"),
    ({"query": "q", "document": ["a", ""], "ranking": [1, 2]}, "empty document"),
    ({"query": "", "document": ["a"], "ranking": [1]}, "empty query"),
    ({"query": "q", "document": ["a"]}, "missing field 'ranking'"),
])
def test_bad_records_are_reported_with_their_line(tmp_path, record, message):
    good = {"query": "q", "document": ["a", "b"], "ranking": [2, 1]}
    (tmp_path / "data.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=rf"data.jsonl:2: .*{message}"):
        read_listwise(tmp_path / "data.jsonl")


@pytest.fixture(scope="module")
def samples(shared_path):
    examples = from_rankllm(shared_path("data", "msmarco-train-samples", "llm4ranking_listwise_train.jsonl"))
    return [e for e in examples if len(e.document) <= 8][:8]  # mixed lengths, kept small for CPU


def test_tiny_model_loss_falls(tiny_qwen_dir, samples):
    config = TrainConfig(model=str(tiny_qwen_dir), output="unused", lr=3e-3, doc_max_length=64,
                         prompt_doc_max_tokens=32)
    model = E2Rank(str(tiny_qwen_dir))
    prompt = model.listwise_prompt(num_input_docs=8, prompt_doc_max_tokens=32)
    optimizer = torch.optim.AdamW(model.backbone.parameters(), lr=config.lr)
    model.backbone.train()
    losses = []
    for _ in range(8):
        loss, parts = listwise_loss(model, prompt, samples, config)
        assert set(parts) == {"infonce", "ranknet"}
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_checkpoint_round_trip(tmp_path, minilm_dir, samples):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e.__dict__) + "\n" for e in samples[:4]))
    output = tmp_path / "checkpoint"
    assert train_main(["--stage", "2", "--model", str(minilm_dir), "--data", str(data), "--output", str(output),
                       "--max-steps", "2", "--batch-size", "2", "--doc-max-length", "32", "--lr", "1e-4"]) == 0
    trained, base = E2Rank(str(output)), E2Rank(str(minilm_dir))
    assert trained.pooling == base.pooling  # sentence-transformers files travelled with the weights
    texts = ["gene therapy", "a mouse study"]
    assert not np.allclose(trained.encode_docs(texts), base.encode_docs(texts), atol=1e-4)
    log = json.loads((output / "e2rank_training.json").read_text())["log"]
    assert [r["step"] for r in log] == [1, 2]


def test_stage_one_trains_on_pairs(tmp_path, tiny_qwen_dir, shared_path):
    path = shared_path("data", "msmarco-train-samples", "flagembedding_msmarco.jsonl")
    examples = from_pairs(path, slate=4)[:4]
    output = train(TrainConfig(model=str(tiny_qwen_dir), output=str(tmp_path / "s1"), stage=1, max_steps=1,
                               batch_size=2, doc_max_length=32), examples)
    assert E2Rank(str(output)).encode_queries(["q"]).shape == (1, 64)
