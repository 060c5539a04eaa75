"""How texts are written before they reach the model: task texts, instructed queries, truncated documents
(pt_docs/specification.rst §3-§4)."""
from typing import Optional

#: The retrieval instruction E2Rank uses when a dataset has none of its own.
DEFAULT_QUERY_TASK = "Given a web search query, retrieve relevant passages that answer the query"

#: The task sentence of the listwise prompt in the published runs, used for every dataset.
DEFAULT_RERANK_TASK = "Given a web search query and some relevant documents, rerank the documents that answer the query"

#: Retrieval instructions of the authors' evaluation (``EVAL_PROMPTS`` of Alibaba-NLP/E2Rank ``src/eval.py``,
#: word for word), keyed by the ir_datasets name without split; DL19/DL20 use ``DEFAULT_QUERY_TASK``.
DATASET_QUERY_TASKS = {
    "beir/scifact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "beir/trec-covid": "Given a query on COVID-19, retrieve documents that answer the query",
    "beir/nfcorpus": "Given a question, retrieve relevant documents that best answer the question",
    "beir/webis-touche2020": "Given a question, retrieve detailed and persuasive arguments that answer the question",
    "beir/dbpedia-entity": "Given a query, retrieve relevant entity descriptions from DBPedia",
    # the three BEIR collections ir_datasets does not serve: local BEIR folders, named as BEIR names them
    "beir/signal1m": "Given a news article title, retrieve relevant tweets",
    "beir/trec-news": "Given a news headline, retrieve relevant relevant news articles that provide important "
                      "context or background information",  # sic, as in the authors' script
    "beir/robust04": "Given a newswire query, retrieve relevant news articles that address the query.",
}

#: Candidates are cut to their first 1024 whitespace-separated words, in the prompt and when embedded.
DOC_MAX_WORDS = 1024

def doc_token_cap(max_words: int) -> int:
    """The most tokens a document cut to ``max_words`` words may keep (4 per word: 4,096 for 1,024), a safety net
    for unspaced text."""
    return 4 * max_words


def format_query(query: str, task: Optional[str]) -> str:
    """The instructed query of the authors' script (no space after ``Query:``); plain when no task."""
    if task is None:
        return query
    return f"Instruct: {task}\nQuery:{query}"


def truncate_words(text: str, max_words: Optional[int] = DOC_MAX_WORDS) -> str:
    """``" ".join(text.split()[:max_words])``; ``None`` keeps the text as it is."""
    if max_words is None:
        return text
    return " ".join(text.split()[:max_words])


def join_title(title: Optional[str], text: Optional[str]) -> str:
    """BEIR documents: ``title + " " + text`` when a title exists (our choice, as in BEIR/MTEB)."""
    title = (title or "").strip()
    text = text or ""
    return f"{title} {text}" if title else text


def dataset_query_task(dataset_name: str) -> Optional[str]:
    """The authors' retrieval instruction for an ir_datasets name such as ``irds:beir/scifact/test``."""
    name = dataset_name.removeprefix("irds:")
    for key, task in DATASET_QUERY_TASKS.items():
        if name == key or name.startswith(key + "/"):
            return task
    return None
