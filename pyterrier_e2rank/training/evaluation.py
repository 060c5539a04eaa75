"""Evaluation during training: the loss on held-out lists and the PRF reranker's nDCG@10 on them."""
from statistics import fmean
from typing import List

import torch

from ..model.e2rank import E2Rank
from pyterrier_e2rank.rerank.prompt import ListwisePrompt

from .config import TrainConfig
from .data import ListwiseExample
from .losses import listwise_loss


def evaluate(model: E2Rank, prompt: ListwisePrompt, examples: List[ListwiseExample], config: TrainConfig) -> dict:
    """``eval_loss`` (and its parts) as in training, and ``eval_ndcg_10``: nDCG@10 of the PRF reranker with
    ``prompt`` on the lists in their given order, the teacher ranking as graded relevance (rank 1 of n gets
    n). Every process evaluates every list (in step, as DeepSpeed ZeRO-3 needs)."""
    import ir_measures
    import pandas as pd
    from ir_measures import nDCG

    from pyterrier_e2rank.rerank.reranker import E2RankReranker

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
        frame = pd.DataFrame([{"qid": str(q), "query": e.query, "docno": str(d), "text": text, "rank": d}
                              for q, e in enumerate(examples) for d, text in enumerate(e.document)])
        ranked = E2RankReranker(model, prompt, verbose=False)(frame)
    finally:
        backbone.train()
    qrels = pd.DataFrame([{"query_id": str(q), "doc_id": str(d), "relevance": int(grade)}
                          for q, e in enumerate(examples) for d, grade in enumerate(e.relevance())])
    run = ranked.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]]
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    return {"eval_loss": fmean(losses), **{f"eval_{k}": fmean([p[k] for p in parts]) for k in parts[0]},
            "eval_ndcg_10": float(ndcg)}

