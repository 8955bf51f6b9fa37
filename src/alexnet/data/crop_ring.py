"""The loader of a prepared store as FFCV has it: worker processes cut crops into a ring of
shared-memory buffers allocated once (crop_buffers.py), which the training process reads in
place; only the batch's number, windows, α and labels travel through a queue.

The same batches as `make_loader` over the same `CropItems` (sampler, seeds, skipped items).
A batch's pixels are valid until the next batch is asked for. CPU only (a measured alternative
to crop_threads.py).
"""

from __future__ import annotations

import multiprocessing
from collections import deque

import torch

from alexnet.data.crop_buffers import BufferRing, fill_batch
from alexnet.data.crops import CropBatch, CropItems
from alexnet.data.loader import default_workers, epoch_sampler, seed_worker

PREFETCH = 2


def _work(worker_id, items, ring_buffers, tasks, results, seed, epoch):
    seed_worker(worker_id, seed=seed, epoch=epoch)
    torch.set_num_threads(1)
    while (task := tasks.get()) is not None:
        number, keys, slot = task
        try:
            crops, labels, skipped = fill_batch(items, keys, seed, ring_buffers[slot])
            results.put(
                (number, crops.windows.numpy(), crops.alpha.numpy(), labels.numpy(), skipped)
            )
        except Exception as error:  # noqa: BLE001 - handed to the main process
            results.put((number, error, None, None, None))


class RingCrops:
    def __init__(
        self, items: CropItems, sampler, batch_size, *, workers, seed, epoch, persistent
    ):  # fmt: skip
        self.items, self.sampler, self.batch_size, self.seed = items, sampler, batch_size, seed
        self.epoch = epoch
        self.num_workers, self.pin_memory = workers, False
        self.persistent_workers = persistent and workers > 0
        crop, windows = items.crop_size, items.windows
        views = 1 if windows is None else len(windows)
        one = (3, crop, crop) if views == 1 else (views, 3, crop, crop)
        count = PREFETCH * max(workers, 1) + 1
        self.ring = BufferRing(count, (batch_size, *one), pin=False, shared=workers > 0)
        self._workers = None
        self._pass = None

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        if self._pass is not None:
            self._pass.close()
        self._pass = self._batches()
        return self._pass

    def _start(self):
        context = multiprocessing.get_context("fork")
        results = context.SimpleQueue()
        queues, processes = [], []
        for worker_id in range(self.num_workers):
            tasks = context.SimpleQueue()
            process = context.Process(
                target=_work,
                args=(worker_id, self.items, self.ring.buffers, tasks, results, self.seed,
                      self.epoch),
                daemon=True,
            )  # fmt: skip
            process.start()
            queues.append(tasks)
            processes.append(process)
        return queues, processes, results

    def _stop(self):
        queues, processes, _ = self._workers
        for tasks in queues:
            tasks.put(None)
        for process in processes:
            process.join()
        self._workers = None

    def __del__(self):
        if self._workers is not None:
            self._stop()

    def _batches(self):
        keys = list(self.sampler)
        size = self.batch_size
        chunks = deque(keys[start : start + size] for start in range(0, len(keys), size))
        ring = self.ring
        if self.num_workers == 0:
            for chunk in chunks:
                yield fill_batch(self.items, chunk, self.seed, ring.buffers[0])
            return
        if self._workers is None:
            self._workers = self._start()
        queues, _, results = self._workers
        slots, arrived = {}, {}
        sent = received = 0

        def send():
            nonlocal sent
            slot = ring.take()
            slots[sent] = slot
            queues[sent % len(queues)].put((sent, chunks.popleft(), slot))
            sent += 1

        try:
            while chunks and len(ring.free) > 1:
                send()
            while received < sent:
                while received not in arrived:
                    number, *rest = results.get()
                    arrived[number] = rest
                windows, alpha, labels, skipped = arrived.pop(received)
                if isinstance(windows, Exception):
                    raise windows
                slot = slots.pop(received)
                received += 1
                if chunks:
                    send()
                count = len(labels)
                crops = CropBatch(
                    ring.buffers[slot][:count], torch.from_numpy(windows),
                    torch.from_numpy(alpha),
                )  # fmt: skip
                yield crops, torch.from_numpy(labels), skipped
                ring.give_back(slot)
        finally:
            while received < sent:  # the workers finish what they are writing
                number, *_ = results.get()
                received += 1
            ring.reclaim()
            if not self.persistent_workers:
                self._stop()


def make_ring_loader(
    items, batch_size, *, train, workers=-1, seed=0, device="cpu", epoch=0, rank=0, world=1
):
    workers = default_workers() if workers < 0 else workers
    return RingCrops(
        items,
        epoch_sampler(len(items), batch_size, train, seed, epoch=epoch, rank=rank, world=world),
        max(1, batch_size // world),
        workers=workers,
        seed=seed,
        epoch=epoch,
        persistent=train,
    )
