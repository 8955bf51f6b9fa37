"""A few running figures read from the device without waiting for it (§5's training loop).

Reading a CUDA tensor on the host (`.item()`) waits for every queued kernel: the next step
cannot be queued until the device runs dry, so each read costs the step's launch latency. Here
the figures' copy into pinned host memory is queued behind the steps, and the loop asks at each
step whether it has landed, which does not wait: the divergence check and the progress bar see
figures a step or two old. On a CPU the copy is the read, at once.
"""

from __future__ import annotations

import torch


class LaggedRead:
    """`request(tag, values)` queues a copy of `values` (a 1-D tensor on the device); `landed()`
    gives (tag, values as a list) of that request once, when the copy has arrived, and None
    until then. A request while the last is not yet collected is dropped: the buffer is busy."""

    def __init__(self, device: torch.device):
        self.device = device
        self.host: torch.Tensor | None = None  # pinned, written by the queued copy
        self.copied: torch.cuda.Event | None = None
        self.pending: tuple[object, list | None] | None = None

    def request(self, tag: object, values: torch.Tensor) -> None:
        if self.pending is not None:
            return
        if self.device.type != "cuda":
            self.pending = (tag, values.tolist())
            return
        if self.host is None or self.host.shape != values.shape:
            self.host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self.copied = torch.cuda.Event()
        self.host.copy_(values, non_blocking=True)
        self.copied.record()
        self.pending = (tag, None)

    def landed(self) -> tuple[object, list] | None:
        if self.pending is None:
            return None
        tag, values = self.pending
        if values is None:
            if not self.copied.query():
                return None
            values = self.host.tolist()
        self.pending = None
        return tag, values
