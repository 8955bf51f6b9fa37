"""Devices: a device name resolved and checked (`resolve_device`), and how much memory one has
(`memory_of`)."""

from __future__ import annotations

import os

import torch

from alexnet.errors import UserError


class DeviceError(UserError):
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


def memory_of(device: torch.device) -> int:
    """Bytes of memory the device has: the GPU's own, or the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
