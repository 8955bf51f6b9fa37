"""The CPU's float batches (batches.BatchTransform) written into memory that has been written
before: a few buffers, each handed out again once nothing else holds it.

Why: a batch of 128 images at 224 px is 77 MB of floats. Memory new to a process costs a page
fault every 4 KB on its first write, and on a virtual machine the host may have to supply each
page as well. host_memory.keep_freed_memory keeps freed blocks in the process, but glibc cuts
small allocations out of a freed block, which then no longer holds a batch, so batches went on
coming from new pages (docs/measurements.md, "Freed memory on the CPU").

A buffer is free when nothing but this pool holds its memory: no tensor handed out from it, no
view of one, no autograd graph that saved one (torch counts the users of each storage).
"""

from __future__ import annotations

import torch
from torch import Tensor

KEPT = 3  # buffers kept: the batch being made, the one the step uses, and one to spare


def _users(buffer: Tensor) -> int:
    """How many tensors (and storage objects) use `buffer`'s memory (torch's private count)."""
    return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata)


class ReusedImages:
    """Float32 tensors shaped and laid out like given crops, from memory used before when one
    of the last KEPT is no longer held elsewhere. Where torch has no use count, each is new."""

    def __init__(self) -> None:
        self.buffers: list[Tensor] = []
        self.counted = hasattr(torch._C, "_storage_Use_Count")
        self.alone = _users(torch.empty(1)) if self.counted else 0  # a buffer held by us alone

    def like(self, crops: Tensor) -> Tensor:
        """An uninitialised float32 tensor of `crops`' shape and memory order."""
        for buffer in self.buffers if self.counted else []:
            if buffer.shape == crops.shape and buffer.stride() == crops.stride():
                if _users(buffer) == self.alone:
                    return buffer.detach()  # a new tensor: it counts as a user while held
        buffer = torch.empty_like(crops, dtype=torch.float32)
        self.buffers = [buffer, *self.buffers[: KEPT - 1]]
        return buffer.detach()
