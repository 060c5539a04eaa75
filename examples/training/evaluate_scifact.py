"""Evidence for stage-II training: SciFact test, BM25 top-100 reranked by the base and the trained model.

    python examples/training/evaluate_scifact.py --base all-minilm-l6-v2 --trained runs/minilm-stage2 \
        --index-dir indexes --output runs/training-evidence.json

Both PRF rerankers read the same prompt. By default it is the one the model was trained with (from its
``e2rank_training.json``: ``prompt_docs``, else 20 documents, and the token budgets); the
``--num-input-docs``, ``--prompt-doc-max-tokens`` and ``--prompt-max-tokens`` options override it.

Systems: (a) base as PRF reranker, (b) trained as PRF reranker, (c) trained as a plain embedding
reranker (query vector, no documents in the prompt; the base's too, for reference), (d) BM25, and
(e) dense retrieval with the trained and the base model.
"""
import argparse
import json
from pathlib import Path

import pyterrier as pt
from ir_measures import R, nDCG

from pyterrier_e2rank import E2Rank
from pyterrier_e2rank.bm25 import pisa_bm25
from pyterrier_e2rank.data import DocumentText, corpus_id
from pyterrier_e2rank.experiment import dense_index_for, index_name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="all-minilm-l6-v2")
    parser.add_argument("--trained", required=True)
    parser.add_argument("--dataset", default="irds:beir/scifact/test")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--num-queries", type=int)
    parser.add_argument("--num-input-docs", type=int, help="documents in the listwise prompt")
    parser.add_argument("--prompt-doc-max-tokens", type=int, help="per-document token budget in the prompt")
    parser.add_argument("--prompt-max-tokens", type=int, help="total prompt budget (default: the model's positions)")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    trained_with = training_prompt(args.trained)
    for option, setting in [("num_input_docs", "prompt_docs"), ("prompt_doc_max_tokens", "prompt_doc_max_tokens"),
                            ("prompt_max_tokens", "prompt_max_tokens")]:
        if getattr(args, option) is None:
            setattr(args, option, trained_with.get(setting))
    args.num_input_docs = args.num_input_docs or 20
    print(f"prompt: {args.num_input_docs} documents, at most {args.prompt_doc_max_tokens or 'any'} tokens each "
          f"and {args.prompt_max_tokens or 'the model positions'} in all")

    dataset = pt.get_dataset(args.dataset)
    bm25 = pisa_bm25(str(Path(args.index_dir) / index_name(corpus_id(args.dataset)) / "bm25.pisa"), dataset) % 100
    text = DocumentText(dataset)
    systems = {"(d) bm25": bm25}
    for label, path in [("base", args.base), ("trained", args.trained)]:
        model = E2Rank(path, verbose=True)
        index = dense_index_for(model, dataset, args.index_dir)
        prf = model.reranker(num_input_docs=args.num_input_docs, index=index,
                             doc_max_tokens=args.prompt_doc_max_tokens, prompt_max_tokens=args.prompt_max_tokens)
        systems[f"PRF reranker, {label}"] = bm25 >> text >> prf
        systems[f"embedding reranker, {label}"] = bm25 >> model.scorer(index=index)
        systems[f"dense, {label}"] = model.retriever(index, num_results=100)
    topics = dataset.get_topics() if args.num_queries is None else dataset.get_topics().head(args.num_queries)
    table = pt.Experiment(list(systems.values()), topics, dataset.get_qrels(), [nDCG @ 10, R @ 100],
                          names=list(systems))
    print(table.to_string(index=False))
    if args.output:
        prompt = {"num_input_docs": args.num_input_docs, "prompt_doc_max_tokens": args.prompt_doc_max_tokens,
                  "prompt_max_tokens": args.prompt_max_tokens}
        scores = {row["name"]: {"nDCG@10": row["nDCG@10"], "R@100": row["R@100"]} for _, row in table.iterrows()}
        Path(args.output).write_text(json.dumps({"prompt": prompt, "systems": scores}, indent=2))
    return table


def training_prompt(checkpoint) -> dict:
    """The prompt settings a checkpoint was trained with (empty for a model not trained here)."""
    record = Path(checkpoint) / "e2rank_training.json"
    return json.loads(record.read_text())["config"] if record.is_file() else {}


if __name__ == "__main__":
    main()
