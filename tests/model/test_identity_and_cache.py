"""Model identity covers exactly what changes vectors (issue 16, class 1), the fingerprint cache beside a
checkpoint sees a replaced weight file, and the prompt-vector cache is keyed by every setting that
changes a prompt vector, never unpickles (class 7), takes concurrent writers (class 5) and names a
damaged file (issue 17)."""
import json
import multiprocessing
import os
import pickle
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch

from pyterrier_e2rank import E2Rank, E2RankIndex, IndexModelMismatch
from pyterrier_e2rank.model import fingerprint
from pyterrier_e2rank.io import CorruptArtifact
from pyterrier_e2rank.rerank.prompt_cache import cache_directory

DOCS = [{"docno": f"d{i}", "text": f"Gene {i} Therapy Trial in Boston and Paris, volume {i}"} for i in range(8)]
PROMPTS = pd.DataFrame({"prompt": [f"Documents: [1] gene {i} therapy. Search Query: virus {i}" for i in range(6)]})


def _copy_checkpoint(source, target, *, weights=True):
    """A writable copy of a model directory (weight files copied only with ``weights``)."""
    target.mkdir()
    for path in source.rglob("*"):
        if path.is_file() and (weights or path.suffix not in (".safetensors", ".bin")):
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / path.relative_to(source))
    return target


def _cosine(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


# ---- model identity: what changes vectors counts ---------------------------------------------------

def test_a_minilm_copy_that_no_longer_lowercases_is_another_model(minilm, minilm_dir, tmp_path):
    cased = _copy_checkpoint(minilm_dir, tmp_path / "cased")
    settings = json.loads((cased / "tokenizer_config.json").read_text())
    (cased / "tokenizer_config.json").write_text(json.dumps({**settings, "do_lower_case": False}))
    copy = E2Rank(str(cased))
    title = ["Gene Therapy Trial in Boston and Paris"]
    assert _cosine(copy.encode_docs(title)[0], minilm.encode_docs(title)[0]) < 0.9  # other vectors
    differ = [k for k in minilm.fingerprint() if k != "model" and copy.fingerprint()[k] != minilm.fingerprint()[k]]
    assert differ == ["tokenizer_sha256"]
    minilm.indexer(tmp_path / "index").index(DOCS)
    with pytest.raises(IndexModelMismatch, match="tokenizer_sha256"):
        copy.retriever(E2RankIndex(tmp_path / "index"))


def test_a_python_tokenizer_is_identified_by_what_it_does(minilm_dir):
    """A tokenizer without a fast backend (transformers' Python ones): lowercasing counts, how it was
    loaded does not."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    loaded = BertTokenizerLegacy.from_pretrained(minilm_dir)
    built = BertTokenizerLegacy(vocab_file=str(minilm_dir / "vocab.txt"))
    cased = BertTokenizerLegacy.from_pretrained(minilm_dir, do_lower_case=False)
    assert not loaded.is_fast and cased.tokenize("Gene") == ["[UNK]"]
    assert fingerprint.tokenizer_digest(loaded) == fingerprint.tokenizer_digest(built)
    assert fingerprint.tokenizer_digest(cased) != fingerprint.tokenizer_digest(loaded)


def test_prompt_vector_settings_cover_what_changes_a_prompt_vector(tiny_qwen_dir, tiny_qwen):
    """The instance found here: a bfloat16 model's prompt vectors differ from a float32 one's, so a
    cache must not serve one to the other (the fingerprint, rightly, says they are one model)."""
    in_bf16 = E2Rank(str(tiny_qwen_dir), dtype=torch.bfloat16, batch_size=4)
    assert in_bf16.fingerprint() == tiny_qwen.fingerprint()
    assert not np.array_equal(in_bf16.encode_prompts(PROMPTS["prompt"][:1]),
                              tiny_qwen.encode_prompts(PROMPTS["prompt"][:1]))
    assert in_bf16.prompt_vector_settings() != tiny_qwen.prompt_vector_settings()


# ---- model identity: how a checkpoint is stored does not count ---------------------------------------

@pytest.mark.parametrize("tensors", ["as stored", "as the model keeps them"])
def test_safetensors_and_pytorch_bin_of_the_same_weights_are_one_model(minilm, minilm_dir, tmp_path, tensors):
    """``.bin`` says ``torch.float32`` where safetensors says ``F32``; the model's own state has no
    ``embeddings.position_ids`` (a buffer BERT computes), which the shipped safetensors file holds."""
    from safetensors.torch import load_file
    copy = _copy_checkpoint(minilm_dir, tmp_path / "bin", weights=False)
    state = load_file(minilm_dir / "model.safetensors") if tensors == "as stored" else minilm.backbone.state_dict()
    assert ("embeddings.position_ids" in state) == (tensors == "as stored")
    torch.save(state, copy / "pytorch_model.bin")
    as_bin = E2Rank(str(copy))
    assert fingerprint.weight_files(copy) == [copy / "pytorch_model.bin"]
    assert as_bin.fingerprint()["weights_sha256"] == minilm.fingerprint()["weights_sha256"]


def test_a_tokenizer_stored_as_vocab_txt_only_is_the_same_tokenizer(minilm, minilm_dir, tmp_path):
    copy = _copy_checkpoint(minilm_dir, tmp_path / "vocab-only", weights=False)
    (copy / "model.safetensors").symlink_to(minilm_dir / "model.safetensors")
    (copy / "tokenizer.json").unlink()
    assert E2Rank(str(copy)).fingerprint() == {**minilm.fingerprint(), "model": str(copy)}


@pytest.mark.slow
def test_sharded_and_base_model_saves_of_a_causal_lm_are_one_model(make_tiny_qwen3, tmp_path):
    """A checkpoint saved as a causal LM (``model.``-prefixed tensors, an ``lm_head``, another
    ``architectures``), its base model saved in shards, and one changed tensor."""
    from transformers import AutoModel, AutoTokenizer
    causal = make_tiny_qwen3(tmp_path / "causal", causal_lm=True)
    backbone = AutoModel.from_pretrained(causal)
    backbone.save_pretrained(tmp_path / "sharded", max_shard_size="10MB")
    AutoTokenizer.from_pretrained(causal).save_pretrained(tmp_path / "sharded")
    assert len(fingerprint.weight_files(tmp_path / "sharded")) > 1
    identity = E2Rank(str(causal)).fingerprint()
    assert E2Rank(str(tmp_path / "sharded")).fingerprint() == {**identity, "model": str(tmp_path / "sharded")}
    with torch.no_grad():
        backbone.norm.weight[0] += 1
    backbone.save_pretrained(tmp_path / "changed")
    AutoTokenizer.from_pretrained(causal).save_pretrained(tmp_path / "changed")
    assert E2Rank(str(tmp_path / "changed")).fingerprint()["weights_sha256"] != identity["weights_sha256"]


# ---- the fingerprint cache beside a checkpoint ------------------------------------------------------

@pytest.mark.slow
def test_weights_replaced_with_their_mtime_restored_are_hashed_again(tiny_qwen_dir, other_tiny_qwen_dir, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setattr(fingerprint, "CACHE_FROM_BYTES", 0)
    copy = _copy_checkpoint(tiny_qwen_dir, tmp_path / "copy")
    before = E2Rank(str(copy)).fingerprint()["weights_sha256"]
    cache = (copy / fingerprint.CACHE_FILE).read_text()
    (copy / fingerprint.CACHE_FILE).write_text(cache.replace('"sha256": "', '"sha256": "planted'))
    assert E2Rank(str(copy)).fingerprint()["weights_sha256"] != before  # a hit is read, not hashed again
    (copy / fingerprint.CACHE_FILE).write_text(cache)
    weights = copy / "model.safetensors"
    old = weights.stat()
    shutil.copy2(other_tiny_qwen_dir / "model.safetensors", weights)  # as cp -p / rsync -t / tar -x do
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    after = E2Rank(str(copy)).fingerprint()["weights_sha256"]
    assert after != before
    assert after == E2Rank(str(other_tiny_qwen_dir)).fingerprint()["weights_sha256"]


# ---- the prompt-vector cache -------------------------------------------------------------------------

def _cache_file(cache_dir):
    (path,) = cache_dir.glob("prompts-*/vectors.sqlite3")
    return path


def test_models_differing_only_in_prompt_max_tokens_never_share_prompt_vectors(minilm_dir, tmp_path):
    """An encoder cuts a prompt at the model's prompt token limit: the same prompt text, another vector."""
    frame = pd.DataFrame({"prompt": [" ".join(f"gene{i} therapy" for i in range(100))]})
    wide = E2Rank(str(minilm_dir), prompt_max_tokens=256)
    narrow = E2Rank(str(minilm_dir), prompt_max_tokens=16)
    from_wide = wide.prompt_encoder(cache=tmp_path).encode(frame)["query_vec"][0]
    through_cache = narrow.prompt_encoder(cache=tmp_path).encode(frame)["query_vec"][0]
    fresh = narrow.prompt_encoder().encode(frame)["query_vec"][0]
    np.testing.assert_array_equal(through_cache, fresh)
    assert _cosine(from_wide, fresh) < 0.99
    assert len(list(tmp_path.glob("prompts-*"))) == 2
    # a cache directory of one model renamed into another's place is refused, not served
    wide_dir, narrow_dir = (cache_directory(tmp_path, m.prompt_vector_settings()) for m in (wide, narrow))
    shutil.copyfile(wide_dir / "vectors.sqlite3", narrow_dir / "vectors.sqlite3")
    with pytest.raises(CorruptArtifact, match="other settings"):
        narrow.prompt_encoder(cache=tmp_path)


class _CreatesFile:
    """Unpickling this creates ``path``: what a planted cache value could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_pickle_in_the_prompt_cache_is_never_unpickled(tiny_qwen, tmp_path):
    cached = tiny_qwen.prompt_encoder(cache=tmp_path / "cache")
    expected = np.stack(cached.encode(PROMPTS)["query_vec"])
    stats = tiny_qwen.stats
    np.testing.assert_array_equal(np.stack(cached.encode(PROMPTS)["query_vec"]), expected)
    assert tiny_qwen.stats == stats  # served from the cache, as raw float32
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_CreatesFile(str(marker)))
    with sqlite3.connect(_cache_file(tmp_path / "cache")) as db:
        db.execute("UPDATE vectors SET vector = ?", (payload,))
    db.close()
    with pytest.raises(CorruptArtifact, match=r"prompt-vector cache at .*prompts-.*never unpickled.*delete"):
        tiny_qwen.prompt_encoder(cache=tmp_path / "cache").encode(PROMPTS)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: unpickling it does create the file
    assert marker.exists()


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_a_damaged_prompt_cache_is_named_with_the_fix(tiny_qwen, tmp_path, damage):
    tiny_qwen.prompt_encoder(cache=tmp_path / "cache").encode(PROMPTS[:1])
    path = _cache_file(tmp_path / "cache")
    path.write_bytes(b"this is not a database\n" * 100 if damage == "garbage" else b"")
    with pytest.raises(CorruptArtifact, match=f"prompt-vector cache at {path.parent}.*delete the directory"):
        tiny_qwen.reranker(cache=tmp_path / "cache")


@pytest.mark.slow
def test_two_processes_writing_the_same_new_prompts_into_one_cache_both_succeed(tiny_qwen_dir, tiny_qwen, tmp_path):
    from fixtures.prompt_cache_writer import write_prompts
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=600)
    prompts = PROMPTS["prompt"].tolist()
    outs = [tmp_path / f"writer{i}" for i in range(2)]
    writers = [context.Process(target=write_prompts, args=(str(tiny_qwen_dir), str(tmp_path / "cache"), prompts,
                                                          barrier, str(out))) for out in outs]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    errors = [out.with_suffix(".err").read_text() for out in outs if out.with_suffix(".err").exists()]
    assert [writer.exitcode for writer in writers] == [0, 0], errors
    expected = tiny_qwen.encode_prompts(prompts)
    for out in outs:
        np.testing.assert_array_equal(np.load(out.with_suffix(".npy")), expected)
    with sqlite3.connect(_cache_file(tmp_path / "cache")) as db:
        assert db.execute("SELECT COUNT(*) FROM vectors").fetchone() == (len(prompts),)
    db.close()
