"""CIFAR-10 in its standard python layout: 60,000 32×32 colour images in 10 classes.

The paper uses CIFAR-10 for two side experiments (§3.1 ReLU vs tanh, §3.3 LRN); here it is
also a small data set for the whole pipeline, upsampled by the recipe's image size.
`cifar-10-batches-py/` holds the pickles `data_batch_1`..`5` (50,000 training images),
`test_batch` (10,000, used for validation) and `batches.meta` (label names). The files are read
locally, and downloaded (with torchvision) only when asked; opened for validation only, the
training batches are not read. The unpickler builds only plain containers and numpy arrays, so
a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from alexnet.data.sources.dataset import ArraySource, DataError, Splits

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{number}" for number in range(1, 6)]
TEST_BATCH = "test_batch"


def open_cifar10(path: Path, download: bool = False, *, val_only: bool = False) -> Splits:
    """CIFAR-10 from `path` (the cifar-10-batches-py folder or its parent).

    val_only: only test_batch and batches.meta are read, and Splits.train is None.
    """
    folder = _find_folder(path)
    if folder is None:
        if not download:
            raise DataError(
                f"CIFAR-10 not found at {path} (expected {FOLDER}/ with data_batch_1..5, "
                "test_batch, batches.meta); fix the path or ask for a download"
            )
        from torchvision.datasets import CIFAR10

        parent = path.parent if path.name == FOLDER else path
        CIFAR10(root=str(parent), download=True)
        folder = parent / FOLDER
    meta = _read_pickle(folder / "batches.meta")
    classes = [_text(name) for name in meta["label_names"]]
    train = None
    if not val_only:
        train = ArraySource(
            f"CIFAR-10 train at {folder}", classes, *_read_batches(folder, TRAIN_BATCHES)
        )
    test = ArraySource(f"CIFAR-10 test at {folder}", classes, *_read_batches(folder, [TEST_BATCH]))
    train_count = "training batches not read" if train is None else f"{len(train)} train"
    return Splits(
        train,
        test,
        classes,
        f"CIFAR-10 at {folder}: {len(classes)} classes, {train_count}, "
        f"{len(test)} test (the test batch serves as validation)",
    )


def _find_folder(path: Path) -> Path | None:
    for folder in (path, path / FOLDER):
        if (folder / "batches.meta").is_file():
            return folder
    return None


def _read_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) from the named batch files."""
    images, labels = [], []
    for name in names:
        batch = _read_pickle(folder / name)
        rows = np.asarray(batch["data"], dtype=np.uint8)  # (n, 3072): 1024 red, green, blue
        images.append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only containers, strings, numbers and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} has no place in a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[str, object]:
    """A CIFAR-10 pickle (written by Python 2, so read with bytes keys) with str keys."""
    try:
        with open(path, "rb") as file:
            content = _ArrayUnpickler(file, encoding="bytes").load()
        return {_text(key): value for key, value in content.items()}
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise DataError(f"cannot read CIFAR-10 file {path}: {error}") from None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
