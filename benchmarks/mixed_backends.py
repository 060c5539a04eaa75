"""mixed_backends: SciFact nDCG@10 of one all-MiniLM-L6-v2 index built with float32 PyTorch, queried and reranked
by float32 PyTorch, by its bfloat16 and by each CPU backend that shares its identity
(``backends.SHARES_PYTORCH_IDENTITY``), as ``e2rank experiment`` runs them (``bm25 % 100 >> reranker``,
``dense % 100 >> reranker``; the reranker takes the candidates' vectors from the index); a backend apart from
PyTorch's identity (OpenVINO's bfloat16) on the index it built (``dense.all-minilm-l6-v2.<inference>``); each
backend's difference from PyTorch alone.

    python -m benchmarks.mixed_backends --workdir runs/mixed --output benchmarks/results/mixed-backends-DATE.json

``--workdir`` holds (or gets) ``bm25.pisa`` and the dense index ``dense.all-minilm-l6-v2``: copy there those of
``e2rank experiment`` (``indexes/beir_scifact-<digest>/``) to reuse them; a dense index of another model or
backend is refused.
"""
import argparse
import json
import sys
from pathlib import Path

import pyterrier as pt
import torch
from ir_measures import nDCG

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from pyterrier_e2rank import E2Rank, E2RankIndex  # noqa: E402
from pyterrier_e2rank.bm25 import pisa_bm25  # noqa: E402
from pyterrier_e2rank.data import DocumentText, corpus_iter  # noqa: E402
from pyterrier_e2rank.io import atomic_file  # noqa: E402
from pyterrier_e2rank.model.provenance import identity  # noqa: E402

DATASET = "irds:beir/scifact/test"
MODEL = "all-minilm-l6-v2"
#: The backends that query and rerank the PyTorch index, by name (``torch``: the reference; PyTorch's bfloat16, which
#: has always shared its identity, the yardstick).
BACKENDS = {"torch": {}, "torch-bfloat16": {"dtype": torch.bfloat16}, "openvino": {"backend": "openvino"},
            "openvino-f32": {"backend": "openvino", "dtype": torch.float32}, "onnx": {"backend": "onnx"}}
SYSTEMS = ("dense", "dense>>e2rank", "bm25>>e2rank")
#: The issue's bar: nDCG@10 within this of PyTorch alone.
BAR = 0.002


def run(workdir: Path, *, num_queries=None, top_k: int = 100) -> dict:
    dataset = pt.get_dataset(DATASET)
    index = E2RankIndex(workdir / f"dense.{MODEL}")
    reference = E2Rank(MODEL, device="cpu")
    if not index.built():
        reference.indexer(index).index(corpus_iter(DATASET))
    index = E2RankIndex(index.path)
    if "inference" in index.fingerprint:
        raise ValueError(f"{index.path} was built with {index.fingerprint['inference']!r}, not PyTorch")
    bm25, text = pisa_bm25(str(workdir / "bm25.pisa"), dataset, num_results=top_k), DocumentText(dataset)
    topics = dataset.get_topics() if num_queries is None else dataset.get_topics().head(num_queries)
    ndcg, precision, indexes = {}, {}, {}
    for name, options in BACKENDS.items():
        model = reference if name == "torch" else E2Rank(MODEL, device="cpu", **options)
        apart = identity(model.fingerprint()).get("inference")
        own = index if apart is None else E2RankIndex(workdir / f"dense.{MODEL}.{apart}")
        if not own.built():
            model.indexer(own).index(corpus_iter(DATASET))
        own = E2RankIndex(own.path)
        reranker = model.reranker(index=own)
        dense = model.retriever(own, num_results=top_k)
        table = pt.Experiment([dense, dense % top_k >> text >> reranker, bm25 % top_k >> text >> reranker],
                              topics, dataset.get_qrels(), eval_metrics=[nDCG @ 10], names=list(SYSTEMS))
        ndcg[name] = dict(zip(table["name"], table["nDCG@10"].astype(float)))
        precision[name], indexes[name] = model.precision, own.path.name
        print(name, model.precision, ndcg[name], flush=True)
    delta = {name: {s: ndcg[name][s] - ndcg["torch"][s] for s in SYSTEMS} for name in BACKENDS if name != "torch"}
    worst = {name: max(map(abs, deltas.values())) for name, deltas in delta.items()}
    return {"setting": f"{MODEL} index built with float32 PyTorch, queried and reranked by each backend (CPU)",
            "queries": len(topics), "documents": len(index),
            "index_fingerprint": index.fingerprint, "precision": precision, "index": indexes, "ndcg10": ndcg,
            "ndcg10_delta": delta, "max_abs_delta": worst, "bar": BAR,
            "within_bar": {name: d <= BAR for name, d in worst.items()}}


def table(result: dict) -> str:
    rows = [f"{'backend':<16}{'precision':<11}" + "".join(f"{s:>18}" for s in SYSTEMS)]
    for name, scores in result["ndcg10"].items():
        deltas = result["ndcg10_delta"].get(name)
        cells = (f"{v:.4f}" if deltas is None else f"{v:.4f} ({deltas[s]:+.4f})" for s, v in scores.items())
        rows.append(f"{name:<16}{result['precision'][name]:<11}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--num-queries", type=int)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), **run(args.workdir, num_queries=args.num_queries)}
    print(table(result))
    if args.output:
        with atomic_file(args.output) as out:
            json.dump({**result, "table": table(result).splitlines()}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
