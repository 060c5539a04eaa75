"""index_sharded: ``e2rank index`` in one process vs two (``torchrun --nproc-per-node 2``, gloo on CPU)
over the same SciFact documents: throughput ratio, and whether the two indexes are identical (same
docnos in order, vectors equal to float tolerance).

On this 2-core machine, one process already uses both cores (torch's intra-op threads), so two
processes with one thread each can only gain what one process's threads leave idle (tokenisation,
Python between batches); on N GPUs each process has a device of its own."""
import json
import os
from pathlib import Path

import numpy as np

from benchmarks.common import timed_cli


def _collection(path: Path, num_docs: int) -> Path:
    import itertools

    from pyterrier_e2rank.data import corpus_iter
    with open(path, "w", encoding="utf-8") as out:
        for doc in itertools.islice(corpus_iter("irds:beir/scifact/test"), num_docs):
            out.write(json.dumps({"id": doc["docno"], "contents": doc["text"]}) + "\n")
    return path


def _build(output: Path, collection: Path, model: str, processes: int, chunk_size: int) -> float:
    return timed_cli(["index", "--collection", str(collection), "--model", model, "--output", str(output),
                      "--chunk-size", str(chunk_size), "--quiet"], processes, output.parent / f"index-logs-{processes}")


def run(workdir, *, model_path: str, num_docs: int, chunk_size: int = 64) -> dict:
    from pyterrier_e2rank import E2RankIndex
    workdir = Path(workdir)
    collection = _collection(workdir / "sharded-collection.jsonl", num_docs)
    one_s = _build(workdir / "one-process.e2rank", collection, model_path, 1, chunk_size)
    two_s = _build(workdir / "two-processes.e2rank", collection, model_path, 2, chunk_size)
    one, two = E2RankIndex(workdir / "one-process.e2rank"), E2RankIndex(workdir / "two-processes.e2rank")
    identical = list(one.docnos()) == list(two.docnos()) and bool(np.allclose(one.np_vecs(), two.np_vecs(), atol=1e-5))
    return {"num_docs": num_docs, "chunk_size": chunk_size, "one_process_s": one_s, "two_processes_s": two_s,
            "speedup": one_s / two_s, "identical": identical, "cpu_count": os.cpu_count(),
            "note": "wall time of the whole command (model loading included), CPU"}
