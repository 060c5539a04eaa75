"""Token ids to vectors, for inference and training alike: ``Pooling``, padding a batch, pooling it."""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch.nn.utils.rnn import pad_sequence


@dataclass(frozen=True)
class Pooling:
    """How a sequence of hidden states becomes one vector."""
    mode: str            # "lasttoken", "mean" or "cls"
    normalize: bool
    max_length: Optional[int]  # tokens per query/document; None: the model's position limit

    @property
    def last_token(self) -> bool:
        return self.mode == "lasttoken"


def pad_batch(batch: List[List[int]], pad_token_id: int, *, left: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` for variable-length id lists (left padding for decoders)."""
    side = "left" if left else "right"
    input_ids = pad_sequence([torch.tensor(x, dtype=torch.long) for x in batch], batch_first=True,
                             padding_value=pad_token_id, padding_side=side)
    mask = pad_sequence([torch.ones(len(x), dtype=torch.long) for x in batch], batch_first=True, padding_side=side)
    return input_ids, mask


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """One float32 vector per sequence: last token (left-padded), CLS or masked mean; normalised if asked."""
    if pooling.mode == "lasttoken":
        if bool((mask[:, -1] == 0).any()):
            raise ValueError("last-token pooling needs left padding")
        vectors = hidden[:, -1]
    elif pooling.mode == "cls":
        vectors = hidden[:, 0]
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    vectors = vectors.float()
    return torch.nn.functional.normalize(vectors, dim=-1) if pooling.normalize else vectors
