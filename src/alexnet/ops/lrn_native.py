"""LRN's compiled CPU kernels (lrn_cpu.c, §3.3), for float32 in torch's contiguous or
channels_last order and the paper's β = 0.75: the bits of lrn.py's torch operations, called
through ctypes from a few threads, each on its own images.

Why: the torch operations make ~20 passes over each chunk of images, each split over the cores;
on a busy machine each split waits for its slowest thread. The C kernel reads x once and writes
y and s once (forward), and the images are handed out to the threads as they become free, so a
thread that is held up does fewer of them instead of holding up the rest.

The library is built ahead of use (native.build_kernels, from the recipe's run.native_kernels);
`layout_of` says None until it is, and lrn.py keeps its torch operations.
"""

from __future__ import annotations

import ctypes
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import torch
from torch import Tensor

from alexnet import native

LAYOUTS = {torch.contiguous_format: "nchw", torch.channels_last: "nhwc"}  # the kernels' suffixes
BETA = 0.75  # the kernels' only β, the paper's: other powers have no exact torch twin in C
_pointer, _long, _int, _float = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
KERNEL = native.Kernel(
    Path(__file__).with_name("lrn_cpu.c"),
    tuple(
        (f"lrn_forward_{layout}", (*[_pointer] * 3, *[_long] * 3, _int, _float, _float), _int)
        for layout in LAYOUTS.values()
    )
    + tuple(
        (f"lrn_backward_{layout}", (*[_pointer] * 4, *[_long] * 3, _int, _float), _int)
        for layout in LAYOUTS.values()
    ),
)
TASKS_PER_THREAD = 4  # images handed out in this many parts per thread: a late thread's share
# Below this a part costs less than handing it to a thread, so small maps (the digits net's)
# stay in the calling thread (docs/measurements.md, "LRN on the CPU").
MIN_PART_BYTES = 2 << 20


def library() -> ctypes.CDLL | None:
    """The kernels if native.build_kernels made them ready in this process, else None."""
    return native.loaded(KERNEL)


def layout_of(*tensors: Tensor, beta: float = BETA) -> str | None:
    """The kernels' name for the memory order all of `tensors` share ("nchw" or "nhwc"), or None
    where the compiled kernels do not take them: not float32 (B, C, H, W) on the CPU, in one of
    those orders, β other than BETA, or not built."""
    if beta != BETA or not all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 4 for t in tensors
    ):
        return None
    for memory_format, layout in LAYOUTS.items():
        if all(t.is_contiguous(memory_format=memory_format) for t in tensors):
            return layout if library() is not None else None
    return None


@functools.cache
def _threads(count: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(count, "lrn")


os.register_at_fork(after_in_child=_threads.cache_clear)  # a forked child has none of them


def _in_parts(images: int, image_bytes: int, kernel) -> None:
    """kernel(first, count) over all images: in the calling thread, or handed out in parts (of
    MIN_PART_BYTES at the least) to as many threads as torch uses here."""
    threads = torch.get_num_threads()
    parts = min(images, TASKS_PER_THREAD * threads, images * image_bytes // MIN_PART_BYTES)
    if threads <= 1 or parts <= 1:
        kernel(0, images)
        return
    bounds = [images * part // parts for part in range(parts + 1)]
    pool = _threads(threads)
    futures = [pool.submit(kernel, first, end - first) for first, end in pairwise(bounds)]
    for future in futures:
        future.result()


def _over_images(name: str, tensors: tuple[Tensor, ...], *arguments) -> None:
    """The kernel `name` (lrn_forward or lrn_backward, in the tensors' layout) over every image:
    each part of the images gets its pointers into `tensors` (inputs, then outputs), its image
    count, the channels and pixels per image, then `arguments`."""
    kernel = getattr(library(), f"{name}_{layout_of(*tensors)}")
    _, channels, height, width = tensors[0].shape
    image_bytes = channels * height * width * 4  # float32

    def part(first: int, count: int) -> None:
        pointers = [t.data_ptr() + first * image_bytes for t in tensors]
        if kernel(*pointers, count, channels, height * width, *arguments):
            raise MemoryError("LRN's compiled kernel could not allocate its scratch memory")

    _in_parts(len(tensors[0]), image_bytes, part)


def forward(x: Tensor, size: int, alpha: float, k: float) -> tuple[Tensor, Tensor]:
    """(y, s) of lrn.py's formula with β = 0.75, by the compiled kernel (`layout_of(x)` must be
    one), in x's memory order."""
    y, s = torch.empty_like(x), torch.empty_like(x)
    _over_images("lrn_forward", (x, y, s), size, alpha, k)
    return y, s


def backward(grad_y: Tensor, x: Tensor, s: Tensor, size: int, alpha: float) -> Tensor:
    """dx of lrn.py's closed form with β = 0.75, by the compiled kernel (`layout_of(grad_y, x,
    s)` must be one), in x's memory order."""
    grad_x = torch.empty_like(x)
    _over_images("lrn_backward", (grad_y, x, s, grad_x), size, -2 * alpha * BETA)
    return grad_x
