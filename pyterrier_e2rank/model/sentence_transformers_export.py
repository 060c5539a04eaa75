"""``E2Rank.save_sentence_transformers``: the checkpoint's files as they are, with a sentence-transformers
configuration that gives the model's query and document vectors (pt_docs/specification.rst §2-§4)."""
import json
import shutil
from pathlib import Path

from ..io import atomic_directory, refuse_output_as_input
from .fingerprint import local_checkpoint_dir
from .loading import write_pooling
from .text import doc_token_cap, format_query

#: What the export writes beside the checkpoint's files (a checkpoint's own copies are not taken).
CONFIGURATION = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling",
                 "2_Normalize")
#: The trainer's record is not copied: the export is no training checkpoint.
NOT_COPIED = ("e2rank_training.json",)
#: A one-word text whose ids, cut to ``PROBE_TOKENS``, the exported tokenizer must give as the model does.
PROBE = "supercalifragilisticexpialidocious"
PROBE_TOKENS = 4


def save_sentence_transformers(model, path, *, overwrite: bool = False) -> Path:
    """Write ``model`` (an ``E2Rank``) to ``path`` for ``SentenceTransformer(path)``: weights, config and tokenizer
    files copied unchanged; last-token models get ``<|endoftext|>`` appended after the cut by the tokenizer as
    sentence-transformers loads it, left padding, and the instruction as the ``"query"`` prompt.

    Raises:
        FileExistsError: ``path`` holds something else, or an export without ``overwrite``.
        ValueError: ``path`` is the checkpoint, or the tokenizer as exported would give other ids.
    """
    source = local_checkpoint_dir(str(model.checkpoint_path))
    refuse_output_as_input(path, model=source)
    files = [file for file in sorted(source.iterdir()) if file.is_file() and not file.name.startswith(".")
             and file.name not in CONFIGURATION + NOT_COPIED]
    with atomic_directory(path, owned=lambda _: {file.name for file in files} | set(CONFIGURATION),
                          overwrite=overwrite, what="sentence-transformers model") as staging:
        for file in files:
            shutil.copyfile(file, staging / file.name)
        _write_configuration(model, staging)
        _check_tokenizer(model, staging)
    return Path(path)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


def _write_configuration(model, directory: Path) -> None:
    """The modules (Transformer at the root, Pooling, Normalize if the model normalises), lengths and prompts."""
    modules = [("", "Transformer"), ("1_Pooling", "Pooling")]
    if model.pooling.normalize:
        modules.append(("2_Normalize", "Normalize"))
    _write_json(directory / "modules.json", [{"idx": i, "name": str(i), "path": folder,
                                              "type": f"sentence_transformers.models.{kind}"}
                                             for i, (folder, kind) in enumerate(modules)])
    for folder, _ in modules[1:]:
        (directory / folder).mkdir()
    _write_json(directory / "1_Pooling" / "config.json", {"word_embedding_dimension": model.dim,
                                                          "include_prompt": True})
    write_pooling(directory, model.pooling.mode)
    max_length = min(model.max_length, model.position_limit)
    settings = {"max_seq_length": max_length}
    if model.doc_max_words is not None and doc_token_cap(model.doc_max_words) < max_length:
        settings["document_length"] = doc_token_cap(model.doc_max_words)  # encode_document's token cap
    if model.pooling.last_token:
        settings["processor_kwargs"] = {"add_eos_token": True, "padding_side": "left",
                                        "eos_token": model.tokenizer.convert_ids_to_tokens(model.eos_token_id)}
    _write_json(directory / "sentence_bert_config.json", settings)
    prompts = {} if model.query_task is None else {"query": format_query("", model.query_task)}
    _write_json(directory / "config_sentence_transformers.json",
                {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"})


def _check_tokenizer(model, directory: Path) -> None:
    """Raise ``ValueError`` if the tokenizer, loaded as sentence-transformers loads it, cuts ``PROBE`` to other ids
    than ``model`` does (a tokenizer class that ignores ``add_eos_token``)."""
    from transformers import AutoTokenizer
    settings = json.loads((directory / "sentence_bert_config.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(directory, **settings.get("processor_kwargs", {}))
    exported = tokenizer([PROBE], truncation=True, max_length=PROBE_TOKENS)["input_ids"]
    expected = model.tokenize_docs([PROBE], max_length=PROBE_TOKENS)
    if exported != expected:
        raise ValueError(f"cannot export {model.model_name_or_path!r} for sentence-transformers: its tokenizer "
                         f"({type(tokenizer).__name__}) gives {exported} for {PROBE!r} cut to {PROBE_TOKENS} tokens, "
                         f"the model reads {expected}; nothing was written")
