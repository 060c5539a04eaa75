"""Two-stage E2Rank training (stage I: InfoNCE; stage II: InfoNCE + RankNet on listwise prompts)."""
from .config import TrainConfig
from .data import ListwiseExample, read_listwise
from .trainer import train

__all__ = ["TrainConfig", "ListwiseExample", "read_listwise", "train"]
