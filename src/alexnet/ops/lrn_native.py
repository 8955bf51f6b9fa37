"""LRN's compiled CPU kernels (lrn_cpu.c, §3.3), for float32 in torch's contiguous or
channels_last order: built with the system's C compiler on first use, called through ctypes
from a few threads, each on its own images.

Why: the torch operations of lrn.py make ~20 passes over each chunk of images, ~1,000 small
operations a training step at batch 32, each split over the cores. On an idle machine that is
fast; on a busy one each split waits for its slowest thread, and a thread that shares its core
with another process can wait a whole time slice. The C kernel reads x once and writes y and s
once (forward), and the images are handed out to the threads as they become free, so a thread
that is held up does fewer of them instead of holding up the rest. ctypes releases the GIL for
the call.

The library is built and cached by native.py; where it cannot be, `library()` is None (with
one warning) and lrn.py keeps its torch operations. ALEXNET_NATIVE_LRN=0 (or `ENABLED = False`)
keeps them anyway.
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

SOURCE = Path(__file__).with_name("lrn_cpu.c")
ENABLED = os.environ.get("ALEXNET_NATIVE_LRN", "1") != "0"  # off: lrn.py's torch operations
LAYOUTS = {torch.contiguous_format: "nchw", torch.channels_last: "nhwc"}  # the kernels' suffixes
TASKS_PER_THREAD = 4  # images handed out in this many parts per thread: a late thread's share
# Below this a part costs less than handing it to a thread: at the digits net's shapes (maps of
# 2.4 and 1.2 MB at batch 32) forward + backward took 2.4 and 1.2 ms in the calling thread
# against 3.3 and 1.5 ms shared among 2 (torch operations: 3.6 and 1.4 ms).
MIN_PART_BYTES = 2 << 20

_pointer, _long, _int, _float = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on the first call of a machine), or None: see the docstring."""
    kernels = native.load(
        SOURCE, "LRN's compiled CPU kernel", "using torch operations, slower on a busy machine"
    )
    if kernels is None:
        return None
    for layout in LAYOUTS.values():
        forward, backward = (
            getattr(kernels, f"lrn_forward_{layout}"),
            getattr(kernels, f"lrn_backward_{layout}"),
        )
        forward.argtypes = [_pointer] * 3 + [_long] * 3 + [_int] + [_float] * 3
        backward.argtypes = [_pointer] * 4 + [_long] * 3 + [_int] + [_float] * 2
        forward.restype = backward.restype = _int
    return kernels


def layout_of(*tensors: Tensor) -> str | None:
    """The kernels' name for the memory order all of `tensors` share ("nchw" or "nhwc"), or None
    where the compiled kernels do not take them: not float32 (B, C, H, W) on the CPU, in one of
    those orders, or the library disabled or not built."""
    if not ENABLED or not all(
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


def forward(x: Tensor, size: int, alpha: float, beta: float, k: float) -> tuple[Tensor, Tensor]:
    """(y, s) of lrn.py's formula, by the compiled kernel (`layout_of(x)` must be one), in x's
    memory order."""
    y, s = torch.empty_like(x), torch.empty_like(x)
    _over_images("lrn_forward", (x, y, s), size, alpha, beta, k)
    return y, s


def backward(grad_y: Tensor, x: Tensor, s: Tensor, size: int, alpha: float, beta: float) -> Tensor:
    """dx of lrn.py's closed form, by the compiled kernel (`layout_of(grad_y, x, s)` must be
    one), in x's memory order."""
    grad_x = torch.empty_like(x)
    _over_images("lrn_backward", (grad_y, x, s, grad_x), size, alpha, beta)
    return grad_x
