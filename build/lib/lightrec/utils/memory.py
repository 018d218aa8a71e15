"""Keep a long CPU training run's resident memory flat.

Batches whose shapes vary from step to step (BERT4Rec's masked positions) leave glibc's
heap fragmented: freed blocks stay mapped and the resident size of a BERT4Rec run on
MovieLens-100K grew from 0.64 to 1.4 GB over 40 epochs. ``malloc_trim(0)`` hands the free
pages back; once per epoch it kept the same run near 0.6 GB at no measurable cost (a
lower mmap threshold did too, but made every step 75 % slower).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache

import torch


@cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # glibc only; musl and others lack it
    except (OSError, AttributeError):
        return None


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can use now: a GPU's free memory, or the host's available
    RAM (``MemAvailable``); None when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; True when it could (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
