"""BM25 >> E2Rank on SciFact in a dozen lines: the pipeline a course starts from.

    python examples/rerank_bm25.py --model all-minilm-l6-v2 --num-queries 50

No dense index here: the reranker encodes each query's candidates itself (see pyterrier_e2rank/pt_docs/retrieval-and-reranking.rst
for the indexed, one-forward-pass-per-query version).
"""
import argparse

import pyterrier as pt
from ir_measures import R, nDCG

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.bm25 import pisa_bm25
from pyterrier_e2rank.data import DocumentText


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--dataset", default="irds:beir/scifact/test")
    parser.add_argument("--index-dir", default="indexes/scifact.pisa")
    parser.add_argument("--num-queries", type=int, default=50)
    parser.add_argument("--top-k", type=int, default=100)
    args = parser.parse_args(argv)

    dataset = pt.get_dataset(args.dataset)
    bm25 = pisa_bm25(args.index_dir, dataset)
    e2rank = E2Rank(args.model).reranker()  # the checkpoint's prompt settings, else the paper's (20 documents)
    pipeline = bm25 % args.top_k >> DocumentText(dataset) >> e2rank

    topics = dataset.get_topics().head(args.num_queries)
    table = pt.Experiment([bm25 % args.top_k, pipeline], topics, dataset.get_qrels(),
                          [nDCG @ 10, R @ 100, "mrt"], names=["bm25", "bm25>>e2rank"])
    print(table.to_string(index=False))
    print(f"reranker work: {e2rank.stats}")
    return table


if __name__ == "__main__":
    main()
