"""``EncodeStats``: the work of a model's forward passes (``E2Rank.stats``, ``E2Rank.counting``)."""
import threading
from dataclasses import dataclass, fields

_STATS_LOCK = threading.Lock()


@dataclass
class EncodeStats:
    """Work done by the model: forward passes, texts, real tokens and padded positions."""
    forward_passes: int = 0
    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0

    def __add__(self, other: "EncodeStats") -> "EncodeStats":
        return EncodeStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def add(self, other: "EncodeStats") -> None:
        """Adds ``other`` in place (a ``counting`` record)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def __sub__(self, other: "EncodeStats") -> "EncodeStats":
        return EncodeStats(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    @property
    def padding_fraction(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


def add_stats(owner, work: EncodeStats) -> None:
    """``owner.stats = owner.stats + work``, atomic across threads (a new record each time)."""
    with _STATS_LOCK:
        owner.stats = owner.stats + work
