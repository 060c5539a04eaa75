"""The generative listwise baseline of the study's timing and of ``benchmarks/vs_generative.py``: RankGPT-style
sliding windows whose causal LM greedily writes a permutation ``[3] > [1] > ...`` (pt_docs/study.rst)."""
import re
from typing import List, Optional

import torch

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query."


class GenerativeSlidingWindow:
    """The causal LM of the folder or name ``model_dir`` on ``device`` (default CUDA when present, else CPU; in
    bfloat16 on CUDA, float32 elsewhere, as ``E2Rank``), reading windows of ``window`` passages, ``stride`` apart,
    back to front, and writing ``tokens_per_passage`` tokens per passage; counts its prompt and generated tokens."""

    def __init__(self, model_dir, *, window: int = 20, stride: int = 10, tokens_per_passage: int = 4,
                 device: Optional[str] = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.window, self.stride, self.tokens_per_passage = window, stride, tokens_per_passage
        self.prompt_tokens = self.generated_tokens = self.forward_passes = 0

    def prompt(self, query: str, passages: List[str]) -> str:
        listing = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
        user = (f"I will provide you with {len(passages)} passages, each indicated by a numerical identifier []. "
                f"Rank the passages based on their relevance to the search query: {query}.\n\n{listing}\n"
                f"Search Query: {query}.\nRank the {len(passages)} passages above based on their relevance to the "
                "search query. All the passages should be included and listed using identifiers, in descending "
                "order of relevance. The output format should be [] > [], e.g., [2] > [1], Only respond with the "
                "ranking results, do not say any word or explain.")
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)

    @torch.inference_mode()
    def permutation(self, query: str, passages: List[str]) -> List[int]:
        ids = self.tokenizer(self.prompt(query, passages), return_tensors="pt", add_special_tokens=False)
        ids = ids.to(self.device)
        length = self.tokens_per_passage * len(passages)
        out = self.model.generate(**ids, do_sample=False, max_new_tokens=length, min_new_tokens=length,
                                  pad_token_id=self.tokenizer.pad_token_id)
        self.prompt_tokens += ids["input_ids"].shape[1]
        self.generated_tokens += out.shape[1] - ids["input_ids"].shape[1]
        self.forward_passes += out.shape[1] - ids["input_ids"].shape[1]  # one prefill + one per further token
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        order = []
        for n in (int(x) - 1 for x in re.findall(r"\[(\d+)\]", text)):
            if 0 <= n < len(passages) and n not in order:
                order.append(n)
        return order + [i for i in range(len(passages)) if i not in order]

    def rerank(self, query: str, passages: List[str]) -> List[int]:
        """Indices of ``passages`` in the new order."""
        ranking = list(range(len(passages)))
        end = len(ranking)
        start = max(0, end - self.window)
        while True:
            window = ranking[start:end]
            order = self.permutation(query, [passages[i] for i in window])
            ranking[start:end] = [window[i] for i in order]
            if start == 0:
                return ranking
            end -= self.stride
            start = max(0, start - self.stride)
