"""What a training run is given: ``TrainConfig``, its ranges checked when it is made, and which of its
settings a resumed run may change (the rest are carried by every resumable state and checkpoint record)."""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from pyterrier_e2rank.checks import positive_int

INFONCE_TEMPERATURE = 0.03  # the paper's InfoNCE temperature


#: Poolings an encoder can be retrained with (decoders keep last-token pooling, with its left padding).
ENCODER_POOLINGS = ("cls", "mean")

#: Settings a resumed run may change: where and how often it saves, logs and evaluates.
RESUMABLE_CHANGES = {"output", "overwrite", "resume", "save_every", "log_every", "log_with", "logging_dir",
                     "eval_every", "eval_data"}

#: Integer settings that must be >= 1 (those that may be None: when given).
_POSITIVE_INTS = ("batch_size", "gradient_accumulation", "embed_batch_size", "log_every")
_OPTIONAL_POSITIVE_INTS = ("max_steps", "query_max_length", "doc_max_length", "prompt_doc_max_tokens",
                           "prompt_max_tokens", "num_input_docs", "lora_rank", "save_every", "eval_every")
#: Number settings, each with the range it must lie in (``eval_fraction`` may also be None).
_RANGES = {"epochs": ("> 0", lambda v: v > 0), "lr": ("> 0", lambda v: v > 0), "temperature": ("> 0", lambda v: v > 0),
           "warmup_ratio": ("between 0 and 1", lambda v: 0 <= v <= 1), "max_grad_norm": (">= 0", lambda v: v >= 0),
           "eval_fraction": ("> 0 and < 1", lambda v: 0 < v < 1)}


@dataclass
class TrainConfig:
    """Defaults follow the authors' stage-II script (pt_docs/specification.rst §9), scaled to one process."""
    model: str
    output: str
    stage: int = 2
    epochs: float = 1.0
    max_steps: Optional[int] = None
    batch_size: int = 8
    gradient_accumulation: int = 1
    lr: float = 5e-6
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    infonce_weight: float = 1.0
    ranknet_weight: float = 2.0
    temperature: float = INFONCE_TEMPERATURE
    # embedding lengths; None: the model's (authors: 512 queries, 1024 documents)
    query_max_length: Optional[int] = None
    doc_max_length: Optional[int] = None
    # the listwise prompt (saved with the checkpoint as its defaults): documents in it (None: the whole
    # list, as the authors), a per-document and a total token budget, the task sentence; None: the base
    # checkpoint's (its e2rank_prompt.json), else the paper's
    num_input_docs: Optional[int] = None
    prompt_doc_max_tokens: Optional[int] = None
    prompt_max_tokens: Optional[int] = None
    rerank_task: Optional[str] = None
    pooling: Optional[str] = None  # encoders only: "cls" or "mean" instead of the base model's pooling
    bf16: bool = False
    gradient_checkpointing: bool = False
    lora_rank: Optional[int] = None
    embed_batch_size: int = 64
    seed: int = 0
    log_every: int = 10
    overwrite: bool = False  # replace an existing checkpoint at ``output``
    max_grad_norm: float = 1.0  # the paper gives none; 1.0 is the usual choice. 0: not clipped (still logged)
    save_every: Optional[int] = None  # steps between resumable states in ``.<output>.state``
    resume: bool = False  # continue from the newest state (none: start from the beginning)
    eval_every: Optional[int] = None  # steps between evaluations on eval_data or the eval_fraction held out
    eval_data: Optional[str] = None  # stage-II records
    eval_fraction: Optional[float] = None  # of the training records, held out (chosen by ``seed``)
    log_with: Optional[List[str]] = None  # accelerate trackers: "tensorboard", "wandb", ...
    logging_dir: Optional[str] = None  # the trackers' files; default ``<output>.logs`` beside the output

    def __post_init__(self):
        """The CLI's ranges; ``ValueError`` naming the setting."""
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.pooling not in (None, *ENCODER_POOLINGS):
            raise ValueError(f"pooling must be one of {ENCODER_POOLINGS}, got {self.pooling!r}")
        for name in _POSITIVE_INTS + _OPTIONAL_POSITIVE_INTS:
            setattr(self, name, positive_int(getattr(self, name), name, allow_none=name in _OPTIONAL_POSITIVE_INTS))
        for name, (wanted, accept) in _RANGES.items():
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not (number and accept(value)) and not (name == "eval_fraction" and value is None):
                raise ValueError(f"{name} must be a number {wanted}, got {value!r}")
        if self.eval_data is not None and self.eval_fraction is not None:
            raise ValueError("give eval_data or eval_fraction, not both")
        if (self.eval_every is None) != (self.eval_data is None and self.eval_fraction is None):
            raise ValueError("eval_every needs eval_data or eval_fraction, and they need eval_every")

    @property
    def state_dir(self) -> Path:
        """Where resumable states live: hidden, beside the output."""
        output = Path(self.output)
        return output.parent / f".{output.name}.state"
