"""Commands on many processes (``torchrun``, ``accelerate launch``): the queries of a frame are split across
the processes, each runs its block on its own device, process 0 merges. In one process everything here is the
plain call. Frames and errors travel through a gloo process group of their own (``_object_group``).
"""
import datetime
import os
import pickle
from typing import Callable, List, Optional, TypeVar

import numpy as np
import pandas as pd

from ..index.indexer import distributed_context

#: How long a process waits for the others' blocks, or for process 0 to build an index.
GATHER_TIMEOUT = datetime.timedelta(hours=12)
T = TypeVar("T")
_groups = {}


def process_device(device: Optional[str]) -> Optional[str]:
    """This process's device: under a launcher with CUDA, ``None`` or ``"cuda"`` is ``cuda:LOCAL_RANK``;
    anything else is returned as given."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None or device not in (None, "cuda"):
        return device
    import torch
    return f"cuda:{int(local_rank)}" if torch.cuda.is_available() else device


def is_main_process() -> bool:
    """Whether this is process 0 (always, in one process): the one that writes outputs and prints."""
    return distributed_context()[0] == 0


def main_process_decides(function: Callable[[], T]) -> T:
    """``function()`` called by process 0 alone: its value (picklable) returned, or its exception raised, in
    every process; for a decision all must take alike from files process 0 alone writes."""
    rank, world, _ = distributed_context()
    if world == 1:
        return function()
    if rank != 0:
        return _from_main_process()
    try:
        value = function()
    except Exception as e:
        _from_main_process(error=e)
        raise
    return _from_main_process(value)


def main_process_first(function: Callable[[], T]) -> T:
    """``function()`` run by process 0 first (building an index, a download), then by the others (finding it
    built, on a file system every process sees); an exception of process 0 is raised in every process."""
    done = []
    main_process_decides(lambda: done.append(function()))
    return done[0] if done else function()


def _from_main_process(value=None, error: Optional[Exception] = None):
    """Process 0's ``value`` in every process, or its ``error`` raised in the others (a note naming process 0)."""
    import torch.distributed as dist
    rank, world, _ = distributed_context()
    if rank == 0 and error is not None:
        error.add_note(f"(raised by process 0 of {world})")
    outcome = [value, _picklable(error)] if rank == 0 else [None, None]
    dist.broadcast_object_list(outcome, src=0, group=_object_group())
    if rank != 0 and outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


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
    """The distinct ``qids`` in order of first appearance, cut into ``world`` contiguous blocks whose sizes
    differ by at most one (the first ones larger; empty ones when there are fewer queries than processes)."""
    distinct = pd.unique(pd.Series(qids, dtype=object))
    return [block.tolist() for block in np.array_split(distinct, world)]


def transform_by_query(transformer, frame: pd.DataFrame, *, verbose: bool = False) -> Optional[pd.DataFrame]:
    """``transformer(frame)``, the queries split across the processes of a launcher.

    Every process calls this with the same ``frame``; each transforms its block of qids (``query_blocks``)
    and process 0 returns the blocks' results concatenated in process order, the others ``None``. An error
    in any process is raised in every process, with a note naming the process and its first qid. Raises
    ``ValueError`` for a frame without ``qid``. ``verbose`` prints each process's share of the queries."""
    if "qid" not in frame.columns:
        raise ValueError(f"transform_by_query splits a frame by its 'qid' column; it has {list(frame.columns)}")
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
    """The gloo group frames and errors travel by, whatever the default group's backend (one per default group)."""
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
