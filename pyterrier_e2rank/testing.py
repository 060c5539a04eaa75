"""Random models and synthetic indexes for tests and benchmarks (as ``pyterrier.testing``); the library itself
never imports this module."""
from pathlib import Path

import numpy as np
import torch

from pyterrier_e2rank.index.indexer import IndexWriter

#: E2Rank-0.6B's backbone shape (Qwen3-0.6B), with the number of layers chosen per use.
E2RANK_06B_SHAPE = dict(hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8,
                        head_dim=128, max_position_embeddings=32768, rope_theta=1000000, tie_word_embeddings=True)

#: A Qwen3 small enough for tests on a CPU, with room for long prompts.
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=8192)


def qwen3_shaped(directory, tokenizer, num_layers: int, *, shape: dict = E2RANK_06B_SHAPE, causal_lm: bool = False,
                 seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """A random-weight Qwen3 of ``shape`` with ``num_layers`` layers, saved in ``dtype`` to ``directory`` with the
    tokenizer (and chat template) of the folder ``tokenizer``; a ``directory`` that holds a model is kept.
    Returns ``directory``; raises ``FileNotFoundError`` when ``tokenizer`` is absent."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, Qwen3Config
    if not Path(tokenizer).exists():
        raise FileNotFoundError(f"{tokenizer}: no tokenizer folder")
    directory = Path(directory)
    if not (directory / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        config = Qwen3Config(vocab_size=len(tokenizer), num_hidden_layers=num_layers, **shape)
        torch.manual_seed(seed)
        model = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config).to(dtype)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    """``n`` float32 unit vectors, each a random one of ``centres`` plus noise of its norm (cosine ~0.7)."""
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def build_clustered_index(path, *, num_docs: int, dim: int, num_centres: int, seed: int = 0, chunk: int = 100_000):
    """An index at ``path`` (replaced) of ``num_docs`` ``clustered`` vectors, docnos ``"0"``, ``"1"``, ...
    Returns the index and the ``num_centres`` unit centres (to draw queries from the same mixture)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_centres, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with IndexWriter(path, dim, {"model": "synthetic-clustered", "dim": dim}, overwrite=True) as writer:
        for start in range(0, num_docs, chunk):
            n = min(chunk, num_docs - start)
            writer.add([str(i) for i in range(start, start + n)], clustered(rng, n, dim, centres))
        return writer.finish(), centres
