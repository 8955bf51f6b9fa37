"""scikit-learn's digits: 1,797 real 8×8 handwritten digits, 10 classes, shipped with the library.

The default data set: it needs no download and trains in minutes on a CPU. Pixel values 0-16
become 8-bit RGB (value * 255 / 16, rounded, the same in all three channels); the recipe's
image size upsamples them through the same pipeline as ImageNet (§2). A seeded, stratified 20%
is held out as the test set.
"""

from __future__ import annotations

import numpy as np

from alexnet.data.dataset import ArraySource, Splits, stratified_split

TEST_FRACTION = 0.2


def open_digits(seed: int = 0) -> Splits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    rgb = np.ascontiguousarray(np.repeat(gray[:, :, :, None], 3, axis=3))  # (1797, 8, 8, 3)
    classes = [str(digit) for digit in range(10)]
    train_indices, test_indices = stratified_split(
        digits.target, classes, TEST_FRACTION, seed, what="digits"
    )
    train = ArraySource(
        "digits (scikit-learn) train", classes, rgb[train_indices], digits.target[train_indices]
    )
    test = ArraySource(
        "digits (scikit-learn) test", classes, rgb[test_indices], digits.target[test_indices]
    )
    return Splits(
        train,
        test,
        classes,
        f"digits (scikit-learn): {len(classes)} classes, {len(train)} train, {len(test)} test "
        f"({TEST_FRACTION:.0%} held out, seeded {seed}, stratified)",
    )
