"""sharding: ``e2rank rerank-run`` in one process vs two (``torchrun --standalone --nproc-per-node 2``, gloo on
CPU, the queries split across the processes) over the same SciFact BM25 run: wall-time ratio, and whether
process 0 wrote the run one process writes (same docnos and ranks per query, scores within 1e-5).

On a 2-core machine one process already uses both cores (torch's intra-op threads), so two processes with
one thread each gain only what one process's threads leave idle; on N GPUs each process has a device of its
own and the reranking part of the time divides by N."""
import os
from pathlib import Path

import numpy as np

from benchmarks.common import bm25_candidates, timed_cli


def _rerank(workdir: Path, run: Path, output: Path, model: str, processes: int, top_k: int) -> float:
    return timed_cli(["rerank-run", "--run", str(run), "--topics", "irds:beir/scifact/test", "--docs",
                      "irds:beir/scifact/test", "--model", model, "--top-k", str(top_k), "--output", str(output)],
                     processes, workdir / f"sharding-logs-{processes}")


def run(workdir, *, model_path: str, num_queries: int, top_k: int = 30) -> dict:
    from pyterrier_e2rank.cli.runs import read_run, write_run
    workdir = Path(workdir)
    first = workdir / "sharding-bm25.run"
    write_run(bm25_candidates(num_queries, top_k, workdir), first, tag="bm25")
    one_s = _rerank(workdir, first, workdir / "sharding-one.run", model_path, 1, top_k)
    two_s = _rerank(workdir, first, workdir / "sharding-two.run", model_path, 2, top_k)
    one, two = read_run(workdir / "sharding-one.run"), read_run(workdir / "sharding-two.run")
    identical = bool(two[["qid", "docno", "rank"]].equals(one[["qid", "docno", "rank"]])
                     and np.allclose(two["score"], one["score"], atol=1e-5))
    return {"num_queries": num_queries, "top_k": top_k, "one_process_s": one_s, "two_processes_s": two_s,
            "speedup_2proc": one_s / two_s, "identical": identical, "cpu_count": os.cpu_count(),
            "note": "wall time of the whole command (model loading and document lookup included), CPU"}
