"""The loader of a prepared store (§2 done once): crops cut by threads of the calling process
into a ring of buffers it reuses (batch_buffers.py), the same batches `make_loader` gives.

A store's item costs little: decoding a 256² JPEG, or reading raw pixels, and cutting a 224²
window. torch's DataLoader spends as much again around it: each batch's 19 MB of crops
(128 × 3 × 224²) is stacked into fresh shared memory by a worker process and faulted in again
by the training process. Here threads cut the crops straight into buffers allocated once
(pinned for CUDA). torchvision's JPEG decoder and torch's copies release the GIL, so the
threads decode in parallel with each other and with the training step; drawing the windows and
α from a generator per item touches no global state.

The batches are those of `make_loader` over the same `CropItems`: the same sampler (the order,
rank's shares, skip_steps), each item drawn from (seed, epoch, index), unreadable items dropped
and counted; `workers` threads (0: the calling thread; -1: one per core), kept between passes
for training, started and ended with each pass otherwise. Signal handlers run in the main
thread only, so the threads go on while the training loop decides what a SIGINT means.

Each thread runs torch's operations on one thread (as torch's own pin-memory thread does; the
calling thread keeps its count): otherwise every crop's copy starts a team of OpenMP threads per
loader thread, and on 2 cores those teams spin against each other and the training step.

Threads and not FFCV's worker processes writing into a ring of shared-memory buffers: both were
built and neither was faster throughout, and processes need what threads have for free (pinned
memory that is also shared, a watch on a worker that dies, errors sent back). The figures, and
what was tried and not kept: docs/measurements.md, "Loader threads vs processes".

Contract: a batch's pixels are a view of a ring buffer, valid until the next batch is asked
for: a consumer converts or copies them first, as DeviceBatches does (BatchTransform reads
them at once). On CUDA a buffer is written again only after the copies from it that were queued
on the current stream when the next batch was asked for have run. Starting a pass ends the
pass before it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait

import torch

from alexnet.data.loading.batch_buffers import BufferRing, fill_batch
from alexnet.data.loading.items import CropItems
from alexnet.data.loading.process_loader import default_workers, epoch_sampler

PREFETCH = 2  # batches in the making per thread, as DataLoader's prefetch_factor


class ThreadedCrops:
    """Yields (CropBatch, labels, skipped) of `items` in batches of `batch_size` keys from
    `sampler`; `sampler.set_epoch` chooses the pass, as with a DataLoader."""

    def __init__(
        self, items: CropItems, sampler, batch_size: int, *, workers: int, seed: int, pin: bool,
        persistent: bool,
    ):  # fmt: skip
        self.items, self.sampler, self.batch_size, self.seed = items, sampler, batch_size, seed
        self.num_workers, self.pin_memory = workers, pin
        self.persistent_workers = persistent and workers > 0
        self._threads: ThreadPoolExecutor | None = None
        self._ring: BufferRing | None = None
        self._pass = None  # the pass under way, ended when the next starts

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        if self._pass is not None:
            self._pass.close()  # its threads finish the batches they are writing
        keys = list(self.sampler)  # the epoch set now, as a DataLoader's iterator takes it
        size = self.batch_size
        self._pass = self._batches(deque(keys[at : at + size] for at in range(0, len(keys), size)))
        return self._pass

    def _ring_of(self, count: int) -> BufferRing:
        if self._ring is None or len(self._ring.buffers) != count:
            crop, windows = self.items.crop_size, self.items.windows
            views = 1 if windows is None else len(windows)  # 10 for ten crops
            one = (3, crop, crop) if views == 1 else (views, 3, crop, crop)
            self._ring = BufferRing(count, (self.batch_size, *one), pin=self.pin_memory)
        return self._ring

    def _batches(self, chunks: deque):
        if self.num_workers == 0:
            ring = self._ring_of(1)
            try:
                for chunk in chunks:
                    slot = ring.take()
                    yield fill_batch(self.items, chunk, self.seed, ring.writable(slot))
                    ring.give_back(slot)
            finally:
                ring.reclaim()
            return
        threads = self._threads or ThreadPoolExecutor(
            self.num_workers, "crops", initializer=torch.set_num_threads, initargs=(1,)
        )
        ring = self._ring_of(PREFETCH * self.num_workers + 1)
        made = deque()  # (future, slot) of the batches in the making, in order

        def make(chunk, slot):
            return fill_batch(self.items, chunk, self.seed, ring.writable(slot))

        def start_next() -> None:
            slot = ring.take()
            made.append((threads.submit(make, chunks.popleft(), slot), slot))

        try:
            while chunks and len(ring.free) > 1:  # one slot left for the batch yielded
                start_next()
            while made:
                future, slot = made.popleft()
                batch = future.result()
                if chunks:
                    start_next()
                yield batch
                ring.give_back(slot)
        finally:
            for future, _ in made:
                future.cancel()
            wait([future for future, _ in made])  # a running one is writing into the ring
            ring.reclaim()
            if self.persistent_workers:
                self._threads = threads
            else:
                threads.shutdown()
                self._ring = None


def make_threaded_loader(
    items: CropItems, batch_size: int, *, train: bool, workers: int = -1, seed: int = 0,
    device: str | torch.device = "cpu", **shares,
) -> ThreadedCrops:  # fmt: skip
    """`make_loader(items, ...)`'s batches, made by threads into reused buffers (see the module
    docstring); the same arguments, shares being its epoch, rank and world."""
    workers = default_workers() if workers < 0 else workers
    return ThreadedCrops(
        items,
        epoch_sampler(len(items), batch_size, train, seed, **shares),
        max(1, batch_size // shares.get("world", 1)),
        workers=workers,
        seed=seed,
        pin=torch.device(device).type == "cuda",
        persistent=train,
    )
