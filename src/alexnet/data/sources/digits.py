"""scikit-learn's digits: 1,797 real 8×8 handwritten digits, 10 classes, shipped with the library.

The default data set: it needs no download and trains in minutes on a CPU. Pixel values 0-16
become 8-bit RGB (value * 255 / 16, rounded, the same in all three channels); the recipe's
image size upsamples them through the same pipeline as ImageNet (§2). A seeded, stratified 20%
is held out as the test set.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from alexnet.data.sources.dataset import ArraySource, Splits, stratified_split

TEST_FRACTION = 0.2


def open_digits(seed: int = 0) -> Splits:
    images, target = read_digits()
    gray = np.rint(images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    rgb = np.ascontiguousarray(np.repeat(gray[:, :, :, None], 3, axis=3))  # (1797, 8, 8, 3)
    classes = [str(digit) for digit in range(10)]
    train_indices, test_indices = stratified_split(
        target, classes, TEST_FRACTION, seed, what="digits"
    )
    train = ArraySource(
        "digits (scikit-learn) train", classes, rgb[train_indices], target[train_indices]
    )
    test = ArraySource(
        "digits (scikit-learn) test", classes, rgb[test_indices], target[test_indices]
    )
    return Splits(
        train,
        test,
        classes,
        f"digits (scikit-learn): {len(classes)} classes, {len(train)} train, {len(test)} test "
        f"({TEST_FRACTION:.0%} held out, seeded {seed}, stratified)",
    )


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images (N, 8, 8) float, values 0-16, and their digits (N,): scikit-learn's
    `load_digits()`, read straight from the file it reads (`datasets/data/digits.csv.gz`, 64
    pixels and the digit per row) when it is where scikit-learn keeps it, since importing
    scikit-learn costs a second here; through `load_digits()` otherwise."""
    table = digits_table()
    if table is not None:
        rows = np.loadtxt(table, delimiter=",")  # (1797, 65)
        return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def digits_table() -> Path | None:
    """scikit-learn's `datasets/data/digits.csv.gz`, found without importing scikit-learn;
    None where it is not there."""
    spec = importlib.util.find_spec("sklearn")
    origin = spec.origin if spec else None
    table = Path(origin).parent / "datasets" / "data" / "digits.csv.gz" if origin else None
    return table if table is not None and table.is_file() else None
