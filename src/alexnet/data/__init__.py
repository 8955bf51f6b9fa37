"""The data side of the paper (§2, §4.1): sources, statistics, batches and loaders.

sources -> [prepare: store] -> batches -> loader: `open_source` gives training and validation
images, `compute_stats` the mean image and RGB PCA of the training set, `make_batches` the
batches training, evaluation and inference consume (uint8 crops from the workers, the one
definition of the arithmetic on the device; batches.py), `make_loader` the loader under them.
`prepare_store` (`alexnet prepare`) applies §2 once and writes a store that `open_source` opens
like any other source.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alexnet.data.batches import make_batches
    from alexnet.data.dataset import ArraySource, DataError, FileSource, ImageSource, Splits
    from alexnet.data.loader import make_loader
    from alexnet.data.sources import open_source, open_splits
    from alexnet.data.stats import DataStats, compute_stats

_HOMES = {  # each name is imported from its module on first use: those modules need torch
    "make_batches": "batches",
    "ArraySource": "dataset",
    "DataError": "dataset",
    "FileSource": "dataset",
    "ImageSource": "dataset",
    "Splits": "dataset",
    "make_loader": "loader",
    "open_source": "sources",
    "open_splits": "sources",
    "DataStats": "stats",
    "compute_stats": "stats",
}
__all__ = [
    "ArraySource",
    "DataError",
    "DataStats",
    "FileSource",
    "ImageSource",
    "Splits",
    "compute_stats",
    "make_batches",
    "make_loader",
    "open_source",
    "open_splits",
]


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(importlib.import_module(f"alexnet.data.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'alexnet.data' has no attribute {name!r}")
