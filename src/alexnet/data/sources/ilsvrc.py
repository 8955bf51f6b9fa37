"""ILSVRC-2012 as distributed (§2): 1000 classes, about 1.2M training and 50,000 validation images.

Layout: `train/<wnid>/*.JPEG`, and `val/` either in wnid folders too or flat
(`val/ILSVRC2012_val_00000001.JPEG`, ...) with its labels in one of
- `LOC_val_solution.csv` (the Kaggle release: `ImageId,PredictionString`, whose first word is
  the wnid), looked for in val/, the root, and up to three folders above the root;
- the devkit's `ILSVRC2012_validation_ground_truth.txt` (same places, also inside
  `ILSVRC2012_devkit_t12/data/`): one ILSVRC2012_ID (1..1000) per line, line i for
  `ILSVRC2012_val_<i>`. Those IDs are the devkit's own numbering, not sorted wnid order; the
  devkit's `meta.mat` beside the file maps them to wnids and is read with scipy, which this
  project does not require: without it (or without meta.mat) the error says to use the CSV or
  wnid folders instead.

Labels are sorted-wnid order, as torchvision's ImageNet models use. Class names: with exactly
1000 wnid classes, the 1000 category names torchvision ships (in sorted-wnid order); otherwise
the wnids themselves. Opened for validation only, train/ gives only its wnid folders' names
(one listing, not a walk of 1.2M images): the same labels and names.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from alexnet.data.sources.dataset import DataError, FileEntry, FileSource, Splits
from alexnet.data.sources.decode import is_image_name
from alexnet.data.sources.folder import scan_image_folder, scan_train_folder, split_counts

log = logging.getLogger("alexnet.data")
WNID = re.compile(r"n\d{8}")
KAGGLE_LABELS = "LOC_val_solution.csv"
DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"


def is_ilsvrc_train(train_dir: Path) -> bool:
    """True when every class folder of `train_dir` is named by a wnid (n + 8 digits)."""
    folders = [
        entry.name
        for entry in os.scandir(train_dir)
        if entry.is_dir() and not entry.name.startswith(".")
    ]
    return bool(folders) and all(WNID.fullmatch(name) for name in folders)


def open_ilsvrc(root: Path, *, val_only: bool = False) -> Splits:
    """`root/train` and `root/val` in either validation layout (see the module docstring).

    val_only: train/ gives only its class folders' names, and Splits.train is None.
    """
    visited: set[tuple[int, int]] = set()  # each folder entered once (data/folder.py)
    wnids, train_entries = scan_train_folder(root / "train", val_only, visited)
    names = class_names(wnids)
    val_dir = root / "val"
    if any(entry.is_dir() and WNID.fullmatch(entry.name) for entry in os.scandir(val_dir)):
        _, val_entries = scan_image_folder(val_dir, wnids, visited)
        label_origin = "wnid folders"
    else:
        val_entries, label_origin = _flat_val_entries(root, val_dir, wnids)
    train = None
    if train_entries is not None:
        train = FileSource(f"ILSVRC-2012 train at {root}", names, train_entries)
    val = FileSource(f"ILSVRC-2012 val at {root}", names, val_entries)
    counts = split_counts(train, val, f" (val labels from {label_origin})")
    return Splits(train, val, names, f"ILSVRC-2012 at {root}: {len(wnids)} classes, {counts}")


def class_names(wnids: list[str]) -> list[str]:
    """Human-readable names for sorted wnids (see the module docstring)."""
    if len(wnids) != 1000:
        return list(wnids)
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def _flat_val_entries(root: Path, val_dir: Path, wnids: list[str]) -> tuple[list[FileEntry], str]:
    """Flat val/ images labelled from the Kaggle CSV or the devkit file, whichever is found."""
    wnid_of, label_file = _val_wnids(root, val_dir)
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    entries: list[FileEntry] = []
    unlabelled = other_class = 0
    for entry in sorted(os.scandir(val_dir), key=lambda entry: entry.name):
        if not (entry.is_file() and is_image_name(entry.name)) or entry.name.startswith("."):
            continue
        wnid = wnid_of.get(Path(entry.name).stem)
        if wnid is None:
            unlabelled += 1
        elif wnid not in label_of:
            other_class += 1
        else:
            stat = entry.stat()
            entries.append(FileEntry(entry.path, label_of[wnid], stat.st_size, stat.st_mtime_ns))
    if unlabelled:
        log.warning(
            "%d images in %s have no label in %s; left out", unlabelled, val_dir, label_file
        )
    if other_class:
        log.warning(
            "%d images in %s belong to classes not in train/; left out", other_class, val_dir
        )
    if not entries:
        raise DataError(f"{val_dir}: no validation images with a label from {label_file}")
    return entries, label_file.name


def _val_wnids(root: Path, val_dir: Path) -> tuple[dict[str, str], Path]:
    """{image file stem: wnid} for flat val/ images, and the file the labels came from."""
    places = [val_dir, root, *list(root.resolve().parents)[:3]]
    for place in places:
        if (place / KAGGLE_LABELS).is_file():
            return _read_kaggle_labels(place / KAGGLE_LABELS), place / KAGGLE_LABELS
    for place in places:
        for folder in (place, place / "ILSVRC2012_devkit_t12" / "data", place / "data"):
            if (folder / DEVKIT_LABELS).is_file():
                return _read_devkit_labels(folder / DEVKIT_LABELS), folder / DEVKIT_LABELS
    raise DataError(
        f"{val_dir} holds images but no wnid folders, and neither {KAGGLE_LABELS} nor the "
        f"devkit's {DEVKIT_LABELS} was found near {root}"
    )


def _read_kaggle_labels(path: Path) -> dict[str, str]:
    with open(path, newline="") as file:
        rows = csv.reader(file)
        next(rows, None)  # header: ImageId,PredictionString
        return {row[0]: row[1].split()[0] for row in rows if len(row) >= 2 and row[1].strip()}


def _read_devkit_labels(path: Path) -> dict[str, str]:
    meta = path.parent / "meta.mat"
    advice = f"use {KAGGLE_LABELS} or put val/ images in wnid folders"
    if not meta.is_file():
        raise DataError(
            f"{path} numbers classes by the devkit's ILSVRC2012_ID, which needs {meta} "
            f"(missing) to map to wnids; {advice}"
        )
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(
            f"{path} needs {meta}, which is read with scipy (not installed); {advice}"
        ) from None
    synsets = loadmat(meta, squeeze_me=True)["synsets"]
    wnid_of_id = {
        int(synset["ILSVRC2012_ID"]): str(synset["WNID"])
        for synset in synsets
        if int(synset["num_children"]) == 0  # the 1000 leaf classes
    }
    ids = [int(line) for line in path.read_text().split()]
    return {f"ILSVRC2012_val_{number:08d}": wnid_of_id[id_] for number, id_ in enumerate(ids, 1)}
