"""The listwise prompt whose embedding is E2Rank's pseudo-query, for the reranker and the trainer alike
(pt_docs/specification.rst §5)."""
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..checks import positive_int
from ..deprecation import renamed_argument, renamed_keywords
from ..model.text import DEFAULT_RERANK_TASK, DOC_MAX_WORDS, doc_token_cap, truncate_words

PROMPT_VARIANTS = ("eval", "readme")


@dataclass(frozen=True)
class ListwisePrompt:
    """Writes a query and its top candidates into the text E2Rank embeds as a pseudo-query.

    Args:
        task: the task sentence that opens the prompt.
        num_input_docs: how many top candidates enter the prompt (20 in the paper; 0: the query alone in the
            listwise prompt, the study's k = 0).
        doc_max_words: each document is cut to this many whitespace-separated words first.
        prompt_doc_max_tokens: optional per-document token budget (for small models).
        prompt_max_tokens: optional total budget in tokens; the longest documents are cut first, to one cap.
        prompt_variant: ``"eval"``, the authors' evaluation prompt (published numbers), or ``"readme"``, the
            model card's (no newline before ``Search Query:``, documents end with ``<|endoftext|>``).

    Raises:
        ValueError: an unknown variant, or a count that is not a positive integer (``num_input_docs``: >= 0).
    """
    task: str = DEFAULT_RERANK_TASK
    num_input_docs: int = 20
    doc_max_words: Optional[int] = DOC_MAX_WORDS
    prompt_doc_max_tokens: Optional[int] = None
    prompt_max_tokens: Optional[int] = None
    prompt_variant: str = "eval"

    def __post_init__(self):
        if self.prompt_variant not in PROMPT_VARIANTS:
            raise ValueError(f"prompt_variant must be one of {PROMPT_VARIANTS}, got {self.prompt_variant!r}")
        positive_int(self.num_input_docs, "num_input_docs", minimum=0)
        for name in ("doc_max_words", "prompt_doc_max_tokens", "prompt_max_tokens"):
            positive_int(getattr(self, name), name, allow_none=True)

    @property
    def variant(self) -> str:
        renamed_argument("ListwisePrompt.variant", "prompt_variant")  # warns where it is read
        return self.prompt_variant

    def content(self, query: str, docs: Sequence[str]) -> str:
        """The user message: task, numbered documents (as given, no truncation here), query."""
        if self.prompt_variant == "eval":
            listing = "\n".join(f"[{i}] {doc}" for i, doc in enumerate(docs, start=1))
            return f"{self.task}:\nDocuments:\n{listing}\nSearch Query: {query}"
        listing = "\n".join(f"[{i}] {doc}<|endoftext|>" for i, doc in enumerate(docs, start=1))
        return f"{self.task}:\nDocuments:\n{listing}Search Query:{query}"

    def render(self, tokenizer, query: str, docs: Sequence[str]) -> str:
        """The exact string to embed: the first ``num_input_docs`` documents, truncated to the budgets,
        wrapped in the tokenizer's chat template when it has one. No end-of-text token is added."""
        docs = [truncate_words(doc, self.doc_max_words) for doc in docs[:self.num_input_docs]]
        if self.prompt_doc_max_tokens is not None:
            docs = [_cut_tokens(tokenizer, doc, self.prompt_doc_max_tokens) for doc in docs]
        if self.doc_max_words is not None:  # the safety net for unspaced text, as when documents are embedded;
            cap = doc_token_cap(self.doc_max_words)  # a token holds at least one byte, so short texts are skipped
            docs = [_cut_tokens(tokenizer, doc, cap) if len(doc.encode()) > cap else doc for doc in docs]
        prompt = wrap_user_message(tokenizer, self.content(query, docs))
        if self.prompt_max_tokens is None or count_tokens(tokenizer, prompt) <= self.prompt_max_tokens:
            return prompt
        return self._fit(tokenizer, query, docs)

    def _fit(self, tokenizer, query: str, docs: List[str]) -> str:
        """Cut the longest documents to a common token cap until the prompt fits ``prompt_max_tokens``."""
        overhead = count_tokens(tokenizer, wrap_user_message(tokenizer, self.content(query, [""] * len(docs))))
        if overhead > self.prompt_max_tokens:
            raise ValueError(
                f"the listwise prompt needs {overhead} tokens without any document text, more than its "
                f"budget of {self.prompt_max_tokens} tokens: shorten the query or the task sentence, or raise "
                f"prompt_max_tokens")
        doc_ids = [token_ids(tokenizer, doc) for doc in docs]
        cap = _water_level([len(ids) for ids in doc_ids], self.prompt_max_tokens - overhead)
        while True:
            cut = [tokenizer.decode(ids[:cap]) if len(ids) > cap else doc for doc, ids in zip(docs, doc_ids)]
            prompt = wrap_user_message(tokenizer, self.content(query, cut))
            excess = count_tokens(tokenizer, prompt) - self.prompt_max_tokens
            if excess <= 0 or cap == 0:
                return prompt
            cap = max(0, cap - max(1, -(-excess // len(docs))))


ListwisePrompt.__init__ = renamed_keywords(variant="prompt_variant")(ListwisePrompt.__init__)


def wrap_user_message(tokenizer, content: str) -> str:
    """One user turn through the chat template (generation prompt, thinking off); as is without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
    return content


def token_ids(tokenizer, text: str) -> List[int]:
    """The ids of ``text`` alone, however long: lengths are cut here, so the tokenizer's warning about
    sequences longer than the model is silenced."""
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def count_tokens(tokenizer, text: str) -> int:
    """Tokens the model will read for ``text``, special tokens the tokenizer adds included."""
    return len(token_ids(tokenizer, text)) + tokenizer.num_special_tokens_to_add()


def _cut_tokens(tokenizer, text: str, max_tokens: int) -> str:
    ids = token_ids(tokenizer, text)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def _water_level(lengths: Sequence[int], budget: int) -> int:
    """The largest cap c with sum(min(length, c)) <= budget."""
    lo, hi = 0, max(lengths, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo
