"""Where a run computes, resolved once from the recipe into one `Placement`: the device, the CUDA
fast paths on it, this process's rank among torchrun's processes, and §3.2's two devices when the
towers are split. Training, evaluation and inference receive it; training resolves it once.

Training and evaluation share one `Placement`, so a checkpoint is evaluated exactly the way its
validation figures were measured during training.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from alexnet.host_memory import keep_freed_memory
from alexnet.placement.device import resolve_device
from alexnet.placement.kernels import resolve_native_kernels
from alexnet.placement.ranks import Ranks
from alexnet.placement.towers import TwoTowers, parse_devices
from alexnet.recipe import RecipeError, RunRecipe


@dataclass(frozen=True)
class Placement:
    """A device, the CUDA fast paths in use on it (all off on a CPU), the ranks, the towers."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    ranks: Ranks = field(default_factory=Ranks)
    towers: tuple[torch.device, torch.device] | None = None  # §3.2: tower one's, tower two's
    compile_mode: str = "default"  # torch.compile's mode when `compile` (recipe.RunRecipe)
    native_kernels: bool = False  # the compiled CPU kernels, built (placement/kernels.py)
    split_towers: bool = False  # §3.2's tower convolutions as two convolutions (model.py)
    keep_freed_memory: bool = False  # the CPU allocator setting `prepare` makes (host_memory.py)

    @classmethod
    def for_run(cls, run: RunRecipe, device: str | None = None) -> Placement:
        """Where evaluation and inference run: the recipe's device, or `device` instead.

        The CUDA fast paths apply on CUDA only: on a CPU, bf16 is slower and `torch.compile`
        gives no speed-up for this net (docs/measurements.md, "Training step on the CPU"), so
        they stay off there; the images keep the
        loader's channels-last layout there (`images`).
        """
        return cls._on(run, resolve_device(device or run.device))

    @classmethod
    def for_training(cls, run: RunRecipe, ranks: Ranks) -> Placement:
        """Where training runs: under torchrun, CUDA is this node's GPU LOCAL_RANK; with
        `run.model_parallel`, the images go to tower one's device and tower two's half of the
        net to the other (§3.2)."""
        if not run.model_parallel:
            return cls._on(run, resolve_device(ranks.device(run.device)), ranks)
        if ranks.world > 1:
            raise RecipeError(
                "run.model_parallel cannot be combined with torchrun's data parallelism"
            )
        towers = parse_devices(run.model_parallel)
        return cls._on(run, towers[0], ranks, towers)

    @classmethod
    def _on(cls, run: RunRecipe, device: torch.device, ranks: Ranks | None = None, towers=None):
        on_cuda = device.type == "cuda"
        return cls(
            device, run.bf16 and on_cuda, run.channels_last and on_cuda, run.compile and on_cuda,
            ranks or Ranks(), towers, run.compile_mode,
            native_kernels=resolve_native_kernels(run.native_kernels, device),
            split_towers=run.tower_convs == "split" or (run.tower_convs == "auto" and on_cuda),
            keep_freed_memory=run.keep_freed_memory and device.type == "cpu",
        )  # fmt: skip

    def resolved(self, run: RunRecipe) -> RunRecipe:
        """`run` with its "auto" fast paths replaced by what this placement chose, for
        recipe.json: a repeat of the run takes the same paths, or says why it cannot."""
        return dataclasses.replace(
            run,
            native_kernels="on" if self.native_kernels else "off",
            tower_convs="split" if self.split_towers else "grouped",
        )

    @property
    def description(self) -> str:
        """The fast paths in use, for the log: e.g. " (bf16, channels_last, compiled)"."""
        compiled = "compiled" if self.compile_mode == "default" else f"compiled {self.compile_mode}"
        names = [n for n, on in [("bf16", self.bf16), ("channels_last", self.channels_last),
                                 (compiled, self.compile)] if on]  # fmt: skip
        return f" ({', '.join(names)})" if names else ""

    @property
    def where(self) -> str:
        """Where, for the log: e.g. "cuda:0 (bf16, compiled) × 2 processes (...)"."""
        where = str(self.device)
        if self.towers:
            where = f"{self.towers[0]},{self.towers[1]} (two towers, §3.2)"
        if self.ranks.world > 1:
            where += f" × {self.ranks.world} processes (DistributedDataParallel)"
        return where + self.description

    def prepare(self) -> None:
        """Process-wide settings for fast steps on this device, made by `fit` and the CLI only
        (never by model code): cuDNN picks the fastest convolution algorithms for the (fixed)
        shapes on CUDA; on a CPU, glibc keeps freed memory for the next step (host_memory.py)."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.keep_freed_memory:
            keep_freed_memory()

    def place(self, network: nn.Module) -> nn.Module:
        """The network on its device, or split over the two towers' devices (§3.2), computing
        the way this placement chose."""
        if self.towers:
            return TwoTowers(self._fast_paths(network), self.towers)
        return self.model(network)

    def step_model(self, model: nn.Module) -> nn.Module:
        """The module the training and evaluation steps call: DistributedDataParallel under
        torchrun, compiled (in `compile_mode`) when `compile` is on. It shares its parameters with
        `model`, which checkpoints keep."""
        model = self.ranks.wrap(model, self.device)
        return torch.compile(model, mode=self.compile_mode) if self.compile else model

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def model(self, model: nn.Module) -> nn.Module:
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        return self._fast_paths(model).to(self.device, memory_format=memory_format)

    def _fast_paths(self, model: nn.Module) -> nn.Module:
        if hasattr(model, "set_fast_paths"):  # an AlexNet
            model.set_fast_paths(native_kernels=self.native_kernels, split_towers=self.split_towers)
        return model

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """The batch on the device, in the layout of the fast paths on CUDA; on a CPU in the
        loader's (channels-last crops, loading/items.py), which the convolutions then keep
        (docs/measurements.md, "CPU memory order")."""
        memory_format = self.memory_format if self.device.type == "cuda" else torch.preserve_format
        return images.to(self.device, non_blocking=True, memory_format=memory_format)

    def batch(self, images: torch.Tensor, labels: torch.Tensor):
        return self.images(images), labels.to(self.device, non_blocking=True)

    def autocast(self):
        """bf16 autocast on CUDA when enabled; a no-op elsewhere."""
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()
