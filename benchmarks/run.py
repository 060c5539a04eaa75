"""Run every benchmark, print a table, write nested JSON.

    python benchmarks/run.py --quick --output bench.json     # ~6 minutes on 2 CPU cores
    python benchmarks/run.py --output bench.json             # larger samples, both vector sizes, ANN at 1M and 5M,
                                                             # int8/binary vectors at 1M x 1024
    python benchmarks/run.py --output bench.json --ann-size 5000000x1024   # ANN at other sizes

The SciFact ANN check reuses the index of ``scripts/run.sh experiment`` (``indexes/beir_scifact-<digest>``) when
present and encodes SciFact otherwise (about 4 more minutes here). The full run takes about 75 minutes
here and 15 GB under ``--workdir``. Its JSON is written after every benchmark and every ANN size;
``--resume`` continues an interrupted run where it stopped.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (ann, cpu_inference, encode_throughput, fingerprint, index_sharded, quantized,  # noqa: E402
                        rerank_reuse, reproduce, retrieval_scale, sharding, vs_generative)
from benchmarks.common import machine, timer  # noqa: E402
from pyterrier_e2rank.io import atomic_file  # noqa: E402

#: The size whose best setting is reported at the top level of ``ann`` (the goal's), else the largest run.
ANN_GOAL_SIZE = "1000000x1024"


def ann_size(text: str) -> dict:
    """``NUMxDIM`` -> the options of ``benchmarks.ann.run``. FlexIndex's own HNSW (float32 storage, built
    with efConstruction 40) only up to 1M x 384: its build would double the time of larger sizes."""
    try:
        num_docs, dim = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NUMxDIM such as 5000000x1024, got {text!r}") from None
    if num_docs < 1000 or dim < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1000 vectors of dimension >= 1, got {text!r}")
    return dict(num_docs=num_docs, dim=dim, hnsw_fp32=num_docs * dim <= 384_000_000)


SETTINGS = {
    "quick": {"reuse_queries": 3, "generative_layers": 2, "generative_queries": 2, "encode_docs": 256,
              "scale_docs": 1_000_000, "scale_dims": [384], "sharded_docs": 256, "sharded_queries": 20,
              "reproduce_queries": 10,
              "cpu_docs": 128, "cpu_qwen_layers": 2, "cpu_queries": 300,
              "ann": [dict(ann_size("100000x384"), hnsw_fp32=False, ef_search=(64, 128), n_probe=(32,))],
              "vectors": dict(num_docs=100_000, dim=1024), "append_docs": 1000},
    "full": {"reuse_queries": 10, "generative_layers": 4, "generative_queries": 5, "encode_docs": 1024,
             "scale_docs": 1_000_000, "scale_dims": [384, 1024], "sharded_docs": 1024, "sharded_queries": 100,
             "reproduce_queries": 300,
             "cpu_docs": 512, "cpu_qwen_layers": 4, "cpu_queries": 300,
             "ann": [ann_size(size) for size in ("1000000x384", "1000000x1024", "5000000x384")],
             "vectors": dict(num_docs=1_000_000, dim=1024), "append_docs": None},
}


def run_all(quick: bool, workdir: Path, model: str, save=lambda data: None, *, ann_sizes=None,
            done: Optional[dict] = None) -> dict:
    """Every benchmark in turn; ``save(data)`` after each (and after each ANN size), so that hours of a full
    run are not lost to a late failure. ``done``: the JSON of an interrupted run of the same mode, whose
    finished benchmarks and ANN sizes are kept, not run again."""
    s = SETTINGS["quick" if quick else "full"]
    data = {"machine": machine(), "mode": "quick" if quick else "full", "elapsed_s": {}}
    if done:
        if done.get("mode") != data["mode"] or done.get("machine") != data["machine"]:
            raise ValueError("--resume: the output holds a run of another mode or machine; choose another --output")
        data = done
    sizes = ann_sizes or s["ann"]

    def save_ann(partial: dict):
        data["ann"] = partial
        save(data)

    sections = {
        "rerank_reuse": lambda: rerank_reuse.run(workdir, model_path=model, num_queries=s["reuse_queries"],
                                                 label=model),
        "vs_generative": lambda: vs_generative.run(workdir, num_layers=s["generative_layers"],
                                                   num_queries=s["generative_queries"]),
        "encode_throughput": lambda: encode_throughput.run(workdir, model_path=model, num_docs=s["encode_docs"],
                                                           label=model),
        "retrieval_scale": lambda: run_scale(workdir, s["scale_docs"], s["scale_dims"]),
        "fingerprint": lambda: fingerprint.run(workdir, minilm=model),
        "index_sharded": lambda: index_sharded.run(workdir, model_path=model, num_docs=s["sharded_docs"]),
        "sharding": lambda: sharding.run(workdir, model_path=model, num_queries=s["sharded_queries"]),
        "reproduce": lambda: reproduce.run(workdir, model_path=model, num_queries=s["reproduce_queries"], label=model),
        "cpu_inference": lambda: cpu_inference.run(workdir, num_docs=s["cpu_docs"], qwen_layers=s["cpu_qwen_layers"],
                                                   num_queries=s["cpu_queries"]),
        "ann": lambda: run_ann(workdir, sizes, save_ann, done=data.get("ann", {}).get("by_size", {})),
        "vectors": lambda: quantized.vectors(workdir, **s["vectors"]),
        "append": lambda: quantized.append(workdir, num_docs=s["append_docs"]),
    }
    for name, section in sections.items():
        if name in data and data[name].get("complete", True):
            print(f"{name}: kept from the interrupted run", flush=True)
            continue
        if name in data:  # its elapsed time then counts only the continuation
            data.setdefault("continued_by_resume", []).append(name)
        print(f"{name} ...", flush=True)
        with timer(data["elapsed_s"], name):
            data[name] = section()
        print(f"{name}: {data['elapsed_s'][name]:.0f} s", flush=True)
        save(data)
    return data


def run_scale(workdir: Path, num_docs: int, dims: list) -> dict:
    scales = [retrieval_scale.run(workdir, num_docs=num_docs, dim=d) for d in dims]
    return {**scales[0], "by_dim": {str(r["dim"]): r for r in scales}}


def run_ann(workdir: Path, settings: list, save_partial=lambda partial: None, done: Optional[dict] = None) -> dict:
    """Each size's sweep, keyed ``{num_docs}x{dim}`` (those in ``done`` kept); the goal size's best setting
    meeting the recall goal at the top (``speedup_vs_exact``, ``recall_at_100``, ``build_s``,
    ``memory_mb``), and SciFact."""
    by_size = dict(done or {})
    for options in settings:
        if f"{options['num_docs']}x{options['dim']}" in by_size:
            continue
        r = ann.run(workdir, **options)
        by_size[f"{r['num_docs']}x{r['dim']}"] = r
        save_partial({"complete": False, "by_size": by_size})
    top = by_size.get(ANN_GOAL_SIZE) or by_size[list(by_size)[-1]]
    best = top["best"]
    sci = ann.scifact(workdir)
    return {"measured_at": f"{top['num_docs']:,} x {top['dim']}", "vectors": top["vectors"],
            **{k: best[k] for k in ("setting", "speedup_vs_exact", "recall_at_100", "build_s", "memory_mb",
                                    "meets_recall_goal")},
            "scifact_ndcg10_delta": sci["ndcg10_delta"][_family(best["setting"])], "scifact": sci, "by_size": by_size}


def _family(setting: str) -> str:
    """The SciFact system of the same kind as a synthetic setting."""
    for prefix, family in (("flex hnsw", "flex hnsw"), ("hnsw-fp16", "hnsw-fp16")):
        if setting.startswith(prefix):
            return family
    return "ivfpq-rescore" if "rescore" in setting else "ivfpq"


def table(data: dict) -> str:
    r, g, e, s = (data[k] for k in ("rerank_reuse", "vs_generative", "encode_throughput", "retrieval_scale"))
    f = data["fingerprint"]
    rows = [
        ("rerank_reuse", f"{r['seconds_per_query_reencode']:.3f} s re-encoding vs {r['seconds_per_query_index']:.3f} s "
                         f"with index vectors per query ({r['backbone']}); same rankings: {r['same_rankings']}",
         f"{r['ratio']:.1f}x", ">= 20x"),
        ("vs_generative", f"{g['seconds_per_query_generative']:.2f} s generative sliding window vs "
                          f"{g['seconds_per_query_e2rank']:.2f} s E2Rank per query with index vectors "
                          f"({g['seconds_per_query_e2rank_reencode']:.2f} s re-encoding: "
                          f"{g['ratio_reencode']:.1f}x; paper 5-7.6x) ({g['backbone']})",
         f"{g['ratio']:.1f}x", ">= 10x"),
        ("encode_throughput", f"{e['docs_per_s']:.1f} docs/s, {e['tokens_per_s']:.0f} tokens/s; padding "
                              f"{e['padding_fraction']:.1%} (unsorted {e['padding_fraction_unsorted']:.1%})",
         f"{e['vs_raw_forward']:.2f}x raw", "<= 1.10x, padding < 10%"),
        ("retrieval_scale", f"{s['num_docs']:,} x {s['dim']}: {s['latency_ms_per_query']:.0f} ms/query, "
                            f"{s['latency_ms_per_batch_of_100']:.0f} ms/100 queries, build {s['build_s']:.1f} s, "
                            f"search heap {s['search_heap_peak_mb']:.0f} MB of {s['matrix_mb']:.0f} MB",
         f"{s['latency_ms_per_query']:.0f} ms", "memory-mapped"),
    ] + [(f"fingerprint ({key})", f"{m['weights_mb']:,.0f} MB of weights hashed in {m['digest_s']:.2f} s "
                                 f"({m['digest_mb_per_s']:.0f} MB/s; model load {m['load_s']:.2f} s); cached beside "
                                 f"the checkpoint: {m['cached_beside_checkpoint']} ({m['second_digest_s']:.4f} s then)",
          f"{m['ratio_to_load']:.2f}x load", "small next to loading") for key, m in f.items()]
    sh = data["index_sharded"]
    rows.append(("index_sharded", f"{sh['num_docs']} SciFact documents: 1 process {sh['one_process_s']:.1f} s, 2 "
                                  f"processes (torchrun, gloo) {sh['two_processes_s']:.1f} s; identical index: "
                                  f"{sh['identical']}", f"{sh['speedup']:.2f}x", ">= 1.6x where the cores allow"))
    q = data["sharding"]
    rows.append(("sharding", f"rerank-run of {q['num_queries']} SciFact queries x {q['top_k']}: 1 process "
                             f"{q['one_process_s']:.1f} s, 2 processes (torchrun, gloo) {q['two_processes_s']:.1f} s; "
                             f"same run: {q['identical']}", f"{q['speedup_2proc']:.2f}x",
                 ">= 1.6x where the cores allow"))
    p = data["reproduce"]
    rows.append(("reproduce", f"SciFact, {p['queries']} queries: rerank-only encodes {p['texts_encoded']:,} texts "
                              f"({p['distinct_candidates']:,} distinct candidates + a prompt per query) in "
                              f"{p['seconds']:.0f} s; e2rank experiment {p['experiment_texts_encoded']:,} texts in "
                              f"{p['experiment_seconds']:.0f} s ({p['backbone']})",
                 f"{p['wall_ratio_vs_experiment']:.2f}x wall", "< 1x"))
    c = data["cpu_inference"]
    c = data["cpu_inference"]
    fast = cpu_inference.FAST
    rows.append(("cpu_inference", f"{fast} vs float32 torch, docs/s: " + ", ".join(
        f"{name} {m[fast]['ratio']:.2f}x ({m[fast]['precision']})" for name, m in c["by_model"].items())
        + f"; SciFact nDCG@10 (MiniLM, {c['queries']} queries): " + "; ".join(
            f"{option} " + ", ".join(f"{n} {d:+.4f}" for n, d in deltas.items())
            for option, deltas in c["scifact_ndcg10_deltas"].items()),
        f"{c['speedup']:.2f}x, {c['scifact_ndcg10_delta']:+.4f}", ">= 2.0x, within 0.005"))
    a = data["ann"]
    rows += [(f"ann ({size})", f"best with recall@100 >= 0.95: {x['setting']}: recall {x['recall_at_100']:.3f}, "
                               f"{x['ms_per_query']:.2f} vs {b['exact_ms_per_query']:.1f} ms/query exact, build "
                               f"{x['build_s']:.0f} s, {x['memory_mb']:.0f} MB; fp16 flat {f16['memory_mb']:.0f} MB "
                               f"(float32 {f16['float32_mb']:.0f}), max score error {f16['max_abs_score_error']:.1e}",
              f"{x['speedup_vs_exact']:.0f}x", ">= 50x at 1M x 1024, recall >= 0.95")
             for size, b in a["by_size"].items() for x, f16 in [(b["best"], b["fp16_flat"])]]
    rows.append(("ann (SciFact)", "nDCG@10 ANN minus exact, MiniLM vectors: " + ", ".join(
        f"{n} {d:+.4f}" for n, d in a["scifact"]["ndcg10_delta"].items()),
        f"{a['scifact_ndcg10_delta']:+.4f}", "within 0.005"))
    v = data["vectors"]
    rows += [(f"vectors {kind} ({v['measured_at']})",
              f"recall@100 {x['recall_at_100']:.3f} with rescore={x['rescore']} (codes alone "
              f"{x['recall_at_100_by_rescore']['None']:.3f}); SciFact nDCG@10 {x['scifact_ndcg10_delta']:+.4f}",
              f"{x['memory_ratio']:.1f}x less memory", goal)
             for kind, goal in (("int8", "4x, recall >= 0.99"), ("binary", "32x, recall >= 0.95"))
             for x in [v[kind]]]
    ap = data["append"]
    rows.append(("append", f"{ap['appended']} documents appended to {ap['num_docs'] - ap['appended']} vs a rebuild of "
                           f"{ap['num_docs']} (encoding included)", f"{ap['cost_ratio']:.3f}", "<= 0.05"))
    lines = ["| benchmark | measured | ratio | goal |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples: a few minutes on this machine")
    parser.add_argument("--output", required=True, help="JSON file for the results")
    parser.add_argument("--model", default="all-minilm-l6-v2", help="backbone for rerank_reuse and encode_throughput")
    parser.add_argument("--workdir", help="where indexes and models are written (default: a temporary folder)")
    parser.add_argument("--ann-size", type=ann_size, action="append", metavar="NUMxDIM",
                        help="ANN at this many vectors of this dimension instead of the mode's sizes "
                             "(repeatable; e.g. 5000000x1024 needs 45 GB under --workdir)")
    parser.add_argument("--resume", action="store_true",
                        help="keep what an interrupted run already wrote to --output; run only the rest")
    args = parser.parse_args(argv)
    output = Path(args.output)
    done = json.loads(output.read_text()) if args.resume and output.exists() else None

    def save(data: dict):
        with atomic_file(output) as out:
            json.dump(data, out, indent=2)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        data = run_all(args.quick, workdir, args.model, save, ann_sizes=args.ann_size, done=done)
    print(table(data))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
