"""encode_throughput: doc_encoder's length-sorted batching vs unsorted batching vs the bare backbone
forward on the same token batches; documents/s, tokens/s and the fraction of padding."""
import time

import torch

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.data import corpus_iter
from pyterrier_e2rank.model.pooling import pad_batch


def _timed_batches(model, ids, batch_size):
    started = time.perf_counter()
    with torch.inference_mode(), model.counting() as stats:
        for start in range(0, len(ids), batch_size):
            model.embed(ids[start:start + batch_size]).cpu()
    return time.perf_counter() - started, stats


def run(workdir, *, model_path: str, num_docs: int, batch_size: int = 32, label: str = "") -> dict:
    import itertools
    import pandas as pd
    texts = [d["text"] for d in itertools.islice(corpus_iter("irds:beir/scifact/test"), num_docs)]
    model = E2Rank(model_path, batch_size=batch_size)
    model.encode_docs(texts[:batch_size])  # warm-up

    started = time.perf_counter()
    with model.counting() as ours_stats:
        model.doc_encoder()(pd.DataFrame({"docno": [str(i) for i in range(len(texts))], "text": texts}))
    ours = time.perf_counter() - started

    ids = model.tokenize_docs(texts)
    unsorted, unsorted_stats = _timed_batches(model, ids, batch_size)

    ordered = sorted(ids, key=len, reverse=True)
    batches = [pad_batch(ordered[i:i + batch_size], model.pad_token_id, left=model.pooling.last_token)
               for i in range(0, len(ordered), batch_size)]
    started = time.perf_counter()
    with torch.inference_mode():
        for input_ids, mask in batches:
            model.backbone(input_ids=input_ids, attention_mask=mask)
    raw = time.perf_counter() - started

    return {
        "backbone": label, "documents": len(texts), "batch_size": batch_size, "tokens": ours_stats.tokens,
        "docs_per_s": len(texts) / ours, "tokens_per_s": ours_stats.tokens / ours,
        "docs_per_s_unsorted": len(texts) / unsorted, "docs_per_s_raw_forward": len(texts) / raw,
        "padding_fraction": ours_stats.padding_fraction,
        "padding_fraction_unsorted": unsorted_stats.padding_fraction,
        "vs_raw_forward": ours / raw, "unsorted_vs_sorted": unsorted / ours,
    }
