"""The host allocator setting this net's CPU steps need: freed memory kept for reuse.

The recipe's `run.keep_freed_memory` decides it; `fit` (through `Placement.prepare`) and the
command line make it, never model code, so a library user's process is changed only when it
asks: on glibc, in-process, once. The memory a step frees stays in the process for the next
step instead of going back to the system (as PyTorch's CUDA caching allocator keeps GPU
memory); a process's resident size then stays at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks for reuse instead of returning the large ones to the system.

    glibc serves each allocation over its mmap threshold (at most 32 MB) with fresh pages and
    unmaps them on free, so every such tensor faults its pages in again. A CPU training step of
    this net makes dozens (one batch of 32 conv1 maps is 37 MB): faulting cost more than the
    arithmetic of LRN (docs/measurements.md, "Freed memory on the CPU"). Raising both
    thresholds keeps those pages in the process for the next step. Returns False where the C
    library has no `mallopt` (not glibc); nothing changes then.
    """
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(
        mallopt(m_trim_threshold, (1 << 31) - 1)
    )
