"""Commands on many processes (``torchrun``, ``accelerate launch``; one machine or several): the QUERIES of a
frame are split across the processes, each runs its block on its own device, process 0 merges.

In one process everything here is the plain call. The process context (rank, world size, barrier) is the
one ``core.indexing.distributed_context`` gives, which sharded indexing uses too; frames travel between
processes through a gloo process group of their own (CPU memory, over TCP between machines), whatever
backend the default group uses.
"""
import contextlib
import datetime
import os
import pickle
from typing import Callable, Iterator, List, Optional, TypeVar

import numpy as np
import pandas as pd

from ..index.indexer import distributed_context

#: How long a process waits for the others to finish their blocks, or for process 0 to build an index: a
#: block of one process can take much longer than another's (long queries, a slower device) without that
#: being a hang.
GATHER_TIMEOUT = datetime.timedelta(hours=12)
T = TypeVar("T")
_groups = {}


def process_device(device: Optional[str]) -> Optional[str]:
    """This process's device: under a launcher (``LOCAL_RANK`` set) with CUDA, ``None`` or ``"cuda"`` is
    ``cuda:LOCAL_RANK``, so that each process of a machine has a GPU of its own; any other value (``cpu``,
    ``cuda:3``) is the user's and kept, and without a launcher or CUDA ``device`` is returned as given."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None or device not in (None, "cuda"):
        return device
    import torch
    return f"cuda:{int(local_rank)}" if torch.cuda.is_available() else device


def is_main_process() -> bool:
    """Whether this is process 0 (always, in one process): the one that writes outputs and prints."""
    return distributed_context()[0] == 0


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Process 0 runs the block first (building an artifact: an index, a download) while the others wait;
    then the others run it (finding the artifact built). An exception of process 0's block is raised in
    every process, the others not running the block, so that none waits for process 0 in vain. The
    artifact's directory must be on a file system every process sees."""
    rank, world, _ = distributed_context()
    if world == 1:
        yield
        return
    if rank == 0:
        try:
            yield
        except Exception as e:
            _from_main_process(error=e)
            raise
        _from_main_process()
    else:
        _from_main_process()
        yield


def main_process_decides(function: Callable[[], T]) -> T:
    """``function()`` called by process 0 alone, its value (picklable) returned in every process, or its
    exception raised in every process: for a decision every process must take alike (which outputs a
    resumed command finds done, whether it may write at all) from files that process 0 alone writes. In
    one process: ``function()``."""
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


def _from_main_process(value=None, error: Optional[Exception] = None):
    """Process 0's ``value`` in every process, or its ``error`` (with a note naming process 0) raised in
    the others; process 0 passes them, the others' arguments are ignored."""
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
    """Every process's ``value`` (picklable), in process order, in process 0; ``None`` in the others. In
    one process: ``[value]``."""
    rank, world, _ = distributed_context()
    if world == 1:
        return [value]
    import torch.distributed as dist
    values = [None] * world if rank == 0 else None
    dist.gather_object(value, values, dst=0, group=_object_group())
    return values


def query_blocks(qids, world: int) -> List[list]:
    """The distinct ``qids`` in order of first appearance, cut into ``world`` contiguous blocks whose sizes
    differ by at most one (the first ones larger); a block is empty when there are fewer queries than
    processes."""
    distinct = pd.unique(pd.Series(qids, dtype=object))
    return [block.tolist() for block in np.array_split(distinct, world)]


def transform_by_query(transformer, frame: pd.DataFrame, *, verbose: bool = False) -> Optional[pd.DataFrame]:
    """``transformer(frame)``, its queries split across the processes of a launcher.

    In one process: ``transformer(frame)``. Under ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1),
    every process calls this with the same ``frame`` (any columns, one ``qid`` per row); process ``r``
    transforms the rows of its contiguous block of distinct qids (``query_blocks``), and process 0 returns
    the blocks' results concatenated in process order -- for a transformer that treats each query on its
    own, the frame one process returns, its queries in input order. The other processes return ``None``.
    A process without queries (fewer queries than processes) does not call ``transformer``; an empty
    ``frame`` is transformed by process 0 alone.

    An error in any process is raised in every process (the original exception, with a note naming the
    process and its first qid), so that none waits for the others' results. A frame without a ``qid``
    column is a ``ValueError``. ``verbose`` prints each process's share of the queries."""
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
    """The gloo group frames and errors travel by (created once per default group, by every process)."""
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
