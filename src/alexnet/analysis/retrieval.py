"""Retrieval by fc7 features (§6.1, Figure 4 right): features of a data set, exact neighbours.

`cached_features(checkpoint, network, source, split)` gives the fc7 vectors (N, 4096) of every
image of a data set, computed with the network's test-time preprocessing and cached beside its
checkpoint (cache.py) as float16 `.npy` (ImageNet's training set: 1.2M × 4096 × 2 bytes ≈ 10 GB),
read back memory-mapped, so the set never has to fit in memory; the network is built only when
they are not there. `nearest_neighbours` is exact Euclidean
search over such an array in chunks whose size is bounded in bytes; `binary_codes.py`
compresses the vectors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from alexnet.analysis.cache import cache_path
from alexnet.data import ImageSource
from alexnet.inference import TrainedNetwork

CHUNK_BYTES = 256 * 2**20  # float32 working memory of one step of the exact search


class Features(NamedTuple):
    """fc7 vectors of a data set, in its order."""

    vectors: np.ndarray  # (N, D) float16, memory-mapped when read from the cache
    readable: np.ndarray  # (N,) bool: False for an image that could not be read (a zero row)


def feature_cache_path(checkpoint: Path, source: ImageSource, split: str) -> Path:
    """`cache/<checkpoint>-<split>-<key>.npy` beside the checkpoint (cache.py): the key changes
    with the checkpoint file and with the data."""
    return cache_path(checkpoint, split, ".npy", source.fingerprint())


def cached_features(
    checkpoint: Path,
    network: Callable[[], TrainedNetwork],
    source: ImageSource,
    split: str,
    *,
    workers: int = 0,
    progress: bool = False,
) -> Features:
    """The fc7 features of every image of `source` by the checkpoint's network, from the cache
    or computed (by `network()`, called only then) and cached."""
    path = feature_cache_path(Path(checkpoint), source, split)
    readable_path = path.with_suffix(".readable.npy")
    if not (path.exists() and readable_path.exists()):
        _compute_features(
            network(), source, path, readable_path, workers=workers, progress=progress
        )
    return Features(np.load(path, mmap_mode="r"), np.load(readable_path))


def _compute_features(
    net: TrainedNetwork,
    source: ImageSource,
    path: Path,
    readable_path: Path,
    *,
    workers: int,
    progress: bool,
) -> None:
    """Stream fc7 batches into a float16 memory-mapped file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    readable = np.zeros(len(source), dtype=bool)
    vectors = None
    try:
        for positions, batch in net.embed_source(source, workers=workers, progress=progress):
            if vectors is None:
                shape = (len(source), batch.shape[1])
                vectors = np.lib.format.open_memmap(temporary, "w+", np.float16, shape)
            vectors[positions] = batch.numpy().astype(np.float16)
            readable[positions] = True
        if vectors is None:
            raise ValueError(f"no readable images in {source.name}")
        vectors.flush()
        del vectors
        np.save(readable_path, readable)
        os.replace(temporary, path)  # last: the features file exists only when complete
    finally:
        temporary.unlink(missing_ok=True)


def nearest_neighbours(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    usable: np.ndarray | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances (Q, k) of each query's k nearest database rows, exact.

    The database (N, D) may be a memory-mapped float16 array: it is read `chunk_bytes` of float32
    at a time, and the best k so far are kept per query. `usable` (N,) bool leaves rows out.
    """
    query = torch.from_numpy(np.asarray(queries, dtype=np.float32))  # (Q, D)
    query_norms = (query * query).sum(dim=1, keepdim=True)  # (Q, 1)
    rows = max(1, chunk_bytes // (4 * (database.shape[1] + len(query))))
    best_squared = torch.empty(len(query), 0)
    best_indices = torch.empty(len(query), 0, dtype=torch.long)
    for start in range(0, len(database), rows):
        chunk = torch.from_numpy(np.asarray(database[start : start + rows], dtype=np.float32))
        squared = query_norms + (chunk * chunk).sum(dim=1) - 2 * query @ chunk.T  # (Q, rows)
        if usable is not None:
            squared[:, ~torch.from_numpy(np.asarray(usable[start : start + rows]))] = torch.inf
        indices = torch.arange(start, start + len(chunk)).expand(len(query), -1)
        best_squared = torch.cat([best_squared, squared], dim=1)
        best_indices = torch.cat([best_indices, indices], dim=1)
        best_squared, order = best_squared.topk(min(k, best_squared.shape[1]), largest=False)
        best_indices = best_indices.gather(1, order)
    return best_indices.numpy(), best_squared.clamp_min(0).sqrt().numpy()
