"""The work of `alexnet prepare` (prepare.py) on one chunk of images, in a pool of processes.

Each chunk of a split is prepared as in §2 (downsample.py), encoded (JPEG by Pillow, or raw
pixels) and, for the training split, summed for the statistics (stats.StatsSums). Results come
back in chunk order, so the store's files do not depend on the number of processes.
"""

from __future__ import annotations

import io
import multiprocessing
import signal
from typing import Any

import numpy as np
import torch
from PIL import Image

from alexnet.data.sources.dataset import ImageSource
from alexnet.data.stats import StatsSums


class ChunkResults:
    """The results of `prepare_chunk` over `chunks`, in order: from a pool of worker
    processes, or computed here when workers is 0. A context manager that stops the pool."""

    def __init__(self, source: ImageSource, settings, chunks, workers: int, with_sums: bool):
        self.tasks = [(start, stop, with_sums) for start, stop in chunks]
        self.arguments = (source, settings)
        self.pool = None
        if workers > 0 and len(chunks) > 1:
            self.pool = multiprocessing.Pool(
                min(workers, len(chunks)), initializer=_start_worker, initargs=self.arguments
            )

    def __enter__(self):
        if self.pool is None:
            _start_worker(*self.arguments, in_worker=False)
            return map(prepare_chunk, self.tasks)
        return self.pool.imap(prepare_chunk, self.tasks)

    def __exit__(self, *exception) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


_WORKER: dict[str, Any] = {}  # this process's source and settings (set by _start_worker)


def _start_worker(source: ImageSource, settings, in_worker: bool = True) -> None:
    if in_worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
        torch.set_num_threads(1)
    _WORKER.update(source=source, settings=settings)


def prepare_chunk(task: tuple[int, int, bool]):
    """Images start..stop-1 prepared (§2) and encoded: (bytes or None per image, labels, skip
    reasons, the chunk's StatsSums as a state dict of numpy arrays, or None)."""
    start, stop, with_sums = task
    source: ImageSource = _WORKER["source"]
    settings = _WORKER["settings"]
    sums = StatsSums(settings.image_size) if with_sums else None
    encoded, labels, reasons = [], [], []
    for index in range(start, stop):
        pixels = source.pixels(index, settings.image_size)  # (3, S, S) uint8, or None
        labels.append(int(source.labels[index]))
        if pixels is None:
            encoded.append(None)
            reasons.append(source.unreadable.get(index, "cannot decode"))
            continue
        if sums is not None:
            sums.add(pixels[None])
        encoded.append(_encode(pixels, settings))
        reasons.append(None)
    if sums is None:
        return encoded, labels, reasons, None
    # numpy, not tensors: a pool would pass tensors through shared-memory file handles
    state = {
        key: value.numpy() if isinstance(value, torch.Tensor) else value
        for key, value in sums.state_dict().items()
    }
    return encoded, labels, reasons, state


def _encode(pixels: torch.Tensor, settings) -> bytes:
    """(3, S, S) uint8 as stored: JPEG bytes, or the raw (S, S, 3) pixels."""
    rows: np.ndarray = pixels.permute(1, 2, 0).contiguous().numpy()  # (S, S, 3)
    if settings.encoding == "raw":
        return rows.tobytes()
    buffer = io.BytesIO()  # Pillow's encoder: twice as fast as torchvision's here
    Image.fromarray(rows, "RGB").save(buffer, "JPEG", quality=settings.quality)
    return buffer.getvalue()
