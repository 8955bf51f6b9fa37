"""dataset.py: the seeded stratified split is scikit-learn's, draw for draw, without importing
scikit-learn; an in-memory set is prepared (§2) once."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from alexnet.data.sources.dataset import ArraySource, DataError, stratified_split
from alexnet.data.sources.downsample import Prepare


def sklearn_split(labels, held_out, seed):
    train, val = train_test_split(
        np.arange(len(labels)), test_size=held_out, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(val)


LABEL_SETS = {
    "digits": load_digits().target,
    "three classes of 12": np.repeat([0, 1, 2], 12),
    "unbalanced": np.repeat([0, 1, 2, 3, 4], [2, 3, 7, 40, 11]),
    "shuffled, with ties": np.random.default_rng(5).permutation(np.repeat(np.arange(7), 9)),
}


@pytest.mark.parametrize("name", LABEL_SETS)
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_the_split_is_scikit_learns(name, fraction, seed):
    labels = LABEL_SETS[name]
    train, val = stratified_split(labels, [str(c) for c in range(10)], fraction, seed, what=name)
    held_out = max(int(np.ceil(fraction * len(labels))), len(np.unique(labels)))
    want_train, want_val = sklearn_split(labels, held_out, seed)
    np.testing.assert_array_equal(train, want_train)
    np.testing.assert_array_equal(val, want_val)


def test_a_class_of_one_image_is_refused():
    with pytest.raises(DataError, match="class 'b' has a single image"):
        stratified_split([0, 0, 1], ["a", "b"], 0.5, 0, what="tiny")


def test_splitting_imports_no_scikit_learn():
    code = (
        "import sys\nfrom alexnet.data.sources.dataset import stratified_split\n"
        "stratified_split([0, 0, 1, 1], ['a', 'b'], 0.5, 0, what='x')\n"
        "print('sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_an_in_memory_set_is_prepared_once_per_size(monkeypatch):
    """ArraySource keeps §2's prepared pixels of a small set: the same pixels as preparing each
    time, computed once per image and size; a set too large to keep is prepared each time."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    source = ArraySource("tiny", ["a", "b"], images, [0, 1, 0, 1, 0])
    calls = []
    original = Prepare.__call__

    def counted(self, image):
        calls.append(self.image_size)
        return original(self, image)

    monkeypatch.setattr(Prepare, "__call__", counted)
    first = [source.pixels(i, 64) for i in range(5)]
    again = [source.pixels(i, 64) for i in range(5)]
    assert calls == [64] * 5
    for index, pixels in enumerate(first):
        assert torch.equal(pixels, again[index])
        assert torch.equal(pixels, original(Prepare(64), source.load(index)[0]))
    source.pixels(0, 72)  # another size: another image
    assert calls == [64] * 5 + [72]
    monkeypatch.setattr("alexnet.data.sources.dataset.PREPARED_BYTES", 5 * 3 * 64 * 64 - 1)
    source.pixels(1, 64)
    source.pixels(1, 64)
    assert calls == [64] * 5 + [72, 64, 64]
