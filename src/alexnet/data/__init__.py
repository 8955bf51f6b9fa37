"""The data side of the paper (§2, §4.1): sources, the preprocessing pipeline, and loaders.

sources -> transforms -> loader: `open_source` gives training and validation images,
`compute_stats` the mean image and RGB PCA of the training set, `train_transform` /
`eval_transform` the paper's pipeline image by image, `make_batches` the batches training and
evaluation consume (uint8 crops from the workers, the arithmetic on the device), `make_loader`
the loader under them. `prepare_store` (`alexnet prepare`) applies §2 once and writes a store
that `open_source` opens like any other source.
"""

from alexnet.data.batches import make_batches
from alexnet.data.dataset import ArraySource, DataError, FileSource, ImageSource, Splits
from alexnet.data.loader import TransformedDataset, make_loader
from alexnet.data.sources import open_source, open_splits
from alexnet.data.stats import DataStats, compute_stats
from alexnet.data.transforms import average_ten_crop, eval_transform, train_transform

__all__ = [
    "ArraySource",
    "DataError",
    "DataStats",
    "FileSource",
    "ImageSource",
    "Splits",
    "TransformedDataset",
    "average_ten_crop",
    "compute_stats",
    "eval_transform",
    "make_batches",
    "make_loader",
    "open_source",
    "open_splits",
    "train_transform",
]
