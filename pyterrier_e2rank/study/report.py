"""The study's outputs (pt_docs/study.rst): ``results.json``, ``report.md`` (tables a-f) and ``figures/`` (PNG),
each written atomically."""
import json
from pathlib import Path

import pandas as pd

from ..io import atomic_file


def write(output: Path, header: dict, datasets, finished: dict) -> None:
    """``results.json``, the figures and ``report.md`` of the datasets ``finished`` so far (``Study.run``'s)."""
    with atomic_file(output / "results.json") as out:
        json.dump({label: done["results"] for label, done in finished.items()}, out, indent=2)
    (output / "figures").mkdir(exist_ok=True)
    sections = [_intro(header)]
    for dataset in datasets:
        if dataset.label in finished:
            done = finished[dataset.label]
            figures = _figures(output / "figures", dataset.folder, pd.DataFrame(done["grid"]),
                               pd.DataFrame(done["timing"]), header["measures"][0])
            sections.append(_dataset_section(dataset.label, header, done, figures))
    with atomic_file(output / "report.md") as out:
        out.write("\n\n".join(sections) + "\n")


def _intro(header: dict) -> str:
    models = header["models"]
    second = f"; second model (systems `@{header['suffixes'][1][1:]}`): `{models[1]}`" if len(models) > 1 else ""
    return (f"# e2rank study\n\nModel: `{models[0]}`{second}. Each first stage's top {header['top_k']} candidates "
            f"reranked with their stored vectors; E2Rank's prompt holds the first "
            f"{min(header['num_input_docs'], header['top_k'])} of them. "
            f"All measures in results.json; seconds are wall-clock per query on this machine.")


def _table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _value(results: dict, system: str, measure: str) -> str:
    value = results.get(system, {}).get(measure)
    return "–" if value is None else f"{value:.4f}"


def _dataset_section(label: str, header: dict, done: dict, figures: dict) -> str:
    results, seconds, measures = done["results"], done["seconds"], header["measures"]
    main, stages = measures[0], done["first_stages"]
    prf = header["prf"]
    parts = [f"## {label} ({done['queries']} queries)"]

    systems = ["bm25", "bm25>>rerank-embedding", "bm25>>rerank-e2rank", *(f"bm25>>{p}" for p in prf)]
    parts += ["### a) E2Rank against dense pseudo-relevance feedback (BM25's candidates, the same vectors)",
              _table(["system", *measures, "s/query"],
                     [[s, *(_value(results, s, m) for m in measures),
                       f"{seconds[s]:.4f}" if s in seconds else "–"] for s in systems])]

    grid = pd.DataFrame(done["grid"])
    depths = sorted(grid["depth"].unique()) if len(grid) else []
    rows = [[k, *(_grid_cell(grid, k, d, main) for d in depths)] for k in sorted(grid["k"].unique())] if depths else []
    parts += [f"### b) Prompt documents k and rerank depth (BM25's candidates): {main} (s/query)",
              _table(["k", *(f"depth {d}" for d in depths)], rows), f"![grid]({figures['grid']})"]

    if len(header["suffixes"]) > 1:
        suffix, rows = header["suffixes"][1], []
        for stage in stages:
            gains = [_gain(results, stage, s, main) for s in ("", suffix)]
            share = "–" if None in gains or gains[0] == 0 else f"{1 - gains[1] / gains[0]:.0%}"
            for s, gain, model in zip(("", suffix), gains, header["models"]):
                rows.append([stage, f"`{model}`", _value(results, f"{stage}>>rerank-embedding{s}", main),
                             _value(results, f"{stage}>>rerank-e2rank{s}", main),
                             "–" if gain is None else f"{gain:+.4f}", share if s == "" else ""])
        c = _table(["first stage", "model", "rerank-embedding", "rerank-e2rank", "gain", "training's share"], rows)
    else:
        c = "Give a second `--model` (one not trained for the listwise prompt) to answer this question."
    parts += [f"### c) The listwise prompt without its training: {main}", c,
              "Gain: rerank-e2rank over rerank-embedding of the same model; training's share: 1 - the second "
              "model's gain / the first's."]

    parts += [f"### d) First stages: {main}",
              _table(["first stage", "alone", "rerank-embedding", "rerank-e2rank", *prf],
                     [[s, _value(results, s, main), *(_value(results, f"{s}>>{r}", main)
                                                      for r in ("rerank-embedding", "rerank-e2rank", *prf))]
                      for s in stages])]

    timing = pd.DataFrame(done["timing"])
    parts += ["### e) Wall-clock per query (BM25's candidates)",
              _table(["system", "s/query", "queries", "device"],
                     [[r.system, f"{r.seconds_per_query:.4f}", r.queries, r.device] for r in timing.itertuples()]),
              f"![timing]({figures['timing']})"]

    systems = ["dense", "dense>>rerank-e2rank", "bm25>>rerank-e2rank"]
    parts += ["### f) End to end: E2Rank retrieves, then reranks its own candidates",
              _table(["system", *measures], [[s, *(_value(results, s, m) for m in measures)] for s in systems])]
    return "\n\n".join(parts)


def _grid_cell(grid: pd.DataFrame, k, depth, measure: str) -> str:
    row = grid[(grid["k"] == k) & (grid["depth"] == depth)]
    return "–" if row.empty else f"{row[measure].iat[0]:.4f} ({row['seconds_per_query'].iat[0]:.3f})"


def _gain(results: dict, stage: str, suffix: str, measure: str):
    pair = [results.get(f"{stage}>>{r}{suffix}", {}).get(measure) for r in ("rerank-e2rank", "rerank-embedding")]
    return None if None in pair else pair[0] - pair[1]


def _figures(folder: Path, name: str, grid: pd.DataFrame, timing: pd.DataFrame, measure: str) -> dict:
    """``figures/<name>-grid.png`` (``measure`` and seconds per query against k, a line per depth) and
    ``figures/<name>-timing.png`` (seconds per query of each system); their paths relative to the report."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(f"the study's figures need matplotlib: pip install 'pyterrier-e2rank[study]' ({e})") from e
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for depth, rows in grid.groupby("depth") if len(grid) else ():
        rows = rows.sort_values("k")
        axes[0].plot(rows["k"], rows[measure], marker="o", label=f"depth {depth}")
        axes[1].plot(rows["k"], rows["seconds_per_query"], marker="o", label=f"depth {depth}")
    for axis, label in zip(axes, (measure, "seconds per query")):
        axis.set(xlabel="prompt documents k", ylabel=label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    grid_path = _save(fig, folder / f"{name}-grid.png")
    fig, axis = plt.subplots(figsize=(7, 0.5 + 0.5 * max(1, len(timing))))
    if len(timing):
        axis.barh(timing["system"], timing["seconds_per_query"])
    axis.set(xlabel="seconds per query")
    timing_path = _save(fig, folder / f"{name}-timing.png")
    return {"grid": grid_path, "timing": timing_path}


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    with atomic_file(path, mode="wb") as out:
        fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"
