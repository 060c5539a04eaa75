"""The training loop, on Hugging Face ``accelerate``: the same code runs on CPU, one GPU, or many
(``accelerate launch`` / ``torchrun``, DeepSpeed through an accelerate config).

Texts are tokenised and embedded by ``E2Rank`` itself (``tokenize_*``, ``embed``), and the listwise
prompt is rendered by ``ListwisePrompt``: what is trained is exactly what the reranker reads.

The checkpoint is built in a private directory beside ``output`` and swapped into place only when it
is complete: a run that fails or is killed leaves the previous checkpoint as it was. The output is
locked and checked when ``train`` starts, not after hours of training.

A preempted run resumes: ``save_every`` writes accelerate's full state (weights, optimizer, scheduler,
RNG) with the step, the data position and a checksum of every file into ``.<output>.state/step-N``
(each built under a temporary name, fsync'd and renamed, so a kill or a power loss while saving leaves
the previous state the newest), and ``resume`` continues from the newest intact one (a damaged one is
named in a warning and the one before it used), refusing one made with other settings or data. The
loop is our own on accelerate rather than Hugging Face's ``Trainer``: that one brings its own
(non-atomic) checkpoint layout and saving, batches of tensors and a metric loop for classification,
while what we need beyond accelerate (atomic output, LoRA merge, sentence-transformers files, the PRF
reranker's nDCG) stays ours.
"""
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional, Set

import torch

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.core.fingerprint import CACHE_FILE as FINGERPRINT_CACHE
from pyterrier_e2rank.core.checks import positive_int
from pyterrier_e2rank.core.io import ArtifactLocked, CorruptArtifact, atomic_directory, fsync_tree, refuse_output_as_input
from pyterrier_e2rank.core.loading import (PROMPT_SETTING_NAMES, pooling_settings_file, resolve_model_path, write_pooling,
                                      write_prompt_settings)
from pyterrier_e2rank.core.prompt import ListwisePrompt

from .data import ListwiseExample, read_listwise
from .losses import INFONCE_TEMPERATURE, RANKNET_SCALE, gather_with_grad, info_nce, ranknet

#: Poolings an encoder can be retrained with (decoders keep last-token pooling, with its left padding).
ENCODER_POOLINGS = ("cls", "mean")

#: Files of a sentence-transformers directory that carry pooling and length settings.
SENTENCE_TRANSFORMERS_FILES = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling", "2_Normalize"]

#: The training record of a checkpoint; its ``"files"`` name the checkpoint's own top-level entries.
TRAINING_RECORD = "e2rank_training.json"

#: The record of a resumable state (``.<output>.state/step-N``): config, data digest, position, log, and
#: the size and SHA-256 of every other file of the state.
STATE_RECORD = "e2rank_state.json"

#: Resumable states kept: the newest, and one before it in case the newest's storage is damaged.
KEEP_STATES = 2

#: Settings a resumed run may change: where and how often it saves, logs and evaluates.
RESUMABLE_CHANGES = {"output", "overwrite", "resume", "save_every", "log_every", "log_with", "logging_dir",
                     "eval_every", "eval_data"}

#: Integer settings that must be >= 1 (those that may be None: when given).
_POSITIVE_INTS = ("batch_size", "gradient_accumulation", "embed_batch_size", "log_every")
_OPTIONAL_POSITIVE_INTS = ("max_steps", "query_max_length", "doc_max_length", "prompt_doc_max_tokens",
                           "prompt_max_tokens", "num_input_docs", "lora_rank", "save_every", "eval_every")


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
    max_grad_norm: float = 1.0  # DESIGN.md gives none; 1.0 is the usual choice. 0: not clipped (still logged)
    save_every: Optional[int] = None  # steps between resumable states in ``.<output>.state``
    resume: bool = False  # continue from the newest state (none: start from the beginning)
    eval_every: Optional[int] = None  # steps between evaluations on eval_data or the eval_fraction held out
    eval_data: Optional[str] = None  # stage-II records
    eval_fraction: Optional[float] = None  # of the training records, held out (chosen by ``seed``)
    log_with: Optional[List[str]] = None  # accelerate trackers: "tensorboard", "wandb", ...
    logging_dir: Optional[str] = None  # the trackers' files; default ``<output>.logs`` beside the output

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
        if not _number(self.max_grad_norm) or self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be a number >= 0, got {self.max_grad_norm!r}")
        if self.eval_fraction is not None and (not _number(self.eval_fraction) or not 0 < self.eval_fraction < 1):
            raise ValueError(f"eval_fraction must be a number > 0 and < 1, got {self.eval_fraction!r}")
        if self.eval_data is not None and self.eval_fraction is not None:
            raise ValueError("give eval_data or eval_fraction, not both")
        if (self.eval_every is None) != (self.eval_data is None and self.eval_fraction is None):
            raise ValueError("eval_every needs eval_data or eval_fraction, and they need eval_every")

    @property
    def state_dir(self) -> Path:
        """Where resumable states live: hidden, beside the output, removed once the checkpoint is in place."""
        output = Path(self.output)
        return output.parent / f".{output.name}.state"


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


def listwise_loss(model: E2Rank, prompt: ListwisePrompt, batch: List[ListwiseExample], config: TrainConfig, *,
                  gather: bool = True):
    """Stage I: InfoNCE. Stage II: InfoNCE + weight x RankNet on 10 x cos(pseudo-query, document).

    ``gather=False`` keeps InfoNCE's negatives to this process's batch (evaluation, where every process
    scores the same lists). Returns ``(loss, parts)`` with the unweighted parts for logging."""
    queries = model.embed(model.tokenize_queries([e.query for e in batch], max_length=config.query_max_length))
    flat = [doc for e in batch for doc in e.document]
    ids = model.tokenize_docs(flat, max_length=config.doc_max_length)
    docs = torch.cat([model.embed(ids[i:i + config.embed_batch_size])
                      for i in range(0, len(ids), config.embed_batch_size)])
    all_docs, offset = gather_with_grad(docs) if gather else (docs, 0)
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

    refuse_output_as_input(config.output, model=resolve_model_path(config.model), eval_data=config.eval_data)
    examples, eval_examples = _split(config, examples)
    # accelerate pins mixed precision for the life of a process; a second ``train()`` in the same
    # process (a notebook, the tests) may ask for another. The process group itself is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation,
                              mixed_precision="bf16" if config.bf16 else "no", log_with=config.log_with,
                              project_dir=(config.logging_dir or f"{config.output}.logs") if config.log_with else None)
    data_digest = _digest(examples)
    with contextlib.ExitStack() as stack:
        staging, resume_from = _claim_output(accelerator, config, data_digest, stack)
        _train(accelerator, config, examples, eval_examples, staging, resume_from, data_digest)
    accelerator.wait_for_everyone()  # every process returns once the checkpoint is in place
    if accelerator.is_main_process:
        shutil.rmtree(config.state_dir, ignore_errors=True)
    return Path(config.output)


def _split(config: TrainConfig, examples: List[ListwiseExample]):
    """``(training, evaluation)`` lists: ``eval_data``'s records, or ``eval_fraction`` of the training
    records held out, chosen by ``seed`` alone, so that every process and every resumed run holds out
    the same ones."""
    if config.eval_data is not None:
        return examples, read_listwise(config.eval_data)
    if config.eval_fraction is None:
        return examples, []
    held = max(1, round(config.eval_fraction * len(examples)))
    if held >= len(examples):
        raise ValueError(f"eval_fraction {config.eval_fraction} of {len(examples)} records leaves none to train on")
    order = list(range(len(examples)))
    random.Random(config.seed).shuffle(order)
    chosen = set(order[:held])
    return ([e for i, e in enumerate(examples) if i not in chosen], [e for i, e in enumerate(examples) if i in chosen])


def _digest(examples: List[ListwiseExample]) -> str:
    """SHA-256 of the training records, in order: a state is resumed only on the same data."""
    hashed = hashlib.sha256()
    for e in examples:
        hashed.update(json.dumps([e.query, e.document, e.ranking]).encode() + b"\n")
    return hashed.hexdigest()


def _claim_output(accelerator, config: TrainConfig, data_digest: str, stack: contextlib.ExitStack):
    """The main process locks ``config.output``, opens the staging directory the checkpoint is built in
    and finds the state to resume from; ``(staging, state)``, ``staging`` being ``None`` on the other
    processes, which never write the checkpoint. If the output may not be written, or the state does
    not belong to this run, every process raises its error now, before the model is even loaded."""
    staging, state, error = None, None, None
    if accelerator.is_main_process:
        try:
            staging = stack.enter_context(atomic_directory(config.output, owned=checkpoint_files,
                                                           overwrite=config.overwrite, what="checkpoint"))
            state = _resumable_state(config, data_digest, accelerator.num_processes)
        except (OSError, ValueError, ArtifactLocked) as e:
            error = e
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        error, state = broadcast_object_list([error, state])
    if error is not None:
        raise error
    return staging, state


def _states(config: TrainConfig) -> List[Path]:
    """Complete states, oldest first (a state is complete once renamed to ``step-N``)."""
    found = [p for p in config.state_dir.glob("step-*") if (p / STATE_RECORD).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _resumable_state(config: TrainConfig, data_digest: str, processes: int) -> Optional[str]:
    """The newest intact state when resuming (``None`` when there is none yet): a damaged one (an empty
    record or file after a power loss, a file whose checksum differs) is named in a warning and the one
    before it is used; ``CorruptArtifact`` names them all when none is intact. A state left by another
    run is refused, naming the settings that differ. Called with the output's lock held, so a dead
    writer's partial states (``.step-N.tmp``) are removed here."""
    for partial in config.state_dir.glob(".step-*"):
        shutil.rmtree(partial, ignore_errors=True)
    states = _states(config)
    if not states:
        return None
    if not config.resume:
        raise FileExistsError(f"an unfinished run's state is at {states[-1]}: pass --resume (resume=True) to "
                              f"continue it, or delete {config.state_dir} to start over")
    damaged = []
    for newest in reversed(states):
        try:
            saved = _checked_state(newest)
            break
        except CorruptArtifact as e:
            damaged.append(str(e))
            warnings.warn(f"{e}; resuming from an earlier state", stacklevel=2)
    else:
        raise CorruptArtifact(f"no intact state to resume from: {'; '.join(damaged)}. Delete {config.state_dir} "
                              f"to start over")
    ours = asdict(config)
    differ = [f"{name} {saved['config'].get(name)!r} (saved) vs {ours.get(name)!r} (now)"
              for name in sorted((set(ours) | set(saved["config"])) - RESUMABLE_CHANGES)
              if saved["config"].get(name) != ours.get(name)]
    if saved["data"] != data_digest:
        differ.append("the training records differ (another file, order or held-out split)")
    if saved["processes"] != processes:  # each process's data shard and RNG state are its own
        differ.append(f"processes {saved['processes']} (saved) vs {processes} (now)")
    if differ:
        raise ValueError(f"cannot resume from {newest}: it was made with other settings: {'; '.join(differ)}. "
                         f"Pass the same ones, or delete {config.state_dir} to start over")
    return str(newest)


def _checked_state(state: Path) -> dict:
    """The record of ``state``, once every file it lists has its recorded size and SHA-256;
    ``CorruptArtifact`` naming the first file that does not (or the record that cannot be read)."""
    record = state / STATE_RECORD
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        files = saved["files"]
        missing = [key for key in ("config", "data", "processes", "step", "epoch", "batches", "log")
                   if key not in saved]
        if not isinstance(files, dict) or missing:
            raise KeyError(", ".join(missing) or "files")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptArtifact(f"the state record {record} is damaged ({type(e).__name__}: {e})") from None
    found = _manifest(state)
    for name, expected in files.items():
        if found.get(name) != expected:
            seen = "missing" if name not in found else f"{found[name]['bytes']} bytes, sha256 {found[name]['sha256']}"
            raise CorruptArtifact(f"the state file {state / name} is damaged: {seen}, but its record lists "
                                  f"{expected['bytes']} bytes, sha256 {expected['sha256']}")
    return saved


def _manifest(state: Path) -> dict:
    """``{path relative to state: {"bytes", "sha256"}}`` of every file of a state but its record."""
    manifest = {}
    for path in sorted(p for p in state.rglob("*") if p.is_file() and p.name != STATE_RECORD):
        digest = hashlib.sha256()
        with open(path, "rb") as data:
            for block in iter(lambda: data.read(1 << 24), b""):
                digest.update(block)
        manifest[str(path.relative_to(state))] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return manifest


class _EpochShuffle(torch.utils.data.Sampler):
    """A permutation drawn from ``seed + epoch`` alone, so a resumed run replays the same order; the
    epoch is set by the loop (not ``set_epoch``, which accelerate calls with its own counting)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())


def _train(accelerator, config: TrainConfig, examples: List[ListwiseExample], eval_examples: List[ListwiseExample],
           staging: Optional[Path], resume_from: Optional[str], data_digest: str) -> None:
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

    sampler = _EpochShuffle(len(examples), config.seed)
    # its own generator: starting to iterate draws a seed from it, and drawing from the global one instead
    # would shift dropout's random numbers wherever a resumed run starts iterating (mid-epoch)
    loader = torch.utils.data.DataLoader(examples, batch_size=config.batch_size, sampler=sampler, collate_fn=list,
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
    accelerator.register_for_checkpointing(scheduler)

    log, step, epoch, done = [], 0, 0, 0  # done: batches of ``epoch`` already trained on
    if resume_from is not None:
        accelerator.load_state(resume_from)
        saved = json.loads((Path(resume_from) / STATE_RECORD).read_text(encoding="utf-8"))
        log, step, epoch, done = saved["log"], saved["step"], saved["epoch"], saved["batches"]
        if accelerator.is_main_process:
            print(f"resuming from {resume_from} (step {step} of {total_steps})", flush=True)
    accelerator.init_trackers(Path(config.output).name, config=_hyperparameters(config))
    progress = _progress(total_steps, step, accelerator)
    micro_losses, micro_parts = [], []
    while step < total_steps:
        sampler.epoch = epoch
        for batch in accelerator.skip_first_batches(loader, done) if done else loader:
            done += 1
            with accelerator.accumulate(backbone):
                loss, parts = listwise_loss(model, prompt, batch, config)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(backbone.parameters(), config.max_grad_norm or math.inf)
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
            if grad_norm is not None:  # the norm before clipping (DeepSpeed's, when it clips)
                record["grad_norm"] = float(grad_norm)
            micro_losses, micro_parts = [], []
            if config.eval_every and step % config.eval_every == 0:
                record.update(evaluate(model, prompt, eval_examples, config))
            log.append(record)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}")
            if accelerator.is_main_process and (step % config.log_every == 0 or step == total_steps
                                                or "eval_loss" in record):
                print(json.dumps(record), flush=True)
            if step >= total_steps:
                break
            if config.save_every and step % config.save_every == 0:
                at_end = done == len(loader)
                _save_state(accelerator, config, {"config": asdict(config), "data": data_digest,
                                                  "processes": accelerator.num_processes, "step": step,
                                                  "epoch": epoch + at_end, "batches": 0 if at_end else done,
                                                  "log": log})
        epoch, done = epoch + 1, 0
    if progress is not None:
        progress.close()
    accelerator.end_training()
    _save(accelerator, backbone, model, prompt, config, log, staging)


def _hyperparameters(config: TrainConfig) -> dict:
    """The config as trackers take it (TensorBoard's hparams: numbers, strings and booleans only)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in asdict(config).items()}


def evaluate(model: E2Rank, prompt: ListwisePrompt, examples: List[ListwiseExample], config: TrainConfig) -> dict:
    """``eval_loss`` (and its parts) as in training, and ``eval_ndcg_10``: nDCG@10 of the PRF reranker
    (``E2RankReranker`` with the prompt trained on, the documents in their given order as its first
    stage) with the teacher ranking as graded relevance (rank 1 of n gets n, the last 1).

    Every process evaluates every list: the forward passes stay in step across processes (as DeepSpeed
    ZeRO-3 needs) and InfoNCE sees each list's batch once; keep the held-out slice small."""
    import ir_measures
    import pandas as pd
    from ir_measures import nDCG

    from pyterrier_e2rank.core.reranker import E2RankReranker

    backbone = model.backbone
    backbone.eval()
    try:
        losses, parts = [], []
        with torch.no_grad():
            for start in range(0, len(examples), config.batch_size):
                batch = examples[start:start + config.batch_size]
                loss, batch_parts = listwise_loss(model, prompt, batch, config, gather=False)
                losses += [float(loss)] * len(batch)
                parts += [batch_parts] * len(batch)
        frame = pd.DataFrame([{"qid": str(q), "query": e.query, "docno": str(d), "text": text, "rank": d,
                               "score": -float(d)}
                              for q, e in enumerate(examples) for d, text in enumerate(e.document)])
        ranked = E2RankReranker(model, prompt, verbose=False)(frame)
    finally:
        backbone.train()
    qrels = pd.DataFrame([{"query_id": str(q), "doc_id": str(d), "relevance": int(grade)}
                          for q, e in enumerate(examples) for d, grade in enumerate(e.relevance())])
    run = ranked.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]]
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    return {"eval_loss": _mean(losses), **{f"eval_{k}": _mean([p[k] for p in parts]) for k in parts[0]},
            "eval_ndcg_10": float(ndcg)}


def _save_state(accelerator, config: TrainConfig, record: dict) -> None:
    """accelerate's state (every process writes its part: ZeRO-3 shards, its RNG) and our record (with
    the size and SHA-256 of every file), built as ``.step-N.tmp``, fsync'd and renamed to ``step-N`` once
    complete; then all but the newest ``KEEP_STATES`` are removed (renamed away first, so a kill while
    deleting never leaves a half state that looks whole)."""
    root = config.state_dir
    partial, final = root / f".step-{record['step']}.tmp", root / f"step-{record['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = {**record, "files": _manifest(partial)}
        (partial / STATE_RECORD).write_text(json.dumps(record), encoding="utf-8")
        fsync_tree(partial)  # the state's files are on disk before the rename publishes them
        shutil.rmtree(final, ignore_errors=True)
        os.rename(partial, final)
        for old in _states(config)[:-KEEP_STATES]:
            doomed = old.with_name(f".{old.name}.old")
            os.rename(old, doomed)
            shutil.rmtree(doomed)
    accelerator.wait_for_everyone()


def _mean(values) -> float:
    return sum(values) / len(values)


def _progress(total: int, done: int, accelerator):
    if not accelerator.is_main_process:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, desc="training", unit="step")


def _save(accelerator, backbone, model: E2Rank, prompt: ListwisePrompt, config: TrainConfig, log: list,
          output: Optional[Path]) -> None:
    """A plain Hugging Face directory (LoRA merged), with the tokenizer and the base model's
    sentence-transformers files, so that pooling and lengths are those of the base model (the pooling
    is the one trained with when ``config.pooling`` changed it), and the settings of the prompt trained
    with (``e2rank_prompt.json``: also those the base checkpoint brought, or the whole list's length,
    where the user gave none), which the checkpoint reranks with by default. The training record lists the
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
    settings = {name: getattr(prompt, name) for name in PROMPT_SETTING_NAMES}
    # the whole prompt's budget defaults to the model's positions: saved only where it was chosen, so that a
    # later E2Rank(checkpoint, prompt_max_tokens=...) is not overridden by a limit nobody set
    settings["prompt_max_tokens"] = config.prompt_max_tokens or model.prompt_settings.get("prompt_max_tokens")
    write_prompt_settings(output, settings)
    files = sorted({p.name for p in output.iterdir()} | {TRAINING_RECORD})
    (output / TRAINING_RECORD).write_text(json.dumps({"config": asdict(config), "log": log, "files": files},
                                                     indent=1))

