"""Listwise PRF reranking: the prompt, the pseudo-query it becomes, and the rerankers built on it."""
