"""Two-stage E2Rank training (stage I: InfoNCE; stage II: InfoNCE + RankNet on listwise prompts)."""
