"""What a training run writes: resumable states every ``save_every`` steps (accelerate's, completed by our
record ``STATE_RECORD``), and the checkpoint at the end, built aside and swapped into place (pt_docs/training.rst)."""
import contextlib
import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Set

from ..model.e2rank import E2Rank
from pyterrier_e2rank.model.fingerprint import CACHE_FILE as FINGERPRINT_CACHE
from pyterrier_e2rank.io import (ArtifactLocked, CorruptArtifact, atomic_directory, atomic_file,
                                      file_sha256, fsync_tree, writer_lock)
from pyterrier_e2rank.model.loading import (PROMPT_SETTING_NAMES, resolve_model_path, write_pooling,
                                           write_prompt_settings)
from pyterrier_e2rank.rerank.prompt import ListwisePrompt

from .config import RESUMABLE_CHANGES, TrainConfig

#: Files of a sentence-transformers directory that carry pooling and length settings.
SENTENCE_TRANSFORMERS_FILES = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling", "2_Normalize"]

#: The training record of a checkpoint; its ``"files"`` name the checkpoint's own top-level entries.
TRAINING_RECORD = "e2rank_training.json"

#: The record that marks a resumable state complete: config, data digest, position, log, each file's size and SHA-256.
STATE_RECORD = "e2rank_state.json"

#: Complete states kept while the next one is written (accelerate's ``total_limit`` counts that one too).
KEEP_STATES = 2


def checkpoint_files(directory: Path) -> Set[str]:
    """The top-level entries of a checkpoint this trainer wrote (its training record's, and the fingerprint
    cache); none for any other directory, which is then never replaced."""
    try:
        files = json.loads((Path(directory) / TRAINING_RECORD).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if not isinstance(files, list):
        return set()
    return {TRAINING_RECORD, FINGERPRINT_CACHE, *(name for name in files if isinstance(name, str))}


def claim_output(accelerator, config: TrainConfig, data_digest: str, stack: contextlib.ExitStack):
    """``(staging directory, record of the state to resume from)``: the main process locks ``config.output`` and
    opens the staging directory (held by ``stack``; ``None`` on the other processes). An output that may not be
    written or a state of another run is raised in every process, before the model is loaded."""
    staging, state, error = None, None, None
    if accelerator.is_main_process:
        try:
            stack.enter_context(writer_lock(config.output))
            stack.enter_context(_states_removed_once_saved(config))
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


@contextlib.contextmanager
def _states_removed_once_saved(config: TrainConfig):
    """Removes the run's states when the block ends without an error; a failed run keeps them."""
    yield
    shutil.rmtree(config.state_dir, ignore_errors=True)


def _state_folders(config: TrainConfig) -> List[Path]:
    """The folders accelerate saved states in, oldest first (its naming: ``checkpoint_<step>``)."""
    found = (config.state_dir / "checkpoints").glob("checkpoint_*")
    return sorted((p for p in found if p.name.split("_")[1].isdigit()), key=lambda p: int(p.name.split("_")[1]))


def _resumable_state(config: TrainConfig, data_digest: str, processes: int) -> Optional[dict]:
    """The record of the newest intact state, its folder as ``"state"`` (``None`` when there is none yet;
    incomplete ones are removed), a damaged one skipped with a warning. Raises ``FileExistsError`` for a state
    without ``resume``, ``CorruptArtifact`` when none is intact, ``ValueError`` naming another run's settings."""
    states = []
    for folder in _state_folders(config):
        if (folder / STATE_RECORD).is_file():
            states.append(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
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
    return {**saved, "state": str(newest)}


def _checked_state(state: Path) -> dict:
    """The record of ``state``; ``CorruptArtifact`` naming it or the first file without its recorded size
    and SHA-256."""
    record = state / STATE_RECORD
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        files = dict(saved["files"])
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
    return {str(path.relative_to(state)): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(state.rglob("*")) if path.is_file() and path.name != STATE_RECORD}


def save_state(accelerator, config: TrainConfig, record: dict) -> None:
    """accelerate's state after step ``record["step"]`` (every process writes its part), then our record of
    it once its files are fsync'd. A folder of that name already there (a damaged state, newer than the one
    resumed from) is replaced."""
    state = Path(accelerator.project_dir) / "checkpoints" / f"checkpoint_{record['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(state, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.project_configuration.iteration = record["step"]
    accelerator.save_state()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = {**record, "files": _manifest(state)}
        fsync_tree(state)  # the state's files are on disk before the record that declares them complete
        with atomic_file(state / STATE_RECORD) as out:
            json.dump(record, out)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator, backbone, model: E2Rank, prompt: ListwisePrompt, config: TrainConfig,
                    log: list, output: Optional[Path]) -> None:
    """A Hugging Face directory in ``output`` (LoRA merged) with the tokenizer, the base model's
    sentence-transformers files (the pooling trained with), the prompt settings trained with and the
    training record listing its entries. Every process takes part; the main one writes."""
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
    settings["prompt_max_tokens"] = config.prompt_max_tokens or model.prompt_settings.get("prompt_max_tokens")
    write_prompt_settings(output, settings)
    files = sorted({p.name for p in output.iterdir()} | {TRAINING_RECORD})
    (output / TRAINING_RECORD).write_text(json.dumps({"config": asdict(config), "log": log, "files": files},
                                                     indent=1))

