"""Evidence for stage-II training: SciFact test, BM25 top-100 reranked by the base and the trained model.

    python training/evaluate_scifact.py --base all-minilm-l6-v2 --trained runs/minilm-stage2 \
        --index-dir indexes --output runs/training-evidence.json

Both PRF rerankers read the same prompt. By default it is the one the model was trained with (the
checkpoint's ``e2rank_prompt.json``, which ``E2Rank(path)`` reads as its defaults); the
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
from pyterrier_e2rank.data import DocumentText, corpus_id, dataset as open_dataset
from pyterrier_e2rank.checks import positive_int
from pyterrier_e2rank.io import atomic_file
from pyterrier_e2rank.cli import arguments
from pyterrier_e2rank.cli.experiment import dense_index_for, index_name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="all-minilm-l6-v2")
    parser.add_argument("--trained", required=True)
    parser.add_argument("--dataset", default="irds:beir/scifact/test",
                        help="irds:<id>, a BEIR folder or a corpus file, as the e2rank commands take")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--num-queries", type=arguments.Checked(positive_int))
    parser.add_argument("--num-input-docs", type=arguments.Checked(positive_int),
                        help="documents in the listwise prompt")
    arguments.add_prompt_budget_options(parser)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    models = {"base": E2Rank(args.base, verbose=True), "trained": E2Rank(args.trained, verbose=True)}
    given = {"num_input_docs": args.num_input_docs, "prompt_doc_max_tokens": args.prompt_doc_max_tokens,
             "prompt_max_tokens": args.prompt_max_tokens}
    prompt = models["trained"].listwise_prompt(**given)  # the trained prompt, where not overridden
    settings = {name: getattr(prompt, name) for name in ("num_input_docs", "task", "prompt_doc_max_tokens")}
    settings["prompt_max_tokens"] = args.prompt_max_tokens or models["trained"].prompt_settings.get("prompt_max_tokens")
    print(f"prompt: {settings['num_input_docs']} documents, at most {settings['prompt_doc_max_tokens'] or 'any'} "
          f"tokens each and {settings['prompt_max_tokens'] or 'the model positions'} in all")

    dataset = open_dataset(args.dataset)
    bm25 = pisa_bm25(str(Path(args.index_dir) / index_name(corpus_id(dataset)) / "bm25.pisa"), dataset) % 100
    text = DocumentText(dataset)
    systems = {"(d) bm25": bm25}
    for label, model in models.items():
        index = dense_index_for(model, dataset, args.index_dir)
        prf = model.reranker(index=index, **settings)
        systems[f"PRF reranker, {label}"] = bm25 >> text >> prf
        systems[f"embedding reranker, {label}"] = bm25 >> model.scorer(index=index)
        systems[f"dense, {label}"] = model.retriever(index, num_results=100)
    topics = dataset.get_topics() if args.num_queries is None else dataset.get_topics().head(args.num_queries)
    table = pt.Experiment(list(systems.values()), topics, dataset.get_qrels(), [nDCG @ 10, R @ 100],
                          names=list(systems))
    print(table.to_string(index=False))
    if args.output:
        scores = {row["name"]: {"nDCG@10": row["nDCG@10"], "R@100": row["R@100"]} for _, row in table.iterrows()}
        with atomic_file(args.output) as out:
            json.dump({"prompt": {k: v for k, v in settings.items() if k != "task"}, "systems": scores}, out, indent=2)
    return table


if __name__ == "__main__":
    main()
