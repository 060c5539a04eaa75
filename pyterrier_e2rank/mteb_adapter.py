"""MTEB: ``E2RankMTEB`` (an ``E2Rank`` model as an ``mteb`` encoder, its texts instructed as in the authors' MTEB
runs) and ``mteb_task`` (any dataset the library reads as an mteb retrieval task); pt_docs/retrieval-and-reranking.rst,
"MTEB"."""
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.types import PromptType

from .data import corpus_iter, dataset, dataset_part

_CQADUPSTACK = ("Given a question, retrieve detailed question descriptions from Stackexchange that are duplicates to "
                "the given question")
#: Retrieval tasks whose documents the authors instruct too (``eval_mteb/scripts/task_prompts.json``), by mteb name.
INSTRUCTED_DOCUMENTS = {"ArguAna": "Given a claim, find documents that refute the claim",
                        "CQADupstackGamingRetrieval": _CQADUPSTACK, "CQADupstackUnixRetrieval": _CQADUPSTACK}
#: Instructions by task type that replace a task's own, as in the authors' runs.
TYPE_INSTRUCTIONS = {"STS": "Retrieve semantically similar text", "PairClassification":
                     "Retrieve semantically similar text", "BitextMining": "Retrieve parallel sentences"}
#: The query instruction of a retrieval task that has none (the authors' wording).
RETRIEVAL_FALLBACK = "Retrieval relevant passage for the given query."


def mteb_instruction(task_metadata, prompt_type: Optional[PromptType]) -> Optional[str]:
    """The instruction of the texts of one ``encode`` call of an mteb task (``None``: plain documents)."""
    name, kind = task_metadata.name, task_metadata.type
    if kind in TYPE_INSTRUCTIONS:
        return TYPE_INSTRUCTIONS[kind]
    prompt = task_metadata.prompt
    task = INSTRUCTED_DOCUMENTS.get(name) or (prompt.get("query") if isinstance(prompt, dict) else prompt)
    if name.startswith("CQADupstack"):  # the authors' table has it; mteb's subtasks have none
        task = _CQADUPSTACK
    if "Retrieval" not in kind:
        return task or None
    if prompt_type != PromptType.query:
        return INSTRUCTED_DOCUMENTS.get(name)
    return task or RETRIEVAL_FALLBACK


class E2RankMTEB(AbsEncoder):
    """``model`` (an ``E2Rank``) for ``mteb.evaluate``: queries through ``model.encode_queries`` with the task's
    instruction (``mteb_instruction``) if the model is instructed (its ``query_task`` is not ``None``), documents
    through ``model.encode_docs``; cosine similarity. The batch size is the model's.

    Attributes:
        mteb_model_meta: name ``local/<its folder's name>`` for a local checkpoint, else its hub id; revision: a
            digest of the model's fingerprint, so results of other weights or settings are never mixed in mteb's cache.
    """

    def __init__(self, model):
        self.model = model
        name = str(model.model_name_or_path)
        if name.count("/") != 1 or Path(name).exists():
            name = f"local/{Path(name).name}"  # as given: an embedded name stays itself
        identity = {k: v for k, v in model.fingerprint().items() if k != "model"} | {"query_task": model.query_task}
        revision = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        self.mteb_model_meta = ModelMeta(
            loader=None, name=name, revision=revision,
            release_date=None, languages=None, n_parameters=sum(p.numel() for p in model.backbone.parameters()),
            memory_usage_mb=None, max_tokens=model.max_length, embed_dim=model.dim, license=None, open_weights=True,
            public_training_code=None, public_training_data=None, framework=["PyTorch"], similarity_fn_name="cosine",
            use_instructions=model.query_task is not None, training_datasets=None)

    def instruction(self, task_metadata, prompt_type: Optional[PromptType]) -> Optional[str]:
        """``mteb_instruction``, or ``None`` for a model without instructions."""
        return None if self.model.query_task is None else mteb_instruction(task_metadata, prompt_type)

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: Optional[PromptType] = None, **kwargs):
        """The normalised vectors ``[n, dim]`` of the texts of ``inputs`` (mteb's batches)."""
        texts = [text for batch in inputs for text in batch["text"]]
        task = self.instruction(task_metadata, prompt_type)
        if prompt_type == PromptType.query or task is not None:
            return self.model.encode_queries(texts, task=task)
        return self.model.encode_docs(texts)


def mteb_task(source, *, name: Optional[str] = None, query_task: Optional[str] = None):
    """An ``mteb`` retrieval task (split ``test``, main score nDCG@10) of a ``dataset`` with topics and qrels, its
    documents titled as by ``corpus_iter``. ``name``: the task's (default: the folder or file name, or the
    dataset name); ``query_task``: its query prompt, the instruction ``E2RankMTEB`` gives instructed models."""
    from datasets import Dataset
    from mteb import TaskMetadata
    from mteb.abstasks import AbsTaskRetrieval
    ds = dataset(source)
    topics, qrels = dataset_part(ds, "topics", source), dataset_part(ds, "qrels", source)
    relevant = {}
    for qid, docno, label in qrels[["qid", "docno", "label"]].itertuples(index=False):
        relevant.setdefault(str(qid), {})[str(docno)] = int(label)
    corpus = [{"id": str(d["docno"]), "title": "", "text": d["text"]} for d in corpus_iter(source)]
    queries = [{"id": str(q), "text": t} for q, t in topics[["qid", "query"]].values]
    split = {"corpus": Dataset.from_list(corpus), "queries": Dataset.from_list(queries), "relevant_docs": relevant,
             "top_ranked": None}
    revision = hashlib.sha256(json.dumps([corpus, queries, relevant]).encode()).hexdigest()[:12]  # mteb's cache key
    local = isinstance(source, (str, os.PathLike)) and Path(source).exists()
    name = name or (Path(source).name if local else re.sub(r"[^\w.-]+", "-", str(source)))  # a file name for mteb

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name, description=f"the dataset {str(source)!r}", type="Retrieval",
            dataset={"path": str(source), "revision": revision}, eval_splits=["test"], eval_langs=["eng-Latn"],
            main_score="ndcg_at_10", prompt=None if query_task is None else {"query": query_task})

        def load_data(self, **kwargs) -> None:
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True
    return LocalRetrieval()
