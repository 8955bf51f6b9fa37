"""Data sets made on the spot, in the real on-disk formats, with Pillow and numpy (tiny images)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from data_helpers import (
    CIFAR_CLASSES,
    DEVKIT_ID_OF_WNID,
    VAL_LABELS,
    WNIDS,
    cifar_batch,
    jpeg_bytes,
    png_rgb16_bytes,
    random_pixels,
    save_image,
    write_flat_val,
    write_ilsvrc_train,
    write_tree,
)
from PIL import Image


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """Three classes with 10, 10 and 20 PNG images."""
    return write_tree(tmp_path / "tree", {"cat": 10, "dog": 10, "fox": 20})


@pytest.fixture
def folder_pair(tmp_path: Path) -> Path:
    """train/ with classes a (2 images) and b (3), val/ with 1 and 2 of them."""
    root = tmp_path / "pair"
    write_tree(root / "train", {"b": 3, "a": 2})
    write_tree(root / "val", {"b": 2, "a": 1}, seed=1)
    return root


@pytest.fixture
def ilsvrc_kaggle(tmp_path: Path) -> Path:
    """ILSVRC-2012 train/ + flat val/, labels in LOC_val_solution.csv a folder above (Kaggle)."""
    root = tmp_path / "imagenet"
    write_ilsvrc_train(root)
    stems = write_flat_val(root, VAL_LABELS)
    lines = ["ImageId,PredictionString"]
    for stem, label in zip(stems, VAL_LABELS, strict=True):
        lines.append(f"{stem},{WNIDS[label]} 1 2 8 9 {WNIDS[label]} 0 0 5 5")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def ilsvrc_devkit(tmp_path: Path) -> Path:
    """Flat val/ labelled by the devkit's ground-truth file and meta.mat (needs scipy)."""
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "imagenet"
    write_ilsvrc_train(root)
    write_flat_val(root, VAL_LABELS)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    ids = [DEVKIT_ID_OF_WNID[WNIDS[label]] for label in VAL_LABELS]
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ids))
    synsets = np.zeros(
        len(WNIDS) + 1, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]
    )
    for row, wnid in enumerate(WNIDS):
        synsets[row] = (DEVKIT_ID_OF_WNID[wnid], wnid, 0)
    synsets[len(WNIDS)] = (1001, "n00001740", 3)  # an inner node of the hierarchy, not a class
    scipy_io.savemat(data / "meta.mat", {"synsets": synsets})
    return root


@pytest.fixture
def ilsvrc_folders(tmp_path: Path) -> Path:
    """ILSVRC-2012 with val/ already sorted into wnid folders."""
    root = tmp_path / "imagenet"
    write_ilsvrc_train(root)
    rng = np.random.default_rng(3)
    for number, label in enumerate(VAL_LABELS, 1):
        path = root / "val" / WNIDS[label] / f"ILSVRC2012_val_{number:08d}.JPEG"
        save_image(path, random_pixels(rng, 10, 12))
    return root


@pytest.fixture
def cifar_folder(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, list[int]]]]:
    """cifar-10-batches-py with 3 images per training batch and 4 test images."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(4)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows, labels = cifar_batch(rng, 4 if name == "test_batch" else 3)
        batches[name] = (rows, labels)
        with open(folder / name, "wb") as file:
            pickle.dump({"batch_label": name, "data": rows, "labels": labels}, file, protocol=2)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_vis": 3072}, file, protocol=2)
    return folder, batches


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    """A tree whose class `odd` holds every awkward kind of file, beside a plain class `plain`."""
    root = tmp_path / "odd"
    rng = np.random.default_rng(5)
    for i in range(4):
        save_image(root / "plain" / f"p{i}.png", random_pixels(rng, 8, 10))
    odd = root / "odd"
    odd.mkdir()
    (odd / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 4)
    whole = jpeg_bytes(random_pixels(rng, 64, 64))
    (odd / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (odd / "empty.jpg").write_bytes(b"")
    Image.new("CMYK", (10, 8), (0, 255, 0, 0)).save(odd / "cmyk.jpg", quality=100)
    save_image(odd / "gray.png", np.full((8, 10), 77, np.uint8))
    palette = Image.new("P", (10, 8), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(odd / "palette.png")
    palette.save(odd / "palette_transparent.png", transparency=1)
    save_image(odd / "rgba.png", np.full((8, 10, 4), (200, 100, 50, 128), np.uint8))
    Image.fromarray(np.full((8, 10), 51400, np.uint16)).save(odd / "gray16.png")
    (odd / "rgb16.png").write_bytes(png_rgb16_bytes(np.full((8, 10, 3), (51400, 25700, 771))))
    save_image(odd / "disguised_png.JPEG", np.full((8, 10, 3), (1, 2, 3), np.uint8), format="PNG")
    (odd / "notes.txt").write_text("not an image")
    (odd / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root
