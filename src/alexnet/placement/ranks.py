"""Data parallelism (§5's batches of 128 over several processes): torchrun's process group.

`torchrun --nproc-per-node N -m alexnet train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; `Ranks.from_environment()` reads them, `join` makes one group
(NCCL on CUDA, gloo on the CPU), and each process trains a DistributedDataParallel copy.
The recipe's batch size stays the global batch: each rank takes an equal share of every batch
of the epoch's permutation (data/loading/process_loader.py), so N processes see the images
one process sees.
Without torchrun's variables there is one rank and nothing here talks to anyone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alexnet.recipe import RecipeError


@dataclass
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    control: Any = None  # a gloo group for the small host-side sums: no GPU sync on NCCL

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run folder, the checkpoints and the log."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Ranks:
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; one rank without them."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def join(self, device: torch.device) -> None:
        """Join the process group (NCCL on CUDA, gloo on the CPU); `device`: this rank's."""
        if self.world == 1 or dist.is_initialized():
            return
        on_cuda = device.type == "cuda"
        if on_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if on_cuda else "gloo")
        self.control = dist.new_group(backend="gloo") if on_cuda else dist.group.WORLD

    @staticmethod
    def main_process() -> bool:
        """True unless torchrun started this process as a rank other than 0."""
        return os.environ.get("RANK", "0") == "0"

    def close(self) -> None:
        """Leave the process group (torchrun's processes end after training)."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def device(self, name: str) -> str:
        """The device this rank trains on: under torchrun, CUDA means this node's GPU LOCAL_RANK."""
        if self.world > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return name

    def check_batch(self, batch_size: int) -> None:
        """The global batch must split evenly: every rank takes batch_size / world images."""
        if batch_size % self.world:
            raise RecipeError(
                f"optim.batch_size={batch_size} does not split evenly over {self.world} "
                "processes; the recipe's batch is the global batch"
            )

    def first_sample(self, batch_size: int) -> int:
        """Where this rank's share of a global batch starts (the loader's EpochSampler)."""
        return self.rank * batch_size // self.world

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel around `model` (gradients averaged at each step). Its only
        buffers say where each rank's share of the batch starts (ops/dropout.py): not rank 0's."""
        if self.world == 1:
            return model
        return DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False
        )

    def sum(self, values: dict[str, float | int]) -> dict[str, float]:
        """Each value summed over the ranks: one float64 all-reduce on the CPU (gloo)."""
        if self.world == 1:
            return dict(values)
        totals = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(totals, group=self.control)
        return dict(zip(values, totals.tolist(), strict=True))

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on one: the ranks stop at the same step.

        Asked after every step; on CUDA it goes over the gloo group and never waits for the GPU.
        """
        return self.sum({"flag": float(flag)})["flag"] > 0

    def share(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank (a picklable object; between our own processes)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def reduce_metrics(metrics: dict[str, float | int], ranks: Ranks) -> dict[str, float | int]:
    """Combine `train_one_epoch`'s or `evaluate`'s metrics over the ranks.

    Means and error fractions are weighted by each rank's images; counts are summed; seconds
    are this rank's (the ranks step together, each waiting for the others).
    """
    if ranks.world == 1:
        return metrics
    images = metrics["images"]
    means = [key for key in ("loss", "top1_error", "top5_error") if key in metrics]
    sums = ranks.sum(
        {**{key: metrics[key] * images for key in means}, "images": images,
         "skipped": metrics["skipped"]}
    )  # fmt: skip
    total = sums["images"]
    reduced = {**metrics, **{key: sums[key] / total for key in means}}
    reduced.update(images=int(total), skipped=int(sums["skipped"]))
    if "seconds" in metrics:
        reduced["images_per_s"] = total / metrics["seconds"]
    return reduced
