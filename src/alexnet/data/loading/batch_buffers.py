"""Batches of crops written in place into buffers allocated once and reused (§5: batches of 128).

`fill_batch` makes the batch `make_loader` makes of `CropItems` (each item's window and α drawn
from a generator seeded with (seed, epoch, index), process_loader.py; an unreadable item
dropped and counted), with the same per-item steps (`CropItems.draws` and `.cut`), but cuts
each crop straight into the next row of a given uint8 buffer: no tensor per item, no stacking,
no allocation. Why both exist: worker processes must hand each item back as a tensor of its
own, pickled through shared memory, and `collate_crops` stacks them; threads of this process
can write into one buffer instead. `BufferRing` holds the buffers a loader cycles through and
knows when one may be written again: once its batch is given back, and on CUDA once the copies
queued from it by then have run.
"""

from __future__ import annotations

from collections import deque

import torch

from alexnet.data.loading.items import CropBatch, CropItems, channels_last_empty, no_crops
from alexnet.data.loading.process_loader import derive_seed


def fill_batch(
    items: CropItems, keys: list[tuple[int, int]], seed: int, buffer: torch.Tensor
) -> tuple[CropBatch, torch.Tensor, int]:
    """(CropBatch, labels, skipped) of the items `keys` (index, epoch), as collate_crops gives
    them; the pixels are the first rows of `buffer` (B, 3, c, c) or (B, 10, 3, c, c)."""
    # Every item's draws first, then the decoding: one loop of small torch calls, another of
    # big ones, each keeping its own code and data in the cache (docs/measurements.md,
    # "Loader threads vs processes").
    draws = [
        items.draws(torch.Generator().manual_seed(derive_seed(seed, epoch, index)))
        for index, epoch in keys
    ]
    windows, alphas, labels = [], [], []
    for (index, _), (window, alpha) in zip(keys, draws, strict=True):
        pixels = items.source.pixels(index, items.image_size)  # (3, S, S), or None: skipped
        if pixels is None:
            continue
        items.cut(pixels, window, out=buffer[len(labels)])
        windows.append(window)
        alphas.append(alpha)
        labels.append(int(items.source.labels[index]))
    skipped = len(keys) - len(labels)
    if not labels:
        return no_crops(skipped)
    crops = CropBatch(buffer[: len(labels)], torch.stack(windows), torch.stack(alphas))
    return crops, torch.tensor(labels), skipped


class BufferRing:
    """`count` uint8 buffers of `shape`, channels-last (loading/items.py), pinned for a CUDA device;
    `take` one free, `give_back` it when its batch is done with, `writable` before writing into
    it again."""

    def __init__(self, count: int, shape: tuple[int, ...], *, pin: bool):
        self.buffers = [channels_last_empty(shape, torch.uint8, pin=pin) for _ in range(count)]
        self.pin = pin
        self.free = deque(range(count))
        self.copied: list[torch.cuda.Event | None] = [None] * count

    def take(self) -> int:
        return self.free.popleft()

    def give_back(self, slot: int) -> None:
        """The consumer is done with slot's batch; on CUDA its copies to the device were queued
        on the current stream by now: they must run before the slot is written again."""
        if self.pin:
            self.copied[slot] = torch.cuda.Event()
            self.copied[slot].record()
        self.free.append(slot)

    def reclaim(self) -> None:
        """Every slot back in the ring (a pass ended; nothing writes into a buffer now)."""
        for slot in sorted(set(range(len(self.buffers))) - set(self.free)):
            self.give_back(slot)

    def writable(self, slot: int) -> torch.Tensor:
        """The slot's buffer, once the copies queued from it have run."""
        event, self.copied[slot] = self.copied[slot], None
        if event is not None:
            event.synchronize()
        return self.buffers[slot]
