"""Commands on many processes (``torchrun``, ``accelerate launch``): each process runs its block of the queries on
its own device, process 0 merges and writes; frames and errors travel by a gloo group. One process: plain calls."""
import contextlib
import datetime
import os
import pickle
from typing import Callable, List, Optional, TypeVar

import numpy as np
import pandas as pd

from ..index.indexer import distributed_context
from ..io import writer_lock

#: How long a process waits for the others' blocks, or for process 0 to build an index.
GATHER_TIMEOUT = datetime.timedelta(hours=12)
T = TypeVar("T")
_groups = {}


def process_device(device: Optional[str]) -> Optional[str]:
    """``device``, or under a launcher with CUDA for ``None`` or ``"cuda"``: ``cuda:LOCAL_RANK``."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None or device not in (None, "cuda"):
        return device
    import torch
    return f"cuda:{int(local_rank)}" if torch.cuda.is_available() else device


def is_main_process() -> bool:
    """Whether this is process 0 (always, in one process): the one that writes outputs and prints."""
    return distributed_context()[0] == 0


def main_process_lock(output) -> contextlib.AbstractContextManager:
    """``writer_lock(output)`` taken by process 0, the one writer; nothing in the others, or without ``output``."""
    return writer_lock(output) if output and is_main_process() else contextlib.nullcontext()


def main_process_decides(function: Callable[[], T]) -> T:
    """``function()`` called by process 0 alone, its (picklable) value returned or its exception raised in every
    process: a decision all take alike from files process 0 writes."""
    rank, world, _ = distributed_context()
    if world == 1:
        return function()
    import torch.distributed as dist
    value, error = None, None
    if rank == 0:
        try:
            value = function()
        except Exception as e:
            e.add_note(f"(raised by process 0 of {world})")
            error = e
    outcome = [value, _picklable(error)]
    dist.broadcast_object_list(outcome, src=0, group=_object_group())
    if error is not None or outcome[1] is not None:
        raise error or outcome[1]
    return outcome[0]


def main_process_first(function: Callable[[], T]) -> T:
    """``function()`` run by process 0 (building an index, a download), then by the others (finding it done);
    an exception of process 0 is raised in every process."""
    done = []
    main_process_decides(lambda: done.append(function()))
    return done[0] if done else function()


def gather_to_main_process(value) -> Optional[list]:
    """Every process's ``value`` (picklable), in process order, in process 0; ``None`` in the others."""
    rank, world, _ = distributed_context()
    if world == 1:
        return [value]
    import torch.distributed as dist
    values = [None] * world if rank == 0 else None
    dist.gather_object(value, values, dst=0, group=_object_group())
    return values


def query_blocks(qids, world: int) -> List[list]:
    """The distinct ``qids`` in order of first appearance, cut into ``world`` contiguous blocks of sizes differing
    by at most one (the first ones larger; empty ones when there are fewer queries than processes)."""
    distinct = pd.unique(pd.Series(qids, dtype=object))
    return [block.tolist() for block in np.array_split(distinct, world)]


def transform_by_query(transformer, frame: pd.DataFrame, *, verbose: bool = False) -> Optional[pd.DataFrame]:
    """``transformer(frame)``, each process (all given the same ``frame``) transforming its block of qids
    (``query_blocks``): process 0 returns the blocks' results in process order, the others ``None``. An error in
    any process is raised in every process, with a note naming the process and its first qid. ``verbose`` prints
    each process's share."""
    rank, world, _ = distributed_context()
    if world == 1:
        return transformer(frame)
    if frame.empty:  # no queries to share: every process sees that, none waits for another
        return transformer(frame) if rank == 0 else None
    import torch.distributed as dist
    group = _object_group()
    block = query_blocks(frame["qid"], world)[rank]
    if verbose:
        print(f"process {rank} of {world}: {len(block)} of {frame['qid'].nunique()} queries", flush=True)
    result, error = None, None
    if block:
        try:
            result = transformer(frame[frame["qid"].isin(block)])
        except Exception as e:  # every process must hear of it, or the others wait for this one's frame
            e.add_note(f"(raised by process {rank} of {world}, in its queries from qid {block[0]!r})")
            error = e
    errors = [None] * world
    dist.all_gather_object(errors, _picklable(error), group=group)
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        raise error if error is not None else failed
    results = gather_to_main_process(result)
    if rank != 0:
        return None
    return pd.concat([r for r in results if r is not None], ignore_index=True)


def _object_group():
    """The gloo group frames and errors travel by (one per default group, whatever its backend)."""
    import torch.distributed as dist
    key = id(dist.group.WORLD)
    if key not in _groups:
        _groups[key] = dist.new_group(backend="gloo", timeout=GATHER_TIMEOUT)
    return _groups[key]


def _picklable(error: Optional[BaseException]) -> Optional[BaseException]:
    """``error`` itself when it can travel to the other processes, else a ``RuntimeError`` with its text."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error} {' '.join(getattr(error, '__notes__', []))}")
