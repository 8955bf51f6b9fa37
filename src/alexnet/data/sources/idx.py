"""Fashion-MNIST and MNIST in their IDX files: 70,000 28×28 grey images in 10 classes each.

Neither is in the paper; like CIFAR-10 they are small data sets for the whole pipeline,
upsampled by the recipe's image size. A folder holds the four standard files
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (60,000 training images),
`t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (10,000, used for validation), each
plain or gzipped (`.gz`). Without a path, Fashion-MNIST is read from the Debian package's folder
(`apt-get install dataset-fashion-mnist`); either set is read from the cache folder
(`$ALEXNET_CACHE`, default `~/.cache/alexnet`) once downloaded there, and downloaded (with
torchvision, into PATH or that cache folder) only when asked. Opened for validation only, the
training files are not read.

Every header is checked (magic number: unsigned bytes, 3 dimensions for images and 1 for
labels), the data must be exactly as long as the header's dimensions say, images and labels must
agree in number and labels lie in 0..9: anything else is a one-line DataError naming the file.
The grey channel is replicated to three, (N, 28, 28, 3) uint8, as every source hands its images
to the pipeline in RGB.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from alexnet.data.sources.dataset import ArraySource, DataError, Splits
from alexnet.data.sources.decode import ImageTooLarge, check_size
from alexnet.files import cache_dir

UNSIGNED_BYTE = 0x08  # the IDX type code of uint8 data, the third byte of the magic number
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
MAX_BYTES = 2**30  # an IDX file's data: 1.4M 28×28 images, three times that once grey is RGB
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IdxDataSet:
    """One data set distributed as the four IDX files."""

    name: str  # for messages and descriptions, e.g. "Fashion-MNIST"
    spec: str  # its `--data` name, e.g. "fashion-mnist"
    classes: tuple[str, ...]  # index = label
    torchvision_name: str  # the torchvision class, also its folder: ROOT/<name>/raw
    package: str | None = None  # the Debian package that installs it
    package_folder: Path | None = None  # where that package puts the files


FASHION_MNIST = IdxDataSet(
    name="Fashion-MNIST",
    spec="fashion-mnist",
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    torchvision_name="FashionMNIST",
    package="dataset-fashion-mnist",
    package_folder=Path("/usr/share/datasets/fashion-mnist"),
)
MNIST = IdxDataSet(
    name="MNIST",
    spec="mnist",
    classes=tuple(str(digit) for digit in range(10)),
    torchvision_name="MNIST",
)
IDX_DATA_SETS = {data_set.spec: data_set for data_set in (FASHION_MNIST, MNIST)}


def open_idx(
    data_set: IdxDataSet, path: Path | None, download: bool = False, *, val_only: bool = False
) -> Splits:
    """`data_set` from `path` (the folder of the IDX files, or a torchvision root holding
    <torchvision_name>/raw), or when None from the package folder or the cache folder.

    download: fetch it with torchvision into `path` (None: the cache folder) if it is not there;
    val_only: only the t10k files are read, and Splits.train is None.
    """
    needed = TEST_FILES if val_only else TRAIN_FILES + TEST_FILES
    candidates = candidate_folders(data_set, path)
    folder = _find_folder(candidates, needed)
    if folder is None:
        if not download:
            raise DataError(_not_found_message(data_set, path, candidates, needed))
        root = cache_dir("downloads") if path is None else path
        _download(data_set, root)
        folder = _find_folder([root / data_set.torchvision_name / "raw"], needed)
        if folder is None:
            raise DataError(f"{data_set.name} downloaded into {root}, but its files are missing")
    classes = list(data_set.classes)
    train = None
    if not val_only:
        train = ArraySource(
            f"{data_set.name} train at {folder}", classes, *_read_pair(folder, TRAIN_FILES, classes)
        )
    test = ArraySource(
        f"{data_set.name} test at {folder}", classes, *_read_pair(folder, TEST_FILES, classes)
    )
    train_count = "training files not read" if train is None else f"{len(train)} train"
    return Splits(
        train,
        test,
        classes,
        f"{data_set.name} at {folder}: {len(classes)} classes, {train_count}, "
        f"{len(test)} test (the test set serves as validation)",
    )


def read_idx_images(path: Path) -> np.ndarray:
    """The images of an IDX image file, (N, rows, columns) uint8."""
    return _read_idx(path, IMAGES_MAGIC, "images")


def read_idx_labels(path: Path, class_count: int = 10) -> np.ndarray:
    """The labels of an IDX label file, (N,) int64, each checked to lie in 0..class_count-1."""
    labels = _read_idx(path, LABELS_MAGIC, "labels")
    outside = np.flatnonzero(labels >= class_count)
    if outside.size:
        first = int(outside[0])
        raise DataError(
            f"bad IDX labels file {path}: label {labels[first]} at index {first} is outside "
            f"0..{class_count - 1} ({outside.size} of {labels.size} labels are)"
        )
    return labels.astype(np.int64)


def _read_idx(path: Path, magic: int, what: str) -> np.ndarray:
    """The array of an IDX file of unsigned bytes whose magic number must be `magic`. The header
    comes first: its sizes are checked against the limits (images: check_size, all: MAX_BYTES)
    and a plain file's length before the data is read, as a stream (gzip too), never more than
    the header promises."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as file:
            shape = _header(file, path, magic, what)
            expected = int(np.prod(shape, dtype=np.int64))
            if path.suffix != ".gz":  # its length is known before a byte of data is read
                _check_length(path, what, shape, os.fstat(file.fileno()).st_size - file.tell())
            content = file.read(expected)
            more = len(file.read(1))
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {error}") from None
    _check_length(path, what, shape, len(content) + more, more)
    return np.frombuffer(content, dtype=np.uint8).reshape(shape)


def _header(file: BinaryIO, path: Path, magic: int, what: str) -> tuple[int, ...]:
    """The sizes of an IDX header read from `file`, each checked against `magic` and limits."""
    head = file.read(4)
    if len(head) < 4:
        raise DataError(f"bad IDX {what} file {path}: {len(head)} bytes, too short for a header")
    found = int.from_bytes(head, "big")
    if found >> 8 != magic >> 8:  # two zero bytes, then the type code
        raise DataError(
            f"bad IDX {what} file {path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"(unsigned bytes, {magic & 0xFF} dimensions)"
        )
    dimension_count = found & 0xFF
    if dimension_count != magic & 0xFF:
        raise DataError(
            f"bad IDX {what} file {path}: {dimension_count} dimensions, expected {magic & 0xFF}"
        )
    sizes = file.read(4 * dimension_count)
    if len(sizes) < 4 * dimension_count:
        raise DataError(
            f"bad IDX {what} file {path}: {4 + len(sizes)} bytes, too short for a header of "
            f"{dimension_count} dimensions"
        )
    shape = tuple(int.from_bytes(sizes[at : at + 4], "big") for at in range(0, len(sizes), 4))
    if what == "images":
        try:
            check_size(shape[2], shape[1])
        except ImageTooLarge as error:
            raise DataError(f"bad IDX images file {path}: {error}") from None
    size = int(np.prod(shape, dtype=np.int64))
    if size > MAX_BYTES:
        raise DataError(
            f"IDX {what} file {path}: {'×'.join(map(str, shape))} {what} are "
            f"{size / 2**20:.0f} MiB, more than the {MAX_BYTES / 2**20:.0f} MiB allowed"
        )
    return shape


def _check_length(path: Path, what: str, shape: tuple[int, ...], length: int, more: int = 0):
    """The data must be exactly as long as the header says (`more`: bytes left past it)."""
    expected = int(np.prod(shape, dtype=np.int64))
    if length != expected:
        problem = "truncated" if length < expected else "trailing bytes"
        bytes_of = f"more than {expected}" if more and length > expected else str(length)
        raise DataError(
            f"bad IDX {what} file {path}: {bytes_of} bytes of data, but the header's "
            f"{'×'.join(map(str, shape))} needs {expected} ({problem})"
        )


def _read_pair(
    folder: Path, names: tuple[str, str], classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8, the grey channel replicated, and labels (N,) of one split."""
    images_path, labels_path = (_existing_file(folder, name) for name in names)
    grey = read_idx_images(images_path)
    labels = read_idx_labels(labels_path, len(classes))
    if len(grey) != len(labels):
        raise DataError(
            f"IDX files disagree: {images_path} holds {len(grey)} images, "
            f"{labels_path} {len(labels)} labels"
        )
    return np.repeat(grey[:, :, :, None], 3, axis=3), labels


def _existing_file(folder: Path, name: str) -> Path | None:
    """folder/name, or folder/name.gz, whichever exists (the plain file first); else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def candidate_folders(data_set: IdxDataSet, path: Path | None) -> list[Path]:
    """Where the files may be: `path` and its torchvision layout, or when `path` is None the
    package folder and the cache folder a download goes to."""
    if path is not None:
        return [path, path / data_set.torchvision_name / "raw"]
    package = [data_set.package_folder] if data_set.package_folder is not None else []
    return package + [cache_dir("downloads") / data_set.torchvision_name / "raw"]


def _find_folder(candidates: list[Path], names: tuple[str, ...]) -> Path | None:
    for folder in candidates:
        if all(_existing_file(folder, name) is not None for name in names):
            return folder
    return None


def _not_found_message(
    data_set: IdxDataSet, path: Path | None, candidates: list[Path], names: tuple[str, ...]
) -> str:
    """One line: where it looked, for what, and the two ways to get the files."""
    looked = " and ".join(str(folder) for folder in candidates)
    where = path if path is not None else cache_dir("downloads")
    if data_set.package is not None:
        ways = (
            f"install it with `apt-get install {data_set.package}` (then use "
            f"--data {data_set.spec}), or pass --download to fetch it into {where}"
        )
    else:
        ways = (
            f"give --data {data_set.spec}:PATH of a folder that holds them, or pass --download "
            f"to fetch it into {where}"
        )
    return (
        f"{data_set.name} not found: looked in {looked} for {', '.join(names)} "
        f"(each plain or .gz); {ways}"
    )


def _download(data_set: IdxDataSet, root: Path) -> None:
    """The four files into root/<torchvision_name>/raw, with torchvision's own download."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, data_set.torchvision_name)
    try:
        dataset_class(root=str(root), train=False, download=True)
    except (OSError, RuntimeError) as error:  # torchvision reports a failed mirror this way
        reason = " ".join(str(error).split())
        raise DataError(f"cannot download {data_set.name} into {root}: {reason}") from None
