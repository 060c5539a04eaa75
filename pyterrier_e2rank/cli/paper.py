"""The paper's evaluation (pt_docs/specification.rst §8): its datasets and figures (BEIR's and BRIGHT's), the
datasets a suite is given, and the table of our figures beside the paper's."""
import dataclasses
import difflib
from pathlib import Path
from typing import List, Optional

from .. import data
from ..bright import DOMAINS, domain_of
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
#: BRIGHT's domains; nDCG@10 x 100 averaged over the twelve, reranking BM25 top-100 (the paper's Table 22, which
#: gives no figure per domain).
BRIGHT_SUITE = tuple(f"bright/{domain}" for domain in DOMAINS)
PAPER_BRIGHT = {"BM25": 13.7, "E2Rank-0.6B": 20.2, "E2Rank-4B": 22.3, "E2Rank-8B": 22.5}


class DatasetUnavailable(OSError, RuntimeError):
    """A dataset that cannot be read here (a manual download, no network): the suite skips it, saying why; a user
    error of ``e2rank`` (``main.USER_ERRORS``) elsewhere."""


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


def resolve_dataset(source: str, *, bright_dir=None, bright_query: str = "query") -> SuiteDataset:
    """A dataset argument checked: an existing folder or file, a BRIGHT domain (``bright/<domain>``, opened by
    ``data.bright_dataset`` from ``bright_dir`` or the hub, ``bright_query`` its query field), or an ir_datasets id
    (``irds:`` optional). Raises ``ValueError`` for an unknown id (with close names) or BRIGHT domain,
    ``DatasetUnavailable`` for ``LOCAL_ONLY`` names (saying how to pass their BEIR folder) and BRIGHT domains whose
    files cannot be had (naming the folder)."""
    import ir_datasets
    if Path(source).exists():
        return SuiteDataset(source, str(Path(source)), dataset_name(source))
    bright = domain_of(source)
    if bright is not None:
        try:
            field = bright_query if bright[1] == "query" else bright[1]
            ds = data.bright_dataset(bright[0], bright_dir=bright_dir, query=field)
        except (OSError, RuntimeError) as e:  # a copy without the domain's files; the hub not reachable
            raise DatasetUnavailable(f"{source}: {type(e).__name__}: {e}") from None
        return SuiteDataset(source, f"irds:{ds.irds_ref().dataset_id()}", f"bright/{bright[0]}")
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
    bright = [d for d in datasets if d.name.startswith("bright/")]
    averages = {"BEIR": (beir, 8)} if beir or not bright else {}
    averages.update({"BRIGHT": (bright, len(DOMAINS))} if bright else {})
    lines = ["| system | " + " | ".join(d.label for d in datasets) + " | "
             + " | ".join(f"{name} avg ({len(sets)} of {n})" for name, (sets, n) in averages.items()) + " |",
             "|---" * (len(datasets) + 1 + len(averages)) + "|"]
    compared = False  # whether any cell shows a figure of the paper's
    for system in systems:
        figures = PAPER_FIGURES.get(paper_rows.get(system))
        bright_paper = PAPER_BRIGHT.get(paper_rows.get(system)) if len(bright) == len(DOMAINS) else None

        def paper(d):
            return None if figures is None or d.column is None else figures[PAPER_COLUMNS.index(d.column)]

        def ours(d):
            value = finished[d.label]["results"].get(system, {}).get("nDCG@10")
            return None if value is None else 100 * value
        def mean(sets, of):
            values = [of(d) for d in sets]
            return sum(values) / len(values) if values and None not in values else None
        pairs = [(ours(d), paper(d)) for d in datasets] + [
            (mean(beir, ours), mean(beir, paper)) if name == "BEIR" else (mean(bright, ours), bright_paper)
            for name in averages]
        cells = [_cell(value, figure) for value, figure in pairs]
        compared = compared or any(value is not None and figure is not None for value, figure in pairs)
        lines.append(f"| {names[system]} | " + " | ".join(cells) + " |")
    notes = ["nDCG@10 x 100" + ("; in brackets the paper's figure (pyterrier_e2rank specification §8) and our "
                                "difference" if compared else "") + ". All measures in results.json."]
    if bright:
        notes.append("BRIGHT: the paper gives only the average over its 12 domains, reranking BM25 top-100 with the "
                     "query texts (Table 22: " + ", ".join(f"{k} {v}" for k, v in PAPER_BRIGHT.items()) + "); no "
                     "figure per domain, so only the average is compared, and only when all 12 domains ran.")
    for d in datasets:
        excluded = finished[d.label]["record"]["first_stage"].get("excluded_ids")
        if excluded is not None:
            notes.append(f"{d.label}: {excluded['removed']} documents of the queries' excluded_ids removed from the "
                         f"first stage's top {excluded['of_top']} before reranking and evaluation (BRIGHT's rule)"
                         + ("; queries: the reasoning field" if d.source.endswith("/reasoning") else "") + ".")
        dropped = finished[d.label]["record"]["first_stage"].get("dropped")
        if dropped and any(dropped.values()):
            notes.append(f"{d.label}: run-file lines dropped (--skip-missing): {dropped['queries']} queries and "
                         f"{dropped['documents']} documents the dataset lacks.")
    notes += [f"skipped {' '.join(why.split())}" for why in unavailable.values()]  # why names the dataset
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
