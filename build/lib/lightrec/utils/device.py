"""The one rule for where a process computes: the GPU when the config's
``trainer.accelerator`` allows one and there is one, else the CPU. Training's closed-form
fits, predict, blend and the start line all ask here."""

from __future__ import annotations

import os
from typing import Any

import torch

GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def uses_gpu(accelerator: str) -> bool:
    """Whether a run with ``trainer.accelerator=accelerator`` computes on a GPU here."""
    return accelerator in GPU_ACCELERATORS and torch.cuda.is_available()


def compute_device(accelerator: str) -> torch.device:
    """This process's device: its own GPU (``LOCAL_RANK`` under data parallelism) or the CPU.

    >>> compute_device("cpu")
    device(type='cpu')
    """
    if uses_gpu(accelerator):
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def describe(trainer: Any) -> str:
    """Where a run computes, in words, from its ``trainer:`` block: the device, how many,
    the precision."""
    if uses_gpu(trainer.accelerator):
        where = f"GPU {torch.cuda.get_device_name()}"
    else:
        where = f"CPU ({torch.get_num_threads()} threads)"
    if str(trainer.devices) not in ("1", "auto") or trainer.num_nodes > 1:
        where += f" x {trainer.devices} devices x {trainer.num_nodes} machines ({trainer.strategy})"
    return f"{where}, precision {trainer.precision}"
