"""Devices: a device name resolved and checked (`resolve_device`), and on the CPU an allocator
setting that keeps freed memory (`keep_freed_memory`). placement.py uses both, once per run."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import torch

from alexnet.errors import UserError


class DeviceError(UserError):
    """A device that does not exist here; the message names it."""


def resolve_device(name: str) -> torch.device:
    """`"auto"`: CUDA when there is one, else the CPU; otherwise any device torch knows."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} asked for, but this machine has no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} GPUs"
            )
    elif device.type != "cpu":
        raise DeviceError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks for reuse instead of returning the large ones to the system.

    glibc serves each allocation over its mmap threshold (at most 32 MB) with fresh pages and
    unmaps them on free, so every such tensor faults its pages in again. A CPU training step of
    this net makes dozens (one batch of 32 conv1 maps is 37 MB): faulting cost more than the
    arithmetic of LRN (measured on 2 cores: cloning 37 MB 30 ms → 8 ms; LRN forward + backward
    at conv1 4× faster). Raising both thresholds keeps those pages in the process for the next
    step. Returns False where the C library has no `mallopt` (not glibc); nothing changes then.
    """
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(
        mallopt(m_trim_threshold, (1 << 31) - 1)
    )


def memory_of(device: torch.device) -> int:
    """Bytes of memory the device has: the GPU's own, or the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
