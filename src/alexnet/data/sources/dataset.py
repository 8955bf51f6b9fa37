"""What a data set is before any preprocessing: labelled RGB images, and how they split (§2).

A source is a torch Dataset whose items are `(PIL RGB image, label)`, or None for a file that
cannot be read: a bad file is skipped with one warning naming it, counted, and the run goes on.
Two kinds hold every data set: `FileSource` (image files on disk: folders, ILSVRC-2012) and
`ArraySource` (images already in memory: CIFAR-10, scikit-learn's digits). `Splits` is what
`open_source` returns. `DataError` is a problem with the data a person can fix; its message is
one line, and the CLI turns it into exit status 2.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from alexnet.data.sources.decode import read_rgb
from alexnet.data.sources.downsample import Prepare
from alexnet.errors import UserError

log = logging.getLogger("alexnet.data")


class DataError(UserError):
    """A data problem a person can fix (missing path, no images, empty class folder)."""


def same_class_names(classes: Sequence[str]) -> tuple[str, str] | None:
    """The first two class names that are one name to a reader (equal once Unicode-normalised,
    as "é" written as one character or two), or None: a label must name one class."""
    seen: dict[str, str] = {}
    for name in classes:
        key = unicodedata.normalize("NFC", name)
        if key in seen:
            return seen[key], name
        seen[key] = name
    return None


class ImageSource(Dataset):
    """Labelled RGB images; `load(index)` returns `(image, label)` or None for a skipped file."""

    def __init__(self, name: str, classes: list[str], labels: Sequence[int]):
        self.name = name  # e.g. "image folder /data/pets (train split)"
        self.classes = classes  # human-readable class names, index = label
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,)
        self.unreadable: dict[int, str] = {}  # index -> why it was skipped

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int] | None:
        return self.load(index)

    def load(self, index: int, min_size: int | None = None) -> tuple[Image.Image, int] | None:
        """The item at `index`; min_size lets a decoder work at reduced size (see read_rgb)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A digest that changes when the images or labels change (the stats cache key)."""
        raise NotImplementedError

    prepared_size: int | None = None  # the side of every image, when §2 was applied already

    def pixels(self, index: int, image_size: int) -> torch.Tensor | None:
        """The item's image prepared as in §2 (3, S, S) uint8, S = image_size; None if skipped."""
        item = self.load(index, image_size)
        return None if item is None else Prepare(image_size)(item[0])

    def encoded(self, index: int) -> torch.Tensor | None:
        """The item's prepared image as JPEG bytes (1-D uint8), for a GPU decoder; None where
        the source holds no such bytes (only a prepared store does)."""
        return None

    def stored_stats(self, image_size: int):
        """The DataStats this source carries for `image_size` (a prepared store), or None."""
        return None

    def mark_unreadable(self, index: int, reason: str, *, warn: bool = True) -> None:
        """Record a skipped item; warns once per item (warn=False: already warned elsewhere)."""
        if index in self.unreadable:
            return
        self.unreadable[index] = reason
        if warn:
            log.warning("skipping %s: %s", self.describe(index), reason)

    def describe(self, index: int) -> str:
        return f"item {index} of {self.name}"

    def summary(self) -> str:
        """One line: images, classes, skipped files (those found so far in this process)."""
        return (
            f"{self.name}: {len(self)} images, {len(self.classes)} classes, "
            f"{len(self.unreadable)} skipped"
        )


UNREADABLE = -1  # FileEntry.size of a file that cannot even be looked at


class FileEntry(NamedTuple):
    """One image file found by a scan."""

    path: str
    label: int
    size: int  # bytes; 0 (empty) and UNREADABLE (dangling symlink, ...) are skipped at once
    mtime_ns: int


class FileSource(ImageSource):
    """Image files on disk, decoded on demand.

    Paths are kept in one numpy byte-string array, not a list of Python strings, so that forked
    loader workers share it instead of copying it page by page (reference counts touch pages).
    Empty (0-byte) files are skipped at construction, with a warning each.
    """

    def __init__(self, name: str, classes: list[str], entries: Sequence[FileEntry]):
        super().__init__(name, classes, [entry.label for entry in entries])
        self.paths = np.array([os.fsencode(entry.path) for entry in entries], dtype=np.bytes_)
        digest = hashlib.sha256()
        for entry in entries:
            digest.update(os.fsencode(entry.path))  # any name, UTF-8 or not
            digest.update(f"\0{entry.label}\0{entry.size}\0{entry.mtime_ns}\n".encode())
        self._fingerprint = digest.hexdigest()
        for index, entry in enumerate(entries):
            if entry.size == 0:
                self.mark_unreadable(index, "empty file (0 bytes)")
            elif entry.size == UNREADABLE:
                self.mark_unreadable(index, "cannot read it (a dangling symlink, or no permission)")

    def path(self, index: int) -> str:
        return os.fsdecode(self.paths[index])

    def describe(self, index: int) -> str:
        return self.path(index)

    def load(self, index: int, min_size: int | None = None) -> tuple[Image.Image, int] | None:
        if index in self.unreadable:
            return None
        try:
            image = read_rgb(self.path(index), min_size)
        except Exception as error:  # Pillow raises many kinds for a bad file; each is a skip
            self.mark_unreadable(index, f"cannot decode ({type(error).__name__}: {error})")
            return None
        return image, int(self.labels[index])

    def fingerprint(self) -> str:
        return self._fingerprint


PREPARED_BYTES = 256 * 2**20  # an in-memory set whose prepared images fit is prepared once


class ArraySource(ImageSource):
    """Images held in memory as one uint8 array (N, H, W, 3); nothing can be unreadable."""

    def __init__(self, name: str, classes: list[str], images: np.ndarray, labels: Sequence[int]):
        super().__init__(name, classes, labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(
                f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        self.images = images  # (N, H, W, 3)
        self._fingerprint: str | None = None
        self._prepared: dict[tuple[int, int], torch.Tensor] = {}  # (index, size) -> pixels

    def load(self, index: int, min_size: int | None = None) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], "RGB"), int(self.labels[index])

    def pixels(self, index: int, image_size: int) -> torch.Tensor:
        """§2 once per image and size when the whole set at that size fits in PREPARED_BYTES
        (digits at 64 px: 22 MB), as every epoch asks again; else each time, as for any source.
        The tensor is shared: read it, do not change it."""
        if len(self) * 3 * image_size**2 > PREPARED_BYTES:
            return super().pixels(index, image_size)
        key = (index, image_size)
        if key not in self._prepared:
            self._prepared[key] = super().pixels(index, image_size)
        return self._prepared[key]

    def fingerprint(self) -> str:
        """Hashed once (Fashion-MNIST's 60,000 images are 141 MB; a report asks several times)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(np.ascontiguousarray(self.images).data)
            digest.update(self.labels.tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


class SubsetSource(ImageSource):
    """A fixed selection of another source's items, in their order (data.train_subset)."""

    def __init__(self, source: ImageSource, indices: Sequence[int]):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        name = f"{source.name} (a fixed subset of {len(self.indices)})"
        super().__init__(name, source.classes, source.labels[self.indices])
        self.prepared_size = source.prepared_size

    def load(self, index: int, min_size: int | None = None) -> tuple[Image.Image, int] | None:
        return self.source.load(int(self.indices[index]), min_size)

    def pixels(self, index: int, image_size: int) -> torch.Tensor | None:
        return self.source.pixels(int(self.indices[index]), image_size)

    def encoded(self, index: int) -> torch.Tensor | None:
        return self.source.encoded(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.source.describe(int(self.indices[index]))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.source.fingerprint().encode())
        digest.update(self.indices.tobytes())
        return digest.hexdigest()


@dataclass
class Splits:
    """A data set as `open_source` returns it."""

    train: ImageSource | None  # None when opened for validation only (open_source val_only)
    val: ImageSource
    classes: list[str]  # human-readable class names, index = label
    description: str  # one line for the run's log


def stratified_split(
    labels: Sequence[int], classes: list[str], fraction: float, seed: int, *, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out): a seeded split holding out `fraction` of every class.

    At least one image of every class is held out, so each class needs two or more images;
    `what` names the data in the error raised otherwise. The split is scikit-learn's
    `train_test_split(..., stratify=labels, random_state=seed)`, draw for draw (tested equal):
    written out here because importing scikit-learn slows every command's start, and
    so that a held-out set does not change with scikit-learn's version.
    """
    if not 0 < fraction < 1:
        raise DataError(f"{what}: the held-out fraction must be between 0 and 1, got {fraction}")
    labels = np.asarray(labels)
    class_ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise DataError(
            f"{what}: cannot hold out a stratified {fraction:.0%}: class "
            f"{classes[class_ids[counts.argmin()]]!r} has a single image; "
            "give it more images or split the data into train/ and val/"
        )
    held_out = max(math.ceil(fraction * len(labels)), len(class_ids))
    if held_out > len(labels) - len(class_ids):
        raise DataError(
            f"{what}: {len(labels)} images are too few to hold out one image of each of "
            f"{len(class_ids)} classes and keep one for training"
        )
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)  # scikit-learn's check_random_state(seed)
    kept = _apportion(counts, len(labels) - held_out, rng)
    out = _apportion(counts - kept, held_out, rng)
    train, val = [], []
    for indices, count, keep, hold in zip(members, counts, kept, out, strict=True):
        shuffled = indices[rng.permutation(count)]
        train.append(shuffled[:keep])
        val.append(shuffled[keep : keep + hold])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _apportion(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `draws` each class gets: its share of `counts` rounded down, the rest given
    one each by the largest remainders, ties drawn at random (scikit-learn's
    `_approximate_mode`)."""
    continuous = counts / counts.sum() * draws
    given = np.floor(continuous)
    missing = int(draws - given.sum())
    remainder = continuous - given
    for value in np.sort(np.unique(remainder))[::-1] if missing > 0 else []:
        (tied,) = np.where(remainder == value)
        now = min(len(tied), missing)
        given[rng.choice(tied, size=now, replace=False)] += 1
        missing -= now
        if missing == 0:
            break
    return given.astype(int)


def empty_files_note(*sources: FileSource) -> str:
    """ "; N empty or unreadable files skipped" for a data set's description, or "" if none."""
    skipped = sum(len(source.unreadable) for source in sources)
    return f"; {skipped} empty or unreadable files skipped" if skipped else ""
