"""Each batch's copy to a CUDA device queued one batch ahead, on a stream of its own (§5: the
steps keep the device busy). While the step on batch n runs, batch n+1's uint8 crops, windows,
α and labels travel from the loader's pinned memory: on the step's stream the copy would wait
for the step before it, and the next step for the copy. A store of JPEGs decoded on the device
(gpu_decode) keeps its bytes on the host, where the decoder reads them.

The loader is asked for batch n+1 under the copy stream, so that a ring buffer
(batch_buffers.py) is written again only after the copy queued from it there has run. Each
copied tensor is marked as used by the step's stream, so that the caching allocator does not
hand its memory out again while the step still reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch

from alexnet.data.loading.items import CropBatch

Taken = TypeVar("Taken")
Handed = TypeVar("Handed")


def one_ahead(take: Callable[[], Taken | None], hand_over: Callable[[Taken], Handed]) -> Iterator:
    """hand_over(x) for each x that take() gives, in order, until it gives None; the next x is
    taken before one is handed over, so its copy runs while the consumer works on this one."""
    pending = take()
    while pending is not None:
        following = take()
        yield hand_over(pending)
        pending = following


class CopiedAhead:
    """(CropBatch, labels, skipped) batches of a loader, their tensors on `device` (CUDA)."""

    def __init__(self, batches: Iterable, device: torch.device):
        self.batches, self.device = batches, device

    def __iter__(self) -> Iterator:
        stream = torch.cuda.Stream(self.device)
        iterator = iter(self.batches)

        def take():
            with torch.cuda.stream(stream):
                batch = next(iterator, None)
                if batch is None:
                    return None
                crops, labels, skipped = batch
                encoded = crops.lengths is not None  # JPEG bytes: the decoder reads the host's
                moved = CropBatch(
                    crops.pixels if encoded else self._copy(crops.pixels),
                    self._copy(crops.windows), self._copy(crops.alpha), crops.lengths,
                )  # fmt: skip
                return moved, self._copy(labels), skipped, stream.record_event()

        return one_ahead(take, self._hand_over)

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def _hand_over(self, taken) -> tuple[CropBatch, torch.Tensor, int]:
        crops, labels, skipped, copied = taken
        step_stream = torch.cuda.current_stream(self.device)
        step_stream.wait_event(copied)
        for tensor in (*crops[:3], labels):
            if tensor.is_cuda:
                tensor.record_stream(step_stream)
        return crops, labels, skipped
