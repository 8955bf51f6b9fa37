"""A batch's arithmetic on the CPU (BatchTransform, §2, §4.1) as one compiled loop
(cpu_kernel.c, built ahead of use by native.build_kernels): the same bits as its torch
operations, one call a batch.

Why: the torch operations are small ones over a batch that does not fit in the cache, each of
which takes the GIL again when it returns, while the loader's threads take it between every
item too. The compiled loop holds the GIL for none of its work (ctypes releases it) and reads
each crop once (docs/measurements.md, "the CPU's batch arithmetic").
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from alexnet import native

_pointer, _long = ctypes.c_void_p, ctypes.c_long
TRANSFORM_CROPS = (*[_pointer] * 3, *[_long] * 3, *[_pointer] * 2, _long, *[_pointer] * 2)
KERNEL = native.Kernel(
    Path(__file__).with_name("cpu_kernel.c"), (("transform_crops", TRANSFORM_CROPS, ctypes.c_int),)
)


def library() -> ctypes.CDLL | None:
    """The compiled loop if native.build_kernels made it ready in this process, else None."""
    return native.loaded(KERNEL)


def takes(crops: Tensor) -> bool:
    """Whether `transform` takes these crops: uint8 on the CPU, each (c, c, 3) in memory (the
    loader's order), and the loop built."""
    return (
        crops.device.type == "cpu"
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
    (3); as BatchTransform's torch operations."""
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
    failed = library().transform_crops(
        crops.data_ptr(), out.data_ptr(), windows.data_ptr(), count, count // max(len(crops), 1),
        crops.shape[-1], mean.data_ptr(), mirrored.data_ptr(), mean.shape[0],
        None if shift is None else shift.data_ptr(), None if std is None else std.data_ptr(),
    )  # fmt: skip
    if failed:
        raise MemoryError("the compiled batch arithmetic could not allocate its rows")
