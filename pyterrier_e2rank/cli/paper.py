"""The paper's evaluation (pt_docs/specification.rst §8): its datasets and figures, the datasets a suite is
given, and the table of our figures beside the paper's."""
import dataclasses
import difflib
from pathlib import Path
from typing import List, Optional

from .experiment import dataset_name, index_name

#: The paper's columns; the last eight are BEIR's, averaged as "BEIR avg".
PAPER_COLUMNS = ("DL19", "DL20", "Covid", "NFC", "Touche", "DBPedia", "SciFact", "Signal", "News", "Robust04")
BEIR_COLUMNS = PAPER_COLUMNS[2:]
#: nDCG@10 x 100 of the paper's tables, reranking BM25 top-100, by row.
PAPER_FIGURES = {
    "BM25": (50.58, 47.96, 59.47, 30.75, 44.22, 31.80, 67.89, 33.05, 39.52, 40.70),
    "E2Rank-0.6B": (70.84, 70.15, 79.17, 38.60, 41.91, 41.96, 73.43, 35.26, 52.75, 53.67),
    "E2Rank-4B": (70.44, 70.64, 83.30, 39.20, 43.16, 42.95, 77.19, 34.48, 52.71, 60.16),
    "E2Rank-8B": (72.95, 71.16, 84.09, 39.08, 42.06, 43.44, 77.49, 34.01, 54.25, 60.34),
}
#: Dataset names (``experiment.dataset_name``) -> column.
PAPER_DATASETS = {
    "msmarco-passage/trec-dl-2019": "DL19", "msmarco-passage/trec-dl-2020": "DL20", "beir/trec-covid": "Covid",
    "beir/nfcorpus": "NFC", "beir/webis-touche2020/v2": "Touche", "beir/dbpedia-entity": "DBPedia",
    "beir/scifact": "SciFact", "beir/signal1m": "Signal", "beir/trec-news": "News", "beir/robust04": "Robust04",
}
#: The paper's suite: ir_datasets ids, and the BEIR folder names of the three collections ir_datasets does
#: not serve in their BEIR form (the user builds them and passes their path).
PAPER_SUITE = ("irds:msmarco-passage/trec-dl-2019/judged", "irds:msmarco-passage/trec-dl-2020/judged",
               "irds:beir/trec-covid", "irds:beir/nfcorpus/test", "irds:beir/webis-touche2020/v2",
               "irds:beir/dbpedia-entity/test", "irds:beir/scifact/test", "signal1m", "trec-news", "robust04")
LOCAL_ONLY = {"signal1m": "Signal", "trec-news": "News", "robust04": "Robust04"}


class DatasetUnavailable(RuntimeError):
    """A dataset that cannot be read here (a manual download, no network): the suite skips it, saying why."""


@dataclasses.dataclass(frozen=True)
class SuiteDataset:
    label: str       # as the user gave it: the key of results.json and of ``runs``
    source: str      # what ``data.dataset`` opens
    name: str        # ``experiment.dataset_name``: tasks and paper columns

    @property
    def column(self) -> Optional[str]:
        return next((c for key, c in PAPER_DATASETS.items() if self.name == key or self.name.startswith(key + "/")),
                    None)

    @property
    def folder(self) -> str:
        """Its folder under ``datasets/``, one per label."""
        return index_name(self.label)

    @property
    def origin(self) -> str:
        """The ir_datasets id, or the absolute path of the folder or file."""
        return self.source if self.source.startswith("irds:") else str(Path(self.source).resolve())


def resolve_dataset(source: str) -> SuiteDataset:
    """A dataset argument checked: an existing folder or file, or an ir_datasets id (``irds:`` optional).
    Raises ``ValueError`` for an unknown id (with close names), ``DatasetUnavailable`` for ``LOCAL_ONLY``
    names (saying how to pass their BEIR folder)."""
    import ir_datasets
    if Path(source).exists():
        return SuiteDataset(source, str(Path(source)), dataset_name(source))
    name = dataset_name(source)
    if name in LOCAL_ONLY:
        raise DatasetUnavailable(
            f"{source}: ir_datasets does not serve BEIR's {name}; build its BEIR folder with BEIR's scripts "
            f"(github.com/beir-cellar/beir) and pass the folder's path as --dataset")
    try:
        ir_datasets.registry[name]  # a pattern's name is registered by looking it up
    except KeyError:
        close = difflib.get_close_matches(name, list(ir_datasets.registry), n=6, cutoff=0.5)
        raise ValueError(f"dataset {source!r}: no such file or folder, and not an ir_datasets id"
                         + (f"; close names: {', '.join('irds:' + c for c in close)}" if close else "")) from None
    return SuiteDataset(source, f"irds:{name}", name)


def paper_row(model_name: str) -> Optional[str]:
    """The paper's row of a model (``E2Rank-0.6B`` for ``Alibaba-NLP/E2Rank-0.6B`` or a folder of that name),
    ``None`` for a model the paper does not report."""
    base = Path(str(model_name).rstrip("/")).name.lower()
    return next((row for row in PAPER_FIGURES if row != "BM25" and row.lower() == base), None)


def _cell(ours: Optional[float], paper: Optional[float]) -> str:
    if ours is None:
        return "–"
    return f"{ours:.2f}" if paper is None else f"{ours:.2f} ({paper:.2f}, {ours - paper:+.2f})"


def results_table(model_name: str, datasets: List[SuiteDataset], finished: dict, unavailable: dict) -> str:
    """The Markdown table of nDCG@10 x 100: a row per system run, a column per dataset and the BEIR average,
    the paper's figure and our difference beside ours where it has one; notes on what was skipped or dropped."""
    names = {"bm25": "BM25", "bm25>>e2rank": f"BM25 >> {Path(str(model_name).rstrip('/')).name}",
             "dense": "dense", "dense>>e2rank": "dense >> E2Rank"}
    systems = [s for s in names if any(s in finished[d.label]["results"] for d in datasets)]
    paper_rows = {"bm25": "BM25", "bm25>>e2rank": paper_row(model_name)}
    beir = [d for d in datasets if d.column in BEIR_COLUMNS]
    lines = ["| system | " + " | ".join(d.label for d in datasets) + f" | BEIR avg ({len(beir)} of 8) |",
             "|---" * (len(datasets) + 2) + "|"]
    for system in systems:
        figures = PAPER_FIGURES.get(paper_rows.get(system))

        def paper(d):
            return None if figures is None or d.column is None else figures[PAPER_COLUMNS.index(d.column)]

        def ours(d):
            value = finished[d.label]["results"].get(system, {}).get("nDCG@10")
            return None if value is None else 100 * value
        cells = [_cell(ours(d), paper(d)) for d in datasets]
        mean = (sum(ours(d) for d in beir) / len(beir)) if beir and all(ours(d) is not None for d in beir) else None
        mean_paper = sum(paper(d) for d in beir) / len(beir) if beir and figures is not None else None
        lines.append(f"| {names[system]} | " + " | ".join(cells) + f" | {_cell(mean, mean_paper)} |")
    notes = ["nDCG@10 x 100; in brackets the paper's figure (pyterrier_e2rank specification §8) and our difference. "
             "All measures in results.json."]
    for d in datasets:
        dropped = finished[d.label]["record"]["first_stage"].get("dropped")
        if dropped and any(dropped.values()):
            notes.append(f"{d.label}: run-file lines dropped (--skip-missing): {dropped['queries']} queries and "
                         f"{dropped['documents']} documents the dataset lacks.")
    notes += [f"skipped {' '.join(why.split())}" for why in unavailable.values()]  # why names the dataset
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
