"""The training loop, on Hugging Face ``accelerate``: the same code runs on CPU, one GPU, or many
(``accelerate launch`` / ``torchrun``, DeepSpeed through an accelerate config).

Texts are tokenised and embedded by ``E2Rank`` itself (``tokenize_*``, ``embed``), and the listwise
prompt is rendered by ``ListwisePrompt``: what is trained is exactly what the reranker reads.

The checkpoint is built in a private directory beside ``output`` and swapped into place only when it
is complete: a run that fails or is killed leaves the previous checkpoint as it was. The output is
locked and checked when ``train`` starts, not after hours of training.
"""
import contextlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import List, Optional, Set

import torch

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.fingerprint import CACHE_FILE as FINGERPRINT_CACHE
from pyterrier_e2rank.checks import positive_int
from pyterrier_e2rank.io import ArtifactLocked, atomic_directory, refuse_output_as_input
from pyterrier_e2rank.loading import pooling_settings_file, resolve_model_path, write_pooling, write_prompt_settings
from pyterrier_e2rank.prompt import DEFAULT_RERANK_TASK, ListwisePrompt

from .data import ListwiseExample
from .losses import INFONCE_TEMPERATURE, RANKNET_SCALE, gather_with_grad, info_nce, ranknet

#: Poolings an encoder can be retrained with (decoders keep last-token pooling, with its left padding).
ENCODER_POOLINGS = ("cls", "mean")

#: Files of a sentence-transformers directory that carry pooling and length settings.
SENTENCE_TRANSFORMERS_FILES = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling", "2_Normalize"]

#: The training record of a checkpoint; its ``"files"`` name the checkpoint's own top-level entries.
TRAINING_RECORD = "e2rank_training.json"

#: Integer settings that must be >= 1 (those that may be None: when given).
_POSITIVE_INTS = ("batch_size", "gradient_accumulation", "embed_batch_size", "log_every")
_OPTIONAL_POSITIVE_INTS = ("max_steps", "query_max_length", "doc_max_length", "prompt_doc_max_tokens",
                           "prompt_max_tokens", "num_input_docs", "lora_rank")


@dataclass
class TrainConfig:
    """Defaults follow the authors' stage-II script (DESIGN.md §1), scaled to one process."""
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
    query_max_length: Optional[int] = None  # embedding lengths; None: the model's (authors: 512 queries, 1024 documents)
    doc_max_length: Optional[int] = None
    # the listwise prompt (saved with the checkpoint as its defaults): documents in it (None: the whole
    # list, as the authors), a per-document and a total token budget
    num_input_docs: Optional[int] = None
    prompt_doc_max_tokens: Optional[int] = None
    prompt_max_tokens: Optional[int] = None
    rerank_task: str = DEFAULT_RERANK_TASK
    pooling: Optional[str] = None  # encoders only: "cls" or "mean" instead of the base model's pooling
    bf16: bool = False
    gradient_checkpointing: bool = False
    lora_rank: Optional[int] = None
    embed_batch_size: int = 64
    seed: int = 0
    log_every: int = 10
    overwrite: bool = False  # replace an existing checkpoint at ``output``

    def __post_init__(self):
        """The CLI's ranges, so that the Python API cannot train 0 steps, a whole epoch for
        ``max_steps=0``, or without LoRA for ``lora_rank=0``, either."""
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.pooling not in (None, *ENCODER_POOLINGS):
            raise ValueError(f"pooling must be one of {ENCODER_POOLINGS}, got {self.pooling!r}")
        for name in _POSITIVE_INTS:
            setattr(self, name, positive_int(getattr(self, name), name))
        for name in _OPTIONAL_POSITIVE_INTS:
            setattr(self, name, positive_int(getattr(self, name), name, allow_none=True))
        for name in ("epochs", "lr", "temperature"):
            if not _positive_number(getattr(self, name)):
                raise ValueError(f"{name} must be a number > 0, got {getattr(self, name)!r}")
        if not _number(self.warmup_ratio) or not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio!r}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value) -> bool:
    return _number(value) and value > 0


def checkpoint_files(directory: Path) -> Set[str]:
    """The top-level entries of an existing directory that belong to a checkpoint this trainer wrote
    (listed in its training record, plus the fingerprint cache written beside large weights later);
    none for any other directory, which is then never replaced."""
    try:
        files = json.loads((Path(directory) / TRAINING_RECORD).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if not isinstance(files, list):
        return set()
    return {TRAINING_RECORD, FINGERPRINT_CACHE, *(name for name in files if isinstance(name, str))}


def listwise_loss(model: E2Rank, prompt: ListwisePrompt, batch: List[ListwiseExample], config: TrainConfig):
    """Stage I: InfoNCE. Stage II: InfoNCE + weight x RankNet on 10 x cos(pseudo-query, document).

    Returns ``(loss, parts)`` with the unweighted parts for logging."""
    queries = model.embed(model.tokenize_queries([e.query for e in batch], max_length=config.query_max_length))
    flat = [doc for e in batch for doc in e.document]
    ids = model.tokenize_docs(flat, max_length=config.doc_max_length)
    docs = torch.cat([model.embed(ids[i:i + config.embed_batch_size])
                      for i in range(0, len(ids), config.embed_batch_size)])
    all_docs, offset = gather_with_grad(docs)
    starts = [0]
    for e in batch[:-1]:
        starts.append(starts[-1] + len(e.document))
    positives = torch.tensor([offset + s + e.ranking[0] - 1 for s, e in zip(starts, batch)], device=docs.device)
    contrastive = info_nce(queries, all_docs, positives, config.temperature)
    parts = {"infonce": float(contrastive.detach())}
    if config.stage == 1:
        return config.infonce_weight * contrastive, parts

    rendered = [prompt.render(model.tokenizer, e.query, e.document) for e in batch]
    pseudo_queries = model.embed(model.tokenize_prompts(rendered))
    slate = max(len(e.document) for e in batch)
    scores = torch.zeros((len(batch), slate), device=docs.device)
    relevance = torch.zeros((len(batch), slate), device=docs.device)
    mask = torch.zeros((len(batch), slate), dtype=torch.bool, device=docs.device)
    for row, (start, e) in enumerate(zip(starts, batch)):
        n = len(e.document)
        scores[row, :n] = RANKNET_SCALE * (docs[start:start + n] @ pseudo_queries[row])
        relevance[row, :n] = torch.tensor(e.relevance(), device=docs.device)
        mask[row, :n] = True
    pairwise = ranknet(scores, relevance, mask)
    parts["ranknet"] = float(pairwise.detach())
    return config.infonce_weight * contrastive + config.ranknet_weight * pairwise, parts


def train(config: TrainConfig, examples: List[ListwiseExample]) -> Path:
    """Trains and saves a Hugging Face directory that ``E2Rank(config.output)`` loads.

    ``config.batch_size`` is per process; a step is one optimizer update (``gradient_accumulation``
    batches). ``epochs``/``max_steps`` count steps of this process's shard, so ``torchrun`` with N
    processes sees each example once per epoch, in N times fewer steps.

    An existing checkpoint at ``config.output`` is replaced only with ``config.overwrite``; a directory
    that is not a checkpoint, or the model itself, never."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    refuse_output_as_input(config.output, model=resolve_model_path(config.model))
    # accelerate pins mixed precision for the life of a process; a second ``train()`` in the same
    # process (a notebook, the tests) may ask for another. The process group itself is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation,
                              mixed_precision="bf16" if config.bf16 else "no")
    with contextlib.ExitStack() as stack:
        staging = _claim_output(accelerator, config, stack)
        _train(accelerator, config, examples, staging)
    accelerator.wait_for_everyone()  # every process returns once the checkpoint is in place
    return Path(config.output)


def _claim_output(accelerator, config: TrainConfig, stack: contextlib.ExitStack) -> Optional[Path]:
    """The main process locks ``config.output`` and opens the staging directory the checkpoint is built
    in (``None`` on the others, which never write); if the output may not be written, every process
    raises its error now, before the model is even loaded."""
    staging, error = None, None
    if accelerator.is_main_process:
        try:
            staging = stack.enter_context(atomic_directory(config.output, owned=checkpoint_files,
                                                           overwrite=config.overwrite, what="checkpoint"))
        except (OSError, ArtifactLocked) as e:
            error = e
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        error = broadcast_object_list([error])[0]
    if error is not None:
        raise error
    return staging


def _train(accelerator, config: TrainConfig, examples: List[ListwiseExample], staging: Optional[Path]) -> None:
    """The training loop on every process; the main one saves the checkpoint into ``staging``."""
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(config.seed)
    model = E2Rank(config.model, device=str(accelerator.device), dtype=torch.float32)
    if config.pooling is not None:
        if model.pooling.last_token or pooling_settings_file(resolve_model_path(config.model)) is None:
            raise ValueError(f"--pooling is for sentence-transformers encoders (with a Pooling module); "
                             f"{config.model} has none or pools its last token")
        model.pooling = replace(model.pooling, mode=config.pooling)
    prompt = model.listwise_prompt(num_input_docs=config.num_input_docs or max(len(e.document) for e in examples),
                                   task=config.rerank_task, prompt_doc_max_tokens=config.prompt_doc_max_tokens,
                                   prompt_max_tokens=config.prompt_max_tokens)
    backbone = model.backbone
    if config.gradient_checkpointing:
        enable = getattr(backbone, "activation_checkpointing_enable", None) or backbone.gradient_checkpointing_enable
        enable()
    if config.lora_rank:
        from peft import LoraConfig, get_peft_model
        backbone = get_peft_model(backbone, LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                                                       target_modules="all-linear"))
    backbone.train()

    loader = torch.utils.data.DataLoader(examples, batch_size=config.batch_size, shuffle=True, collate_fn=list,
                                         generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    backbone, prepared_optimizer, loader = accelerator.prepare(backbone, optimizer, loader)
    model.backbone = backbone
    # counted on this process's shard of the data, after ``prepare``
    steps_per_epoch = max(1, math.ceil(len(loader) / config.gradient_accumulation))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))  # max_steps: None or >= 1
    # stepped by hand once per optimizer update (not by accelerate, which would step it per process)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    log = []
    progress = _progress(total_steps, accelerator)
    step, micro_losses, micro_parts = 0, [], []
    while step < total_steps:
        for batch in loader:
            with accelerator.accumulate(backbone):
                loss, parts = listwise_loss(model, prompt, batch, config)
                accelerator.backward(loss)
                prepared_optimizer.step()
                prepared_optimizer.zero_grad()
            micro_losses.append(float(loss.detach()))
            micro_parts.append(parts)
            if not accelerator.sync_gradients:
                continue
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            record = {"step": step, "loss": _mean(micro_losses),
                      **{k: _mean([p[k] for p in micro_parts]) for k in micro_parts[0]}, "lr": lr}
            micro_losses, micro_parts = [], []
            log.append(record)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}")
            if accelerator.is_main_process and (step % config.log_every == 0 or step == total_steps):
                print(json.dumps(record), flush=True)
            if step >= total_steps:
                break
    if progress is not None:
        progress.close()
    _save(accelerator, backbone, model, config, log, staging)


def _mean(values) -> float:
    return sum(values) / len(values)


def _progress(total: int, accelerator):
    if not accelerator.is_main_process:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="training", unit="step")


def _save(accelerator, backbone, model: E2Rank, config: TrainConfig, log: list, output: Optional[Path]) -> None:
    """A plain Hugging Face directory (LoRA merged), with the tokenizer and the base model's
    sentence-transformers files, so that pooling and lengths are those of the base model (the pooling
    is the one trained with when ``config.pooling`` changed it). The training record lists the
    entries written, so that a later ``overwrite`` replaces this checkpoint and nothing else.

    Every process takes part (DeepSpeed ZeRO-3 gathers the sharded weights); the main one writes
    (``output``, the staging directory, is ``None`` on the others)."""
    accelerator.wait_for_everyone()
    lora = bool(config.lora_rank)
    state_dict = None if lora else accelerator.get_state_dict(backbone)
    if not accelerator.is_main_process:
        return
    backbone = accelerator.unwrap_model(backbone)
    if lora:
        backbone = backbone.merge_and_unload()
    backbone.save_pretrained(output, state_dict=state_dict)
    model.tokenizer.save_pretrained(output)
    base = Path(resolve_model_path(config.model))
    for name in SENTENCE_TRANSFORMERS_FILES:
        source = base / name
        if source.is_dir():
            shutil.copytree(source, output / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy(source, output / name)
    if config.pooling is not None:
        write_pooling(output, model.pooling.mode)
    write_prompt_settings(output, {"num_input_docs": config.num_input_docs, "task": config.rerank_task,
                                   "prompt_doc_max_tokens": config.prompt_doc_max_tokens,
                                   "prompt_max_tokens": config.prompt_max_tokens})
    files = sorted({p.name for p in output.iterdir()} | {TRAINING_RECORD})
    (output / TRAINING_RECORD).write_text(json.dumps({"config": asdict(config), "log": log, "files": files},
                                                     indent=1))

