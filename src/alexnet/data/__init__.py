"""The data side of the paper (§2, §4.1), in four wings that data flows through in turn:

    sources/ -> [store/: §2 once] -> loading/: uint8 crops -> transform/: float images

`open_source` (open.py) turns a `--data` string into training and validation images,
`compute_stats` (stats.py) the training set's mean image and RGB PCA, `make_batches`
(batches.py) the batches training, evaluation and inference consume, built from a loader and
a `BatchTransform`. `alexnet prepare` (store/prepare.py) writes a store that `open_source`
opens like any other source.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alexnet.data.batches import make_batches
    from alexnet.data.loading.process_loader import make_loader
    from alexnet.data.open import open_source, open_splits
    from alexnet.data.sources.dataset import ArraySource, DataError, FileSource, ImageSource, Splits
    from alexnet.data.stats import DataStats, compute_stats

_HOMES = {  # each name is imported from its module on first use: those modules need torch
    "make_batches": "batches",
    "ArraySource": "sources.dataset",
    "DataError": "sources.dataset",
    "FileSource": "sources.dataset",
    "ImageSource": "sources.dataset",
    "Splits": "sources.dataset",
    "make_loader": "loading.process_loader",
    "open_source": "open",
    "open_splits": "open",
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
