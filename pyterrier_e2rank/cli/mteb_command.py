"""``e2rank mteb``: models side by side on mteb tasks through ``E2RankMTEB``; mteb's own result files are kept (and
reused) under ``OUTPUT/mteb``, the table goes to ``results.md`` and ``results.json``."""
import json
from pathlib import Path
from typing import Dict, Sequence

from ..checks import positive_int
from ..io import atomic_file, refuse_output_as_input, writer_lock
from ..model.e2rank import E2Rank
from ..model.text import DEFAULT_QUERY_TASK, dataset_query_task
from . import arguments
from .experiment import dataset_name

FILES = ("results.json", "results.md")
#: Reported beside the main score of a retrieval task.
RETRIEVAL_MEASURE = "ndcg_at_10"


def mteb_tasks(names: Sequence[str]) -> list:
    """The mteb tasks of ``--tasks``: mteb names, or datasets (``irds:`` names, local folders and files:
    ``mteb_adapter.mteb_task`` with the authors' instruction of the dataset, else the default one, as ``e2rank
    experiment`` gives them). Raises ``ValueError`` naming an unknown one."""
    from ..mteb_adapter import mteb_task  # mteb is the [mteb] extra's: `e2rank` runs without it
    import mteb
    tasks = []
    for name in names:
        if Path(name).exists() or name.startswith("irds:"):
            tasks.append(mteb_task(name, query_task=dataset_query_task(dataset_name(name)) or DEFAULT_QUERY_TASK))
            continue
        try:
            tasks.append(mteb.get_task(name))
        except KeyError:
            raise ValueError(f"--tasks {name!r}: neither an mteb task (mteb.get_tasks() lists them) nor a local "
                             f"dataset") from None
    return tasks


def run_mteb(models: Sequence[str], tasks: list, output, *, verbose: bool = True,
             **model_options) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Evaluates each model of ``models`` (loaded by ``E2Rank(name, **model_options)``) on ``tasks`` with mteb,
    writes ``output``'s ``results.json`` and ``results.md`` and returns ``{task: {model: {measure: value}}}``: the
    task's main score, and nDCG@10 for a retrieval task. mteb's results of a model and task already under
    ``output/mteb`` are reused. Raises ``ValueError`` for a model given twice, ``ArtifactLocked``."""
    import mteb
    from ..mteb_adapter import E2RankMTEB
    output = Path(output)
    if len(set(models)) != len(models):
        raise ValueError(f"--model: {sorted({m for m in models if models.count(m) > 1})} given twice")
    for name in FILES:
        refuse_output_as_input(output / name, **{f"--model {m}": m for m in models},
                               **{f"--tasks {t.metadata.name}": t.metadata.dataset["path"] for t in tasks})
    results: Dict[str, Dict[str, Dict[str, float]]] = {t.metadata.name: {} for t in tasks}
    with writer_lock(output):
        for name in models:
            encoder = E2RankMTEB(E2Rank(name, verbose=verbose, **model_options))
            evaluated = mteb.evaluate(encoder, tasks, cache=mteb.ResultCache(output / "mteb"),
                                      show_progress_bar=verbose)
            by_name = {result.task_name: result for result in evaluated.task_results}
            for task in tasks:
                result = by_name[task.metadata.name]
                measures = dict.fromkeys([task.metadata.main_score] + (
                    [RETRIEVAL_MEASURE] if task.metadata.type == "Retrieval" else []))
                results[task.metadata.name][name] = {m: float(result.get_score(getter=lambda s, m=m: s[m]))
                                                     for m in measures}
        with atomic_file(output / "results.json") as out:
            json.dump(results, out, indent=2)
        with atomic_file(output / "results.md") as out:
            out.write(results_table(results, models))
    return results


def results_table(results: dict, models: Sequence[str]) -> str:
    """A Markdown table: one row per task and measure, one column per model."""
    lines = ["| task | measure | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for task, by_model in results.items():
        for measure in next(iter(by_model.values()), {}):
            lines.append(f"| {task} | {measure} | " + " | ".join(f"{by_model[m][measure]:.4f}" for m in models) + " |")
    return "\n".join(lines) + "\n"


def _mteb_command(args) -> int:
    run_mteb(args.model, mteb_tasks(args.tasks), args.output, max_length=args.max_length,
             **arguments.model_options(args))
    print((Path(args.output) / "results.md").read_text(encoding="utf-8"), end="")
    print(f"written to {Path(args.output) / 'results.json'} (mteb's files under {Path(args.output) / 'mteb'})")
    return 0


def register(parsers: dict) -> None:
    p = parsers["mteb"]
    p.add_argument("--model", action="append", required=True,
                   help="model directory or hub id; repeat it for columns side by side (a base, a trained checkpoint)")
    p.add_argument("--tasks", nargs="+", required=True,
                   help="mteb task names (e.g. SciFact NFCorpus), or datasets: irds: names, BEIR folders")
    p.add_argument("--output", required=True, help="the directory of results.json, results.md and mteb/")
    p.add_argument("--max-length", type=arguments.Checked(positive_int),
                   help="token limit of every text (default: the model's; the authors' MTEB runs: 8192)")
    p.add_argument("--doc-max-words", type=arguments.Checked(positive_int),
                   help="cut documents to this many words first (default: no cut, as the authors' MTEB runs)")
    arguments.add_model_run_options(p)
    p.set_defaults(func=_mteb_command)
