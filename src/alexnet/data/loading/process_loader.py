"""Batches for training and testing (§5: batches of 128): workers, seeding, skipped files.

Reproducible by construction. The training order of epoch e is a permutation drawn from
(seed, e); each item's augmentation (crop, flip, lighting) draws from torch's generator seeded
with (seed, e, index) inside whichever process makes it. Two runs with the same seed give the
same batches whatever the number of workers, and a run resumed at epoch e replays epoch e.
The epoch is set explicitly, as torch's samplers have it: `loader.sampler.set_epoch(e)` before
a pass (train.py does, every epoch); iterating a loader twice without it gives the same epoch
twice, so an extra pass (a debug pass, a train-set evaluation) shifts nothing.
An unreadable file is dropped from its batch and counted, never raised.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


def derive_seed(*parts: int) -> int:
    """A 63-bit seed hashed from integers such as (seed, epoch, index)."""
    digest = hashlib.blake2b(repr([int(part) for part in parts]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochSampler(Sampler):
    """Yields (index, epoch) keys of the epoch `set_epoch` chose (the constructor's at first).

    shuffle: a permutation drawn from (seed, epoch); otherwise indices in order. The order is cut
    into global batches of `batch_size` (drop_last: full ones only); rank r of `world` takes the
    r-th equal share of each, so that the ranks together see the batches one process sees.
    `skip_steps` global batches are left out of every pass of the epoch (a run resumed mid-epoch).
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int,
        batch_size: int = 1,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.rank, self.world = rank, world
        self.skip_steps = 0

    def set_epoch(self, epoch: int, *, skip_steps: int = 0) -> None:
        """The epoch the next passes yield, leaving out its first `skip_steps` global batches."""
        self.epoch, self.skip_steps = epoch, skip_steps

    def _batch_starts(self) -> range:
        """Where the next pass's global batches start in the epoch's order."""
        end = self.size - self.size % self.batch_size if self.drop_last else self.size
        return range(self.skip_steps * self.batch_size, end, self.batch_size)

    def _share(self, start: int) -> range:
        """This rank's positions in the global batch starting at `start`."""
        length = min(self.batch_size, self.size - start)
        return range(
            start + self.rank * length // self.world, start + (self.rank + 1) * length // self.world
        )

    def __len__(self) -> int:
        return sum(len(self._share(start)) for start in self._batch_starts())

    def __iter__(self):
        epoch = self.epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = range(self.size)
        return ((order[i], epoch) for start in self._batch_starts() for i in self._share(start))


class SeededItems(Dataset):
    """`items[(index, epoch)]` is `dataset[index]` made with torch's CPU generator seeded from
    (seed, epoch, index); the caller's generator state is restored afterwards."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(self.seed, epoch, index))
            return self.dataset[index]


def collate_skipping_none(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images, labels, skipped): the items that loaded, stacked, and how many were None.

    When every item of a batch was skipped, images and labels have zero rows.
    """
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    images, labels = default_collate(kept)
    return images, labels, skipped


def seed_worker(worker_id: int, *, seed: int, epoch: int) -> None:
    """Seeds torch, numpy and random in a loader worker from (seed, epoch, worker id).

    Workers ignore SIGINT and SIGTERM: the main process decides when to stop (run/preemption.py)
    and finishes its step with the batches they made.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker_seed = derive_seed(seed, epoch, worker_id)
    torch.manual_seed(worker_seed)
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)


def default_workers() -> int:
    """One loader process per CPU core this process may use, shared among the processes
    torchrun started on this machine (LOCAL_WORLD_SIZE)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def epoch_sampler(
    size: int, batch_size: int, train: bool, seed: int, *, epoch: int = 0, rank: int = 0,
    world: int = 1,
) -> EpochSampler:  # fmt: skip
    """The sampler `make_loader` gives its loader, for `size` items (see its arguments)."""
    return EpochSampler(
        size,
        shuffle=train,
        seed=seed,
        epoch=epoch,
        batch_size=batch_size,
        drop_last=train and size > batch_size,
        rank=rank,
        world=world,
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int = -1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    epoch: int = 0,
    rank: int = 0,
    world: int = 1,
    collate: Callable = collate_skipping_none,
) -> DataLoader:
    """A DataLoader yielding (images, labels, skipped) batches; see the module docstring.

    train: shuffle, and drop the last partial batch when there is more than one batch (a set
    smaller than one batch still trains). workers: -1 = one per CPU core; 0 = the calling
    process. Memory is pinned for a CUDA device. A training loader's workers persist between
    passes; any other loader starts its workers for each pass and ends them after it, so that a
    validation loader holds no idle processes while training runs.
    rank, world: this process's share of each global batch of `batch_size` (EpochSampler);
    `loader.sampler.set_epoch(e, skip_steps=k)` chooses epoch e without its first k batches.
    """
    workers = default_workers() if workers < 0 else workers
    return DataLoader(
        SeededItems(dataset, seed),
        batch_size=max(1, batch_size // world),
        sampler=epoch_sampler(
            len(dataset), batch_size, train, seed, epoch=epoch, rank=rank, world=world
        ),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=train and workers > 0,
        worker_init_fn=partial(seed_worker, seed=seed, epoch=epoch),
        generator=torch.Generator().manual_seed(derive_seed(seed, epoch)),
    )
