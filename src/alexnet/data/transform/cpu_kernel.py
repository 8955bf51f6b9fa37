"""A batch's arithmetic on the CPU (batches.BatchTransform, §2, §4.1) as one compiled loop
(cpu_kernel.c, built by native.py): the same bits as its torch operations, one call a batch.

Why: the torch operations are four small ones per crop, ~500 a batch of 128, each of which
takes the GIL again when it returns. The loader's threads (loading/thread_loader.py) take it between
every item too, so on 2 cores the training thread waited for the GIL hundreds of times a batch.
The compiled loop holds it for none of its work (ctypes releases it) and reads each crop once:
on 2 cores, one thread, batch 128 at 224 px, 36 µs an image against 100 for the torch
operations (it writes 600 KB of floats an image, with streaming stores: cpu_kernel.c).

Where it cannot be built `takes()` is False and the torch operations run;
ALEXNET_NATIVE_CROPS=0 (or `ENABLED = False`) keeps them anyway.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from alexnet import native

SOURCE = Path(__file__).with_name("cpu_kernel.c")
ENABLED = os.environ.get("ALEXNET_NATIVE_CROPS", "1") != "0"  # off: the torch operations

_pointer, _long = ctypes.c_void_p, ctypes.c_long


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled loop (built on the first call of a machine), or None: see the docstring."""
    loops = native.load(SOURCE, "the compiled loop for a batch's crops", "using torch operations")
    if loops is not None:
        loops.transform_crops.argtypes = [_pointer] * 3 + [_long] * 3 + [_pointer] * 2
        loops.transform_crops.argtypes += [_long] + [_pointer] * 2
        loops.transform_crops.restype = None
    return loops


def takes(crops: Tensor) -> bool:
    """Whether `transform` takes these crops: uint8 on the CPU, each (c, c, 3) in memory (the
    loader's order), and the loop built and enabled."""
    return (
        ENABLED
        and crops.device.type == "cpu"
        and crops.dtype == torch.uint8
        and crops.movedim(-3, -1).is_contiguous()
        and library() is not None
    )


def transform(
    crops: Tensor,
    windows: Tensor,
    mean_pixels: Tensor,
    mirrored_mean_pixels: Tensor,
    shift: Tensor | None,
    channel_std: Tensor | None,
    *,
    out: Tensor,
) -> None:
    """Float images of `crops` (B, [10,] 3, c, c) cut at `windows` (B, [10,] 3) into `out` (their
    shape and memory order, float32): minus the mean's window (mean_pixels (S, S, 3), or its
    mirror's for a mirrored crop), plus each image's `shift` (B, 3), divided by `channel_std`
    (3); as BatchTransform's crop-by-crop steps."""
    if not (
        out.shape == crops.shape
        and out.dtype == torch.float32
        and out.device.type == "cpu"
        and out.movedim(-3, -1).is_contiguous()
    ):
        raise ValueError("out: float32, of the crops' shape and memory order, on the CPU")
    windows = windows.to(torch.int64).contiguous()
    mean, mirrored = mean_pixels.contiguous(), mirrored_mean_pixels.contiguous()
    shift = None if shift is None else shift.float().contiguous()
    std = None if channel_std is None else channel_std.float().reshape(3).contiguous()
    count = windows.numel() // 3
    library().transform_crops(
        crops.data_ptr(), out.data_ptr(), windows.data_ptr(), count, count // max(len(crops), 1),
        crops.shape[-1], mean.data_ptr(), mirrored.data_ptr(), mean.shape[0],
        None if shift is None else shift.data_ptr(), None if std is None else std.data_ptr(),
    )  # fmt: skip
