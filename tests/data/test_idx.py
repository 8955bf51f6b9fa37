"""Fashion-MNIST and MNIST from their IDX files (data/sources/idx.py), made here with numpy
and gzip."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

from alexnet.data import DataError, open_source
from alexnet.data.sources.idx import FASHION_MNIST, IDX_DATA_SETS, MNIST
from alexnet.data.sources.specs import absolute_source

PACKAGE_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 12, "test": 5}
ROWS, COLUMNS = 4, 3


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file of unsigned bytes: magic number, one big-endian size per axis, the data."""
    magic = 0x0800 | array.ndim if magic is None else magic
    sizes = b"".join(size.to_bytes(4, "big") for size in array.shape)
    return magic.to_bytes(4, "big") + sizes + array.astype(np.uint8).tobytes()


def write_file(path: Path, content: bytes, gzipped: bool) -> Path:
    """`content` at path, or gzipped at path.gz; the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzipped:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def write_idx_set(folder: Path, gzipped: bool = True, seed: int = 0) -> dict[str, tuple]:
    """The four files in `folder`; per split, (images (N, ROWS, COLUMNS), labels (N,))."""
    generator = np.random.default_rng(seed)
    written = {}
    for split, (images_name, labels_name) in FILES.items():
        images = generator.integers(0, 256, (COUNTS[split], ROWS, COLUMNS), dtype=np.uint8)
        labels = np.arange(COUNTS[split]) % 10
        write_file(folder / images_name, idx_bytes(images), gzipped)
        write_file(folder / labels_name, idx_bytes(labels), gzipped)
        written[split] = (images, labels)
    return written


def data_error(spec: str, **options) -> str:
    """The message of the DataError that opening `spec` raises; checked to be one line."""
    with pytest.raises(DataError) as caught:
        open_source(spec, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch) -> Path:
    """The cache's (empty) downloads folder, and a Fashion-MNIST package folder that does not
    exist."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALEXNET_CACHE", str(cache))
    no_package = dataclasses.replace(FASHION_MNIST, package_folder=tmp_path / "no-package")
    monkeypatch.setitem(IDX_DATA_SETS, "fashion-mnist", no_package)
    return cache / "downloads"


@pytest.mark.parametrize("gzipped", [True, False])
def test_a_good_set_opens_with_the_official_split(tmp_path: Path, gzipped: bool):
    written = write_idx_set(tmp_path / "set", gzipped)
    splits = open_source(f"fashion-mnist:{tmp_path / 'set'}")
    assert splits.classes == list(FASHION_MNIST.classes)
    assert (len(splits.train), len(splits.val)) == (12, 5)
    for source, split in ((splits.train, "train"), (splits.val, "test")):
        images, labels = written[split]
        assert source.images.dtype == np.uint8
        assert source.images.shape == (COUNTS[split], ROWS, COLUMNS, 3)
        for channel in range(3):  # the grey channel, replicated
            np.testing.assert_array_equal(source.images[..., channel], images)
        assert source.labels.tolist() == labels.tolist()
    image, label = splits.train[7]
    assert image.mode == "RGB" and image.size == (COLUMNS, ROWS)
    np.testing.assert_array_equal(np.asarray(image)[:, :, 1], written["train"][0][7])
    assert label == 7
    assert "Fashion-MNIST" in splits.description
    assert "12 train, 5 test (the test set serves as validation)" in splits.description


@pytest.mark.parametrize(
    ("name", "classes"),
    [("fashion-mnist", FASHION_MNIST.classes), ("mnist", tuple("0123456789"))],
)
def test_both_names_take_a_path(tmp_path: Path, name: str, classes: tuple[str, ...]):
    write_idx_set(tmp_path / "set", gzipped=False)
    splits = open_source(f"{name}:{tmp_path / 'set'}")
    assert splits.classes == list(classes)
    assert (len(splits.train), len(splits.val)) == (12, 5)
    assert MNIST.classes == tuple("0123456789")
    assert FASHION_MNIST.classes[0] == "T-shirt/top" and FASHION_MNIST.classes[9] == "Ankle boot"


def test_a_path_may_be_a_torchvision_root(tmp_path: Path):
    write_idx_set(tmp_path / "root" / "MNIST" / "raw")
    splits = open_source(f"mnist:{tmp_path / 'root'}")
    assert (len(splits.train), len(splits.val)) == (12, 5)


def test_val_only_reads_no_training_file(tmp_path: Path):
    written = write_idx_set(tmp_path / "set")
    full = open_source(f"mnist:{tmp_path / 'set'}")
    for path in (tmp_path / "set").glob("train-*"):
        path.unlink()
    assert "train-images-idx3-ubyte" in data_error(f"mnist:{tmp_path / 'set'}")
    only = open_source(f"mnist:{tmp_path / 'set'}", val_only=True)
    assert only.train is None and only.classes == full.classes
    np.testing.assert_array_equal(only.val.images[..., 0], written["test"][0])
    assert only.description == full.description.replace("12 train", "training files not read")


def damage(folder: Path, kind: str) -> Path:
    """Rewrite one file of a good set in `folder` with the damage `kind`; the file's path."""
    images = np.zeros((COUNTS["train"], ROWS, COLUMNS), dtype=np.uint8)
    labels = np.arange(COUNTS["train"]) % 10
    images_path = folder / FILES["train"][0]
    labels_path = folder / FILES["train"][1]
    for path in folder.glob("train-*"):
        path.unlink()
    write_file(labels_path, idx_bytes(labels), gzipped=False)
    write_file(images_path, idx_bytes(images), gzipped=False)
    if kind == "bad magic":
        write_file(images_path, idx_bytes(images, magic=0x00000D03), gzipped=False)
        return images_path
    if kind == "wrong dimension count":
        write_file(images_path, idx_bytes(images.reshape(COUNTS["train"], -1)), gzipped=False)
        return images_path
    if kind == "truncated data":  # gzipped, to check the length after gunzip
        images_path.unlink()
        return write_file(images_path, idx_bytes(images)[:-5], gzipped=True)
    if kind == "trailing data":
        write_file(images_path, idx_bytes(images) + b"\0", gzipped=False)
        return images_path
    if kind == "count mismatch":
        write_file(labels_path, idx_bytes(labels[:-1]), gzipped=False)
        return labels_path
    if kind == "label out of range":
        labels[3] = 10
        write_file(labels_path, idx_bytes(labels), gzipped=False)
        return labels_path
    if kind == "broken gzip":
        images_path.unlink()
        gzipped = images_path.with_name(images_path.name + ".gz")
        gzipped.write_bytes(gzip.compress(idx_bytes(images))[:-20])
        return gzipped
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("bad magic", "magic number 0x00000d03, expected 0x00000803"),
        ("wrong dimension count", "2 dimensions, expected 3"),
        ("truncated data", "(truncated)"),
        ("trailing data", "(trailing bytes)"),
        ("count mismatch", "12 images"),
        ("label out of range", "label 10 at index 3 is outside 0..9"),
        ("broken gzip", "cannot read IDX file"),
    ],
)
def test_each_kind_of_damage_is_one_line_naming_the_file(tmp_path: Path, kind: str, words: str):
    write_idx_set(tmp_path / "set", gzipped=False)
    damaged = damage(tmp_path / "set", kind)
    message = data_error(f"fashion-mnist:{tmp_path / 'set'}")
    assert str(damaged) in message
    assert words in message


def test_missing_files_say_where_and_both_ways(tmp_path: Path, empty_cache: Path):
    message = data_error(f"fashion-mnist:{tmp_path}")
    assert f"looked in {tmp_path} and {tmp_path / 'FashionMNIST' / 'raw'}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    message = data_error("fashion-mnist")
    assert str(tmp_path / "no-package") in message and str(empty_cache) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    message = data_error("mnist")
    assert str(empty_cache / "MNIST" / "raw") in message
    assert "mnist:PATH" in message and "--download" in message
    assert "needs a path" in data_error("mnist:")


def test_download_goes_through_torchvision_into_the_cache(
    tmp_path: Path, empty_cache: Path, monkeypatch
):
    import torchvision.datasets

    calls = []

    class FakeMNIST:  # stands in for torchvision's download: tests fetch nothing
        def __init__(self, root: str, train: bool, download: bool):
            calls.append((root, download))
            write_idx_set(Path(root) / "MNIST" / "raw", gzipped=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    splits = open_source("mnist", download=True)
    assert calls == [(str(empty_cache), True)]
    assert str(empty_cache / "MNIST" / "raw") in splits.description
    again = open_source("mnist")  # found in the cache, not fetched again
    assert calls == [(str(empty_cache), True)] and len(again.train) == 12
    open_source(f"mnist:{tmp_path / 'here'}", download=True)  # with a path: into that path
    assert calls[-1] == (str(tmp_path / "here"), True)


def test_absolute_source_keeps_the_names_and_makes_paths_absolute():
    assert absolute_source("fashion-mnist") == "fashion-mnist"
    assert absolute_source("mnist") == "mnist"
    assert absolute_source("mnist:data/m") == "mnist:" + str(Path("data/m").absolute())
    assert absolute_source("fashion-mnist:/d/f") == "fashion-mnist:/d/f"


@pytest.mark.skipif(
    not PACKAGE_FOLDER.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`"
)
def test_the_debian_package_opens():
    splits = open_source("fashion-mnist")
    assert (len(splits.train), len(splits.val)) == (60000, 10000)
    assert splits.train.images.shape[1:] == (28, 28, 3)
    assert splits.val.images.shape[1:] == (28, 28, 3)
    assert splits.classes == list(FASHION_MNIST.classes)
    assert str(PACKAGE_FOLDER) in splits.description
