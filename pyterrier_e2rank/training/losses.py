"""The two losses of E2Rank training (DESIGN.md §1 "Training")."""
import torch
import torch.nn.functional as F

INFONCE_TEMPERATURE = 0.03
RANKNET_SCALE = 10.0


def info_nce(queries: torch.Tensor, docs: torch.Tensor, positive_index: torch.Tensor,
             temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """Contrastive loss of each query against all documents of the (gathered) batch.

    ``queries [q, d]`` and ``docs [n, d]`` are normalised; ``positive_index [q]`` is the row of each
    query's positive in ``docs``. Every other row is a negative: the query's hard negatives and the
    other queries' documents (in-batch negatives)."""
    logits = queries @ docs.T / temperature
    return F.cross_entropy(logits, positive_index)


def ranknet(scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RankNet over all ordered pairs (i, j) with ``relevance_i > relevance_j`` among real documents.

    ``scores``, ``relevance`` and ``mask`` are ``[q, slate]``; masked positions (lists shorter than the
    longest) enter no pair. Returns the mean of ``log(1 + exp(-(s_i - s_j)))`` over pairs."""
    pairs = (relevance.unsqueeze(2) > relevance.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)
    differences = scores.unsqueeze(2) - scores.unsqueeze(1)
    losses = F.softplus(-differences)
    return losses[pairs].mean() if bool(pairs.any()) else scores.sum() * 0.0


def gather_with_grad(tensor: torch.Tensor):
    """All processes' rows (in-batch negatives across GPUs), keeping this process's gradient.

    Returns ``(rows, offset)``: the concatenated rows and where this process's rows start. Processes
    may hold different numbers of rows (lists of mixed lengths)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(tensor)], device=tensor.device))
    sizes = [int(s) for s in sizes]
    padded = F.pad(tensor, (0, 0, 0, max(sizes) - len(tensor))).contiguous()
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    gathered[rank] = tensor
    rows = torch.cat([g[:n] for g, n in zip(gathered, sizes)])
    return rows, sum(sizes[:rank])
