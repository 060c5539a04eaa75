"""The training loop, on Hugging Face ``accelerate`` (CPU, one GPU, or many); texts are tokenised and embedded by
``E2Rank`` and the prompt rendered by ``ListwisePrompt``, as the reranker reads them."""
import contextlib
import hashlib
import json
import math
import random
from dataclasses import asdict, replace
from pathlib import Path
from statistics import fmean
from typing import Iterator, List, Optional

import torch

from ..model.e2rank import E2Rank
from pyterrier_e2rank.io import refuse_output_as_input
from pyterrier_e2rank.model.loading import pooling_settings_file, resolve_model_path

from .checkpoints import KEEP_STATES, claim_output, save_checkpoint, save_state
from .config import TrainConfig
from .data import ListwiseExample, read_listwise
from .evaluation import evaluate
from .losses import listwise_loss


def train(config: TrainConfig, examples: List[ListwiseExample]) -> Path:
    """Trains on ``examples`` and saves a Hugging Face directory that ``E2Rank(config.output)`` loads; returns
    its path. ``batch_size`` is per process, a step one optimizer update, ``epochs``/``max_steps`` count steps
    of this process's shard. Raises ``FileExistsError`` for an existing output without ``config.overwrite``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    refuse_output_as_input(config.output, model=resolve_model_path(config.model), eval_data=config.eval_data)
    examples, eval_examples = _split(config, examples)
    # accelerate pins mixed precision per process; a second train() here may ask for another (the process group stays)
    AcceleratorState._reset_state()
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation,
                              mixed_precision="bf16" if config.bf16 else "no", log_with=config.log_with,
                              project_config=ProjectConfiguration(
                                  project_dir=str(config.state_dir), automatic_checkpoint_naming=True,
                                  logging_dir=config.logging_dir or f"{config.output}.logs",
                                  total_limit=KEEP_STATES + 1))
    # the training records, in order: a state is resumed only on the same data
    data_digest = hashlib.sha256("".join(json.dumps([e.query, e.document, e.ranking]) + "\n" for e in examples)
                                 .encode()).hexdigest()
    with contextlib.ExitStack() as stack:
        staging, resumed = claim_output(accelerator, config, data_digest, stack)
        _train(accelerator, config, examples, eval_examples, staging, resumed, data_digest)
    accelerator.wait_for_everyone()  # every process returns once the checkpoint is in place, the states removed
    return Path(config.output)


def _split(config: TrainConfig, examples: List[ListwiseExample]):
    """``(training, evaluation)`` lists: ``eval_data``'s records, or ``eval_fraction`` of the training records
    held out, chosen by ``seed`` alone (the same in every process and resumed run)."""
    if config.eval_data is not None:
        return examples, read_listwise(config.eval_data)
    if config.eval_fraction is None:
        return examples, []
    held = max(1, round(config.eval_fraction * len(examples)))
    if held >= len(examples):
        raise ValueError(f"eval_fraction {config.eval_fraction} of {len(examples)} records leaves none to train on")
    chosen = set(random.Random(config.seed).sample(range(len(examples)), held))
    return ([e for i, e in enumerate(examples) if i not in chosen], [e for i, e in enumerate(examples) if i in chosen])


class _EpochShuffle(torch.utils.data.Sampler):
    """A permutation drawn from ``seed + epoch`` alone (a resumed run replays it); the loop sets ``epoch``."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())


def _train(accelerator, config: TrainConfig, examples: List[ListwiseExample], eval_examples: List[ListwiseExample],
           staging: Optional[Path], resumed: Optional[dict], data_digest: str) -> None:
    """The training loop on every process; the main one saves the checkpoint into ``staging``."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
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
    # its own generator: iterating draws a seed, which from the global one would shift dropout after a resume
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
    if resumed is not None:
        accelerator.load_state(resumed["state"])
        log, step, epoch, done = resumed["log"], resumed["step"], resumed["epoch"], resumed["batches"]
        if accelerator.is_main_process:
            print(f"resuming from {resumed['state']} (step {step} of {total_steps})", flush=True)
    # TensorBoard's hparams take numbers, strings and booleans only
    accelerator.init_trackers(Path(config.output).name, config={
        k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in asdict(config).items()})
    progress = tqdm(total=total_steps, initial=step, desc="training", unit="step",
                    disable=not accelerator.is_main_process)
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
            record = {"step": step, "loss": fmean(micro_losses),
                      **{k: fmean([p[k] for p in micro_parts]) for k in micro_parts[0]}, "lr": lr}
            if grad_norm is not None:  # the norm before clipping (DeepSpeed's, when it clips)
                record["grad_norm"] = float(grad_norm)
            micro_losses, micro_parts = [], []
            if config.eval_every and step % config.eval_every == 0:
                record.update(evaluate(model, prompt, eval_examples, config))
            log.append(record)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            if accelerator.is_main_process and (step % config.log_every == 0 or step == total_steps
                                                or "eval_loss" in record):
                print(json.dumps(record), flush=True)
            if step >= total_steps:
                break
            if config.save_every and step % config.save_every == 0:
                at_end = done == len(loader)
                save_state(accelerator, config, {"config": asdict(config), "data": data_digest,
                                                 "processes": accelerator.num_processes, "step": step,
                                                 "epoch": epoch + at_end, "batches": 0 if at_end else done,
                                                 "log": log})
        epoch, done = epoch + 1, 0
    progress.close()
    accelerator.end_training()
    save_checkpoint(accelerator, backbone, model, prompt, config, log, staging)
