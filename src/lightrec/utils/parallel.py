"""Parallel work: two things at once on a small machine (numpy's sorts, pandas' hashing,
hashlib and the CSV parser release the GIL, so threads use both cores of a laptop without
copying data), and which process of a data-parallel job writes the files."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def in_parallel(tasks: list[Callable[[], Any]]) -> list[Any]:
    """The tasks' results, in order; run in threads when there are cores for them (an
    exception in a task is raised here)."""
    if len(tasks) <= 1 or cores() < 2:
        return [task() for task in tasks]
    with ThreadPoolExecutor(len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [f.result() for f in futures]


# what launchers set in every process but a job's first: a later machine's (NODE_RANK,
# torchrun's GROUP_RANK), a later process of a machine (LOCAL_RANK), a global rank
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_rank_zero() -> bool:
    """The process that writes a run's files (the only one without data parallelism).
    Before Lightning has set up the job, a later machine's first process looks like rank 0
    to Lightning (it reads RANK and LOCAL_RANK only), so the launchers' variables decide too.
    """
    from pytorch_lightning.utilities import rank_zero_only

    if any(os.environ.get(v, "0") != "0" for v in RANK_VARIABLES):
        return False
    return getattr(rank_zero_only, "rank", 0) == 0


def end_process_group(finished: bool) -> None:
    """End this process's data-parallel process group, if a job started one: every process
    waits for the others first when its job finished (none is still in a collective), then
    the group is destroyed while the interpreter is whole. Left to the interpreter's exit,
    the gloo backend's worker threads are torn down with it and the process can abort
    (``terminate called without an active exception``, exit -6) after a successful run."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if finished:
            dist.barrier()
    finally:
        dist.destroy_process_group()
