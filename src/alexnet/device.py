"""Where the computation runs: the device and, on CUDA, bf16 autocast, channels_last,
`torch.compile` and cuDNN's autotuner; on the CPU, an allocator setting that keeps freed memory.

Training and evaluation share one `Placement`, so a checkpoint is evaluated exactly the way its
validation figures were measured during training.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from alexnet.recipe import RunRecipe


class DeviceError(ValueError):
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


@dataclass(frozen=True)
class Placement:
    """A device and the CUDA fast paths in use on it (both off on a CPU)."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def for_run(cls, run: RunRecipe, device: str | None = None) -> Placement:
        """The recipe's placement; `device` overrides the recipe's device.

        The CUDA fast paths apply on CUDA only: on a CPU, bf16 and channels_last are slower and
        `torch.compile` gives no speed-up for this net (measured), so they stay off there.
        """
        resolved = resolve_device(device or run.device)
        on_cuda = resolved.type == "cuda"
        return cls(
            resolved, run.bf16 and on_cuda, run.channels_last and on_cuda, run.compile and on_cuda
        )

    @property
    def description(self) -> str:
        """The fast paths in use, for the log: e.g. " (bf16, channels_last, compiled)"."""
        names = [n for n, on in [("bf16", self.bf16), ("channels_last", self.channels_last),
                                 ("compiled", self.compile)] if on]  # fmt: skip
        return f" ({', '.join(names)})" if names else ""

    def prepare(self) -> None:
        """Process-wide settings for fast steps on this device: cuDNN picks the fastest
        convolution algorithms for the (fixed) shapes on CUDA; freed memory is kept on a CPU."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            keep_freed_memory()

    def step_model(self, model: nn.Module) -> nn.Module:
        """The module the training and evaluation steps call: compiled when `compile` is on.
        It shares its parameters with `model`, which checkpoints keep."""
        return torch.compile(model) if self.compile else model

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def model(self, model: nn.Module) -> nn.Module:
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        return model.to(self.device, memory_format=memory_format)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def batch(self, images: torch.Tensor, labels: torch.Tensor):
        return self.images(images), labels.to(self.device, non_blocking=True)

    def autocast(self):
        """bf16 autocast on CUDA when enabled; a no-op elsewhere."""
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


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
