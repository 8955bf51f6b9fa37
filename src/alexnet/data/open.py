"""`open_source`: from a `--data SOURCE` string (README, "Training") to training and
validation images.

SOURCE is one of
- `digits`: scikit-learn's digits (the default; nothing to download);
- `cifar10:PATH`: CIFAR-10's python pickles, PATH = cifar-10-batches-py or its parent;
- `fashion-mnist`, `mnist`, `fashion-mnist:PATH`, `mnist:PATH`: the four IDX files (idx.py),
  from PATH, or without one from the Debian package's folder (Fashion-MNIST) or the cache folder
  a download went to;
- a folder holding `train/` and `val/`: ILSVRC-2012 as distributed (§2; recognised by wnid class
  folders, n + 8 digits) or any image folders split that way;
- a single image-folder tree `root/<class>/<image>`: a seeded, stratified fraction is held out
  for validation, and the description says so;
- a prepared store that `alexnet prepare` wrote (store.py), recognised by its store.json.

`val_only` (evaluation) opens only what the validation split needs: `Splits.train` is None.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from alexnet.data.sources.cifar import open_cifar10
from alexnet.data.sources.dataset import DataError, Splits, SubsetSource
from alexnet.data.sources.digits import open_digits
from alexnet.data.sources.folder import open_folder_pair, open_folder_tree
from alexnet.data.sources.idx import IDX_DATA_SETS, open_idx
from alexnet.data.sources.ilsvrc import is_ilsvrc_train, open_ilsvrc
from alexnet.data.sources.specs import CIFAR_PREFIX, checked_spec
from alexnet.data.store.read import is_store, is_unfinished_store, open_store
from alexnet.recipe import DataRecipe


def open_source(
    spec: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    val_only: bool = False,
) -> Splits:
    """The Splits for `spec`; a missing path, no images or an empty class folder: DataError.

    val_fraction: held out of a single image-folder tree; seed: that split's (and the digits
    test split's) seed; download: fetch CIFAR-10, Fashion-MNIST or MNIST if it is not found;
    val_only: train None, and no training image is read where the validation set does not
    depend on them (the val source and the classes are those of a full open).
    """
    if checked_spec(spec) == "digits":
        return _without_train(open_digits(seed), val_only)
    if spec.startswith(CIFAR_PREFIX):
        path = spec[len(CIFAR_PREFIX) :]
        if not path:
            raise DataError(
                "cifar10:PATH needs a path (the cifar-10-batches-py folder or its parent)"
            )
        return open_cifar10(Path(path).expanduser(), download, val_only=val_only)
    name, colon, path = spec.partition(":")
    if name in IDX_DATA_SETS:
        data_set = IDX_DATA_SETS[name]
        if colon and not path:
            raise DataError(f"{name}:PATH needs a path (the folder of the IDX files)")
        folder = Path(path).expanduser() if path else None
        return open_idx(data_set, folder, download, val_only=val_only)
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data source {spec!r} not found: expected digits, cifar10:PATH, fashion-mnist[:PATH], "
            "mnist[:PATH] or an image folder"
        )
    if is_store(root):
        return open_store(root, val_only=val_only)
    if is_unfinished_store(root):
        raise DataError(
            f"{root} is an unfinished prepared store: run the same `alexnet prepare` again to "
            "finish it"
        )
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train and has_val:
        if is_ilsvrc_train(root / "train"):
            return open_ilsvrc(root, val_only=val_only)
        return open_folder_pair(root, val_only=val_only)
    if has_train:
        raise DataError(f"{root} has train/ but no val/ beside it")
    return _without_train(open_folder_tree(root, val_fraction, seed), val_only)


def _without_train(splits: Splits, val_only: bool) -> Splits:
    """`splits`, with train dropped if val_only. For digits and a single tree only: their
    held-out split is drawn from every image, so they are opened in full all the same."""
    return dataclasses.replace(splits, train=None) if val_only else splits


def open_splits(recipe: DataRecipe, *, download: bool = False, val_only: bool = False) -> Splits:
    """`open_source` for a recipe: its source, held-out fraction and split seed; with
    `train_subset` N, training takes a fixed subset of N images drawn with the split seed."""
    splits = open_source(
        recipe.source,
        val_fraction=recipe.val_fraction,
        seed=recipe.split_seed,
        download=download,
        val_only=val_only,
    )
    size = recipe.train_subset
    if splits.train is None or not 0 < size < len(splits.train):
        return splits
    chosen = np.sort(np.random.default_rng(recipe.split_seed).permutation(len(splits.train))[:size])
    description = f"{splits.description}; training on a fixed subset of {size} (data.train_subset)"
    return dataclasses.replace(
        splits, train=SubsetSource(splits.train, chosen), description=description
    )
