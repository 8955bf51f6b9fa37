"""A prepared store: a data set with §2 applied once, read back fast (`alexnet prepare` writes it).

A folder holding, for each split `train` and `val`,
- `SPLIT.bin`: every image, already down-sampled to S×S (§2), one after another: JPEG bytes
  (`encoding` "jpeg") or raw uint8 pixels (S, S, 3) (`encoding` "raw"); memory-mapped;
- `SPLIT.index`: little-endian int64 rows (offset, length, label), one per image;
and, once for the store,
- `stats.safetensors`: the training set's DataStats (mean image, RGB PCA, channel std), computed
  in the same pass, so that no run makes a statistics pass over a store. They are those of the
  source's images after §2 (the pixels before JPEG compression), as a pass over the source
  gives them;
- `store.json`: image size, encoding, class names, where it came from, the files skipped. It is
  written last: a folder is a finished store exactly when it holds this file.
`--data FOLDER` opens a store wherever a source is taken; it is recognised by `store.json`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from alexnet.data.sources.dataset import DataError, ImageSource, Splits, same_class_names
from alexnet.data.stats import DataStats
from alexnet.recipe import MAX_IMAGE_SIZE

STORE_FORMAT = 1  # store.json's "format"; a store of another format is refused
MANIFEST = "store.json"  # written last: its presence marks a finished store
JOB = "prepare.json"  # the settings of an unfinished `alexnet prepare` (prepare.py)
STATS = "stats.safetensors"
SPLITS = ("train", "val")
ENCODINGS = ("jpeg", "raw")


def bin_path(root: Path, split: str) -> Path:
    return root / f"{split}.bin"


def index_path(root: Path, split: str) -> Path:
    return root / f"{split}.index"


def is_store(root: Path) -> bool:
    """True for a finished store (its manifest is there)."""
    return (root / MANIFEST).is_file()


def is_unfinished_store(root: Path) -> bool:
    return (root / JOB).is_file() and not is_store(root)


def read_manifest(root: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the prepared store's {root / MANIFEST}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(
            f"{root} is a prepared store of format {found!r}; this version "
            f"reads format {STORE_FORMAT}: prepare it again"
        )
    return _checked_manifest(manifest, root / MANIFEST)


def _checked_manifest(manifest: dict[str, Any], path: Path) -> dict[str, Any]:
    """The one validation step of store.json: every field a reader uses, of the right type
    and range; anything else is one DataError naming the file and the field."""

    def refuse(field: str, expected: str):
        raise DataError(f"{path}: {field}={manifest.get(field)!r} is not {expected}")

    size, classes = manifest.get("image_size"), manifest.get("classes")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_IMAGE_SIZE:
        refuse("image_size", f"a size in 1..{MAX_IMAGE_SIZE}")
    if manifest.get("encoding") not in ENCODINGS:
        refuse("encoding", f"one of {', '.join(ENCODINGS)}")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        refuse("classes", "a list of class names")
    if same_class_names(classes):
        refuse("classes", "a list of distinct class names")
    for field in ("images", "skipped"):
        if not isinstance(manifest.get(field), dict) or set(manifest[field]) != set(SPLITS):
            refuse(field, f"an entry for each of {', '.join(SPLITS)}")
    if not all(isinstance(n, int) and n >= 0 for n in manifest["images"].values()):
        refuse("images", "counts of images")
    if not all(isinstance(files, list) for files in manifest["skipped"].values()):
        refuse("skipped", "lists of the files left out")
    for field in ("source", "fingerprint"):
        if not isinstance(manifest.get(field), str):
            refuse(field, "text")
    return manifest


def _checked_index(rows: np.ndarray, path: Path, data_bytes: int, manifest: dict, split: str):
    """The one validation step of SPLIT.index: as many rows as store.json counts, each image's
    bytes inside SPLIT.bin, each label one of the classes."""
    if len(rows) != manifest["images"][split]:
        raise DataError(f"{path}: {len(rows)} images, store.json says {manifest['images'][split]}")
    offsets, lengths, labels = rows[:, 0], rows[:, 1], rows[:, 2]
    bad = (offsets < 0) | (lengths <= 0) | (offsets > data_bytes - lengths)  # no sum to wrap
    if bad.any():
        row = int(bad.argmax())
        raise DataError(
            f"{path}: image {row} (offset {offsets[row]}, length {lengths[row]}) lies outside "
            f"{path.with_suffix('.bin').name} ({data_bytes} bytes)"
        )
    bad = (labels < 0) | (labels >= len(manifest["classes"]))
    if bad.any():
        row = int(bad.argmax())
        raise DataError(
            f"{path}: image {row} has label {labels[row]}, outside the "
            f"{len(manifest['classes'])} classes"
        )


def fingerprint_of(root: Path) -> str:
    """A digest of the stored images' index and sizes (the store's identity)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(index_path(root, split).read_bytes())
        digest.update(str(bin_path(root, split).stat().st_size).encode())
    return digest.hexdigest()


class PreparedSource(ImageSource):
    """One split of a store. Images decode to (3, S, S) uint8 with torchvision's JPEG decoder
    (or are read as raw pixels), in whichever process asks; the .bin file is memory-mapped there
    on first use, so loader workers share the page cache instead of copying."""

    def __init__(self, root: Path, split: str, manifest: dict[str, Any]):
        try:
            data = np.fromfile(index_path(root, split), dtype="<i8")
            data_bytes = bin_path(root, split).stat().st_size
        except OSError as error:
            raise DataError(f"cannot read the prepared store's {split} split: {error}") from None
        if len(data) % 3:
            raise DataError(f"{index_path(root, split)}: not whole rows of (offset, length, label)")
        rows = data.reshape(-1, 3)
        _checked_index(rows, index_path(root, split), data_bytes, manifest, split)
        super().__init__(f"prepared store {root} ({split})", list(manifest["classes"]), rows[:, 2])
        self.offsets, self.lengths = rows[:, 0], rows[:, 1]
        self.bin_file = bin_path(root, split)
        self.prepared_size = int(manifest["image_size"])
        self.encoding = manifest["encoding"]
        if self.encoding == "jpeg":  # imported here, before loader workers fork, not in each
            import torchvision.io  # noqa: F401  (and not by every command: a slow import)
        self.stats_file = root / STATS
        self._fingerprint = f"{manifest['fingerprint']}:{split}"
        self._bytes: np.ndarray | None = None  # the memory map, opened per process

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bytes": None}  # a worker maps the file itself

    def _stored(self, index: int) -> np.ndarray:
        if self._bytes is None:  # copy-on-write: writable views, nothing written back; a plain
            # array's slice holds a loader thread's GIL for less time than a memmap's
            # (docs/measurements.md, "Loader threads vs processes")
            self._bytes = np.memmap(self.bin_file, dtype=np.uint8, mode="c").view(np.ndarray)
        offset = int(self.offsets[index])
        return self._bytes[offset : offset + int(self.lengths[index])]

    def _decoded(self, index: int) -> torch.Tensor | None:
        """(3, S, S) uint8 at the store's size, or None (and a warning) if the bytes are bad."""
        stored = torch.from_numpy(self._stored(index))
        size = self.prepared_size
        try:
            if self.encoding == "raw":
                return stored.view(size, size, 3).permute(2, 0, 1)
            from torchvision.io import ImageReadMode, decode_jpeg  # loaded by __init__

            pixels = decode_jpeg(stored, mode=ImageReadMode.RGB)
        except RuntimeError as error:  # torchvision's decoder raises this for corrupt data
            self.mark_unreadable(index, f"cannot decode the stored image ({error})")
            return None
        if pixels.shape != (3, size, size):
            self.mark_unreadable(index, f"stored image is {tuple(pixels.shape)}, not 3×{size}²")
            return None
        return pixels

    def pixels(self, index: int, image_size: int) -> torch.Tensor | None:
        if image_size != self.prepared_size:  # correct, but slower: resized on the fly
            return super().pixels(index, image_size)
        return self._decoded(index)

    def load(self, index: int, min_size: int | None = None) -> tuple[Image.Image, int] | None:
        pixels = self._decoded(index)
        if pixels is None:
            return None
        return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB"), int(self.labels[index])

    def encoded(self, index: int) -> torch.Tensor | None:
        return torch.from_numpy(self._stored(index).copy()) if self.encoding == "jpeg" else None

    def stored_stats(self, image_size: int) -> DataStats | None:
        if image_size != self.prepared_size:
            return None
        return read_stats(self.stats_file, self.prepared_size)

    def fingerprint(self) -> str:
        return self._fingerprint


def read_stats(path: Path, image_size: int) -> DataStats:
    """The store's statistics, checked (DataStats.from_state_dict) to be of its image size."""
    try:
        tensors = load_file(path)
    except Exception as error:  # safetensors raises its own kinds for a damaged file
        raise DataError(f"cannot read the prepared store's {path}: {error}") from None
    return DataStats.from_state_dict({**tensors, "image_size": image_size}, str(path))


def open_store(root: Path, *, val_only: bool = False) -> Splits:
    """The splits of the finished store at `root` (val_only: the training split is not read)."""
    manifest = read_manifest(root)
    train = None if val_only else PreparedSource(root, "train", manifest)
    val = PreparedSource(root, "val", manifest)
    skipped = sum(len(manifest["skipped"][split]) for split in SPLITS)
    counts = f"{manifest['images']['train']} train, {manifest['images']['val']} val"
    return Splits(
        train,
        val,
        list(manifest["classes"]),
        f"prepared store {root}: {len(manifest['classes'])} classes, {counts}, "
        f"{manifest['image_size']} px {manifest['encoding']}; from {manifest['source']}"
        + (f"; {skipped} unreadable files left out when prepared" if skipped else ""),
    )
