"""Where the computation runs: the device and, on CUDA, bf16 autocast and channels_last.

Training and evaluation share one `Placement`, so a checkpoint is evaluated exactly the way its
validation figures were measured during training.
"""

from __future__ import annotations

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

    @classmethod
    def for_run(cls, run: RunRecipe, device: str | None = None) -> Placement:
        """The recipe's placement; `device` overrides the recipe's device."""
        resolved = resolve_device(device or run.device)
        on_cuda = resolved.type == "cuda"
        return cls(resolved, run.bf16 and on_cuda, run.channels_last and on_cuda)

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
