"""The losses of E2Rank training (pt_docs/specification.rst §9): InfoNCE and RankNet, and ``listwise_loss``,
which computes them for a batch of training lists the way the reranker reads them."""
import itertools
from typing import List

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from ..model.e2rank import E2Rank
from pyterrier_e2rank.rerank.prompt import ListwisePrompt

from .data import ListwiseExample

from .config import INFONCE_TEMPERATURE, TrainConfig

RANKNET_SCALE = 10.0


def info_nce(queries: torch.Tensor, docs: torch.Tensor, positive_index: torch.Tensor,
             temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """Contrastive loss of normalised ``queries [q, d]`` against all ``docs [n, d]`` of the (gathered) batch,
    ``positive_index [q]`` the row of each query's positive; every other row is a negative."""
    logits = queries @ docs.T / temperature
    return F.cross_entropy(logits, positive_index)


def ranknet(scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``log(1 + exp(-(s_i - s_j)))`` over pairs with ``relevance_i > relevance_j``; ``scores``,
    ``relevance`` and ``mask`` are ``[q, slate]``, masked positions entering no pair."""
    pairs = (relevance.unsqueeze(2) > relevance.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)
    differences = scores.unsqueeze(2) - scores.unsqueeze(1)
    losses = F.softplus(-differences)
    return losses[pairs].mean() if bool(pairs.any()) else scores.sum() * 0.0


def gather_with_grad(tensor: torch.Tensor):
    """``(rows, offset)``: all processes' rows (any number each), keeping this process's gradient, and where
    this process's rows start."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(tensor)], device=tensor.device))
    sizes = [int(s) for s in sizes]
    padded = F.pad(tensor, (0, 0, 0, max(sizes) - len(tensor))).contiguous()
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    gathered[rank] = tensor
    rows = torch.cat([g[:n] for g, n in zip(gathered, sizes)])
    return rows, sum(sizes[:rank])


def listwise_loss(model: E2Rank, prompt: ListwisePrompt, batch: List[ListwiseExample], config: TrainConfig, *,
                  gather: bool = True):
    """``(loss, unweighted parts)``: stage I InfoNCE, stage II InfoNCE + weight x RankNet on 10 x
    cos(pseudo-query, document). ``gather=False`` keeps InfoNCE's negatives to this process's batch."""
    queries = model.embed(model.tokenize_queries([e.query for e in batch], max_length=config.query_max_length))
    flat = [doc for e in batch for doc in e.document]
    ids = model.tokenize_docs(flat, max_length=config.doc_max_length)
    docs = torch.cat([model.embed(ids[i:i + config.embed_batch_size])
                      for i in range(0, len(ids), config.embed_batch_size)])
    all_docs, offset = gather_with_grad(docs) if gather else (docs, 0)
    sizes = [len(e.document) for e in batch]
    starts = list(itertools.accumulate(sizes[:-1], initial=0))
    positives = torch.tensor([offset + s + e.ranking[0] - 1 for s, e in zip(starts, batch)], device=docs.device)
    contrastive = info_nce(queries, all_docs, positives, config.temperature)
    parts = {"infonce": float(contrastive.detach())}
    if config.stage == 1:
        return config.infonce_weight * contrastive, parts

    rendered = [prompt.render(model.tokenizer, e.query, e.document) for e in batch]
    pseudo_queries = model.embed(model.tokenize_prompts(rendered))
    lists = [docs[start:start + n] @ query for start, n, query in zip(starts, sizes, pseudo_queries)]
    scores = RANKNET_SCALE * pad_sequence(lists, batch_first=True)  # padded positions are masked out of every pair
    relevance = pad_sequence([torch.tensor(e.relevance(), device=docs.device) for e in batch], batch_first=True)
    mask = pad_sequence([torch.ones(n, dtype=torch.bool, device=docs.device) for n in sizes], batch_first=True)
    pairwise = ranknet(scores, relevance, mask)
    parts["ranknet"] = float(pairwise.detach())
    return config.infonce_weight * contrastive + config.ranknet_weight * pairwise, parts

