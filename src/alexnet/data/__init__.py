"""The data side of the paper (§2, §4.1): sources, statistics, batches and loaders.

sources -> [prepare: store] -> batches -> loader: `open_source` gives training and validation
images, `compute_stats` the mean image and RGB PCA of the training set, `make_batches` the
batches training, evaluation and inference consume (uint8 crops from the workers, the one
definition of the arithmetic on the device; batches.py), `make_loader` the loader under them.
`prepare_store` (`alexnet prepare`) applies §2 once and writes a store that `open_source` opens
like any other source.
"""

from alexnet.data.batches import make_batches
from alexnet.data.dataset import ArraySource, DataError, FileSource, ImageSource, Splits
from alexnet.data.loader import make_loader
from alexnet.data.sources import open_source, open_splits
from alexnet.data.stats import DataStats, compute_stats

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
