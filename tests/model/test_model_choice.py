"""pick_model, the notebooks' one switch between E2Rank-0.6B and the offline MiniLM: each branch and its reason."""
import pytest

from pyterrier_e2rank.model.loading import FALLBACK_MODEL, MODEL_VARIABLE, pick_model


@pytest.fixture
def gpu(monkeypatch):
    """Whether torch sees a GPU, set by the test (``gpu(True)``); the variable is unset."""
    import torch
    monkeypatch.delenv(MODEL_VARIABLE, raising=False)
    return lambda present: monkeypatch.setattr(torch.cuda, "is_available", lambda: present)


def test_the_variable_wins_and_a_missing_path_is_named(monkeypatch, minilm_dir, tmp_path):
    monkeypatch.setenv(MODEL_VARIABLE, str(minilm_dir))
    assert pick_model() == (str(minilm_dir), f"set by ${MODEL_VARIABLE}")
    monkeypatch.setenv(MODEL_VARIABLE, str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        pick_model()


def test_without_a_gpu_the_fallback_and_why(gpu, tiny_qwen_dir):
    gpu(False)
    name, reason = pick_model(str(tiny_qwen_dir))
    assert name == FALLBACK_MODEL and "no GPU" in reason and MODEL_VARIABLE in reason


def test_with_a_gpu_a_loadable_model_is_chosen(gpu, tiny_qwen_dir):
    gpu(True)
    assert pick_model(str(tiny_qwen_dir)) == (str(tiny_qwen_dir), "a GPU is present and the model can be loaded")


def test_with_a_gpu_an_unloadable_model_falls_back_naming_the_error(gpu, monkeypatch):
    import huggingface_hub
    gpu(True)
    name, reason = pick_model("nobody-e2rank/no-such-model", timeout=2)  # offline: no answer; online: not found
    assert name == FALLBACK_MODEL and "nobody-e2rank/no-such-model cannot be loaded" in reason
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name, reason = pick_model("nobody-e2rank/no-such-model")
    assert name == FALLBACK_MODEL and "not found locally" in reason
