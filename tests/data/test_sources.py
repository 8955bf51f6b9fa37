"""Sources read the right images with the right labels and class names (data/*.py, §2)."""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import CIFAR_CLASSES, VAL_LABELS, WNIDS, save_image, write_tree
from PIL import Image

from alexnet.data import DataError, open_source
from alexnet.data.sources.folder import find_image_files
from alexnet.data.sources.ilsvrc import class_names


def labels_of(source) -> list[int]:
    return [source[i][1] for i in range(len(source))]


def test_image_tree_holds_out_a_seeded_stratified_fraction(image_tree: Path):
    splits = open_source(str(image_tree), val_fraction=0.25, seed=3)
    assert splits.classes == ["cat", "dog", "fox"]
    assert len(splits.train) + len(splits.val) == 40
    counts = Counter(labels_of(splits.val))  # 25% of 10, 10 and 20, stratified, 10 in all
    assert sorted([counts[0], counts[1]]) == [2, 3] and counts[2] == 5
    assert "25% held out for validation (seeded, stratified)" in splits.description
    again = open_source(str(image_tree), val_fraction=0.25, seed=3)
    assert list(again.val.paths) == list(splits.val.paths)
    other = open_source(str(image_tree), val_fraction=0.25, seed=4)
    assert list(other.val.paths) != list(splits.val.paths)
    assert not set(splits.train.paths) & set(splits.val.paths)


def test_image_tree_labels_follow_the_class_folders(image_tree: Path):
    splits = open_source(str(image_tree))
    for source in (splits.train, splits.val):
        for index in range(len(source)):
            image, label = source[index]
            assert image.mode == "RGB"
            assert Path(source.path(index)).parent.name == splits.classes[label]


def test_image_tree_reads_pixels_unchanged(tmp_path: Path):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for name in ("a", "b"):
        for i in range(3):
            save_image(tmp_path / "tree" / name / f"x{i}.PNG", pixels)  # upper-case suffix
    splits = open_source(str(tmp_path / "tree"), val_fraction=0.3)
    image, _ = splits.train[0]
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_train_and_val_folders(tmp_path: Path):
    write_tree(tmp_path / "pair" / "train", {"b": 3, "a": 2})
    write_tree(tmp_path / "pair" / "val", {"b": 2}, seed=1)  # a class may lack val images
    splits = open_source(str(tmp_path / "pair"))
    assert splits.classes == ["a", "b"]
    assert labels_of(splits.train) == [0, 0, 1, 1, 1]
    assert labels_of(splits.val) == [1, 1]
    assert "2 classes, 5 train, 2 val" in splits.description


def check_ilsvrc(root: Path, origin: str) -> None:
    splits = open_source(str(root))
    assert splits.classes == WNIDS  # fewer than 1000 classes: the wnids are the names
    assert labels_of(splits.train) == [0, 0, 1, 1, 2, 2]
    assert all(
        Path(splits.train.path(i)).parent.name == WNIDS[label]
        for i, label in enumerate(labels_of(splits.train))
    )
    val = sorted(
        (Path(splits.val.path(i)).name, label) for i, label in enumerate(labels_of(splits.val))
    )
    assert [label for _, label in val] == VAL_LABELS
    assert splits.description.startswith(f"ILSVRC-2012 at {root}: 3 classes, 6 train, 5 val")
    assert origin in splits.description


def test_ilsvrc_flat_val_with_kaggle_csv(ilsvrc_kaggle: Path):
    check_ilsvrc(ilsvrc_kaggle, "LOC_val_solution.csv")


def test_ilsvrc_flat_val_with_devkit_ids_mapped_through_meta_mat(ilsvrc_devkit: Path):
    check_ilsvrc(ilsvrc_devkit, "ILSVRC2012_validation_ground_truth.txt")


def test_ilsvrc_val_in_wnid_folders(ilsvrc_folders: Path):
    check_ilsvrc(ilsvrc_folders, "wnid folders")


def validation_set(splits) -> list[tuple[str, int]]:
    return [(splits.val.path(i), int(label)) for i, label in enumerate(splits.val.labels)]


@pytest.mark.parametrize(
    "layout", ["ilsvrc_kaggle", "ilsvrc_devkit", "ilsvrc_folders", "folder_pair"]
)
def test_val_only_opens_the_same_validation_set_without_the_training_images(layout, request):
    root = request.getfixturevalue(layout)
    full = open_source(str(root))
    for path in full.train.paths:  # the class folders stay; a full open now fails
        os.remove(os.fsdecode(path))
    with pytest.raises(DataError, match="has no images"):
        open_source(str(root))
    only = open_source(str(root), val_only=True)
    assert only.train is None
    assert only.classes == only.val.classes == full.classes
    assert validation_set(only) == validation_set(full)
    assert only.val.fingerprint() == full.val.fingerprint()  # sizes and times too: a stats key
    counts = f"{len(full.train)} train, {len(full.val)} val"
    assert counts in full.description
    assert only.description == full.description.replace(
        counts, f"train/ not opened, {len(full.val)} val"
    )


def test_ilsvrc_devkit_without_meta_mat_says_so(ilsvrc_devkit: Path):
    (ilsvrc_devkit / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    with pytest.raises(DataError, match="meta.mat"):
        open_source(str(ilsvrc_devkit))


def test_ilsvrc_devkit_without_scipy_says_what_to_use(ilsvrc_devkit: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    with pytest.raises(DataError, match="scipy .*use LOC_val_solution.csv or .*wnid folders"):
        open_source(str(ilsvrc_devkit))


def test_ilsvrc_flat_val_without_labels_says_so(ilsvrc_kaggle: Path):
    (ilsvrc_kaggle.parent / "LOC_val_solution.csv").unlink()
    with pytest.raises(DataError, match="LOC_val_solution.csv"):
        open_source(str(ilsvrc_kaggle))


def test_ilsvrc_names_come_from_torchvision_for_the_1000_classes():
    wnids = [f"n{number:08d}" for number in range(1000)]
    names = class_names(wnids)
    assert len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish"  # n01440764, n01443537
    assert class_names(wnids[:10]) == wnids[:10]


def test_cifar10_pickles(cifar_folder):
    folder, batches = cifar_folder
    for spec in (f"cifar10:{folder}", f"cifar10:{folder.parent}"):
        splits = open_source(spec)
        assert splits.classes == CIFAR_CLASSES
        assert (len(splits.train), len(splits.val)) == (15, 4)
    rows, labels = batches["data_batch_2"]
    image, label = splits.train[3]  # the first image of data_batch_2
    pixels = np.asarray(image)  # (32, 32, 3)
    np.testing.assert_array_equal(pixels[:, :, 0].reshape(-1), rows[0, :1024])  # red plane
    np.testing.assert_array_equal(pixels[:, :, 2].reshape(-1), rows[0, 2048:])  # blue plane
    assert label == labels[0]
    assert labels_of(splits.val) == batches["test_batch"][1]
    assert "CIFAR-10" in splits.description and "15 train, 4 test" in splits.description


def test_cifar10_val_only_reads_no_training_batch(cifar_folder):
    folder, batches = cifar_folder
    full = open_source(f"cifar10:{folder}")
    for path in folder.glob("data_batch_*"):
        path.unlink()
    with pytest.raises(DataError, match="data_batch_1"):
        open_source(f"cifar10:{folder}")
    only = open_source(f"cifar10:{folder}", val_only=True)
    assert only.train is None and only.classes == CIFAR_CLASSES
    np.testing.assert_array_equal(only.val.images, full.val.images)
    assert only.val.labels.tolist() == batches["test_batch"][1]
    assert only.description == full.description.replace("15 train", "training batches not read")


def test_cifar10_missing_without_download_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        open_source(f"cifar10:{tmp_path}")


def test_cifar10_refuses_a_pickle_that_would_run_code(cifar_folder):
    import pickle

    folder, _ = cifar_folder

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(folder),))

    with open(folder / "test_batch", "wb") as file:
        pickle.dump({"data": Evil()}, file, protocol=2)
    with pytest.raises(DataError, match="cannot read CIFAR-10"):
        open_source(f"cifar10:{folder}")
    assert folder.exists()


def test_digits_split_and_pixels():
    from sklearn.datasets import load_digits

    digits = load_digits()
    splits = open_source("digits")
    assert splits.classes == [str(d) for d in range(10)]
    assert (len(splits.train), len(splits.val)) == (1437, 360)
    counts = Counter(labels_of(splits.val))
    expected = Counter(digits.target.tolist())
    assert all(abs(counts[c] - 0.2 * expected[c]) <= 1 for c in range(10))  # stratified
    image, label = splits.train[0]
    assert image.mode == "RGB" and image.size == (8, 8)
    gray = np.asarray(image)[:, :, 0]
    matches = [
        i
        for i in range(len(digits.images))
        if np.array_equal(np.rint(digits.images[i] * 255 / 16), gray)
    ]
    assert matches and digits.target[matches[0]] == label
    assert np.array_equal(np.asarray(image)[:, :, 1], gray)
    same = open_source("digits")
    assert np.array_equal(same.val.images, splits.val.images)  # fixed split


@pytest.mark.parametrize("source", ["digits", "image_tree"])
def test_val_only_of_a_held_out_split_is_the_full_open_less_train(source, request):
    spec = "digits" if source == "digits" else str(request.getfixturevalue(source))
    full, only = open_source(spec), open_source(spec, val_only=True)
    assert only.train is None
    assert (only.classes, only.description) == (full.classes, full.description)
    assert only.val.fingerprint() == full.val.fingerprint()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "not found"),
        (lambda root: (root / "notes.txt").write_text("x"), "no class folders"),
        (lambda root: (root / "cat").mkdir(), "class folder .*cat has no images"),
        (lambda root: (root / "train").mkdir(), "has train/ but no val/"),
    ],
)
def test_unusable_roots_end_with_one_clear_line(tmp_path: Path, make, message):
    root = tmp_path / "data"
    if message != "not found":
        root.mkdir()
    make(root)
    with pytest.raises(DataError, match=message) as error:
        open_source(str(root))
    assert "\n" not in str(error.value)


def test_an_empty_class_folder_beside_full_ones_is_named(image_tree: Path):
    (image_tree / "emu").mkdir()
    (image_tree / "emu" / "readme.txt").write_text("no pictures yet")
    with pytest.raises(DataError, match="emu has no images"):
        open_source(str(image_tree))


def test_a_class_with_one_image_cannot_be_stratified(tmp_path: Path):
    write_tree(tmp_path / "tree", {"a": 5, "b": 1})
    with pytest.raises(DataError, match="'b' has a single image"):
        open_source(str(tmp_path / "tree"))


def test_sources_summarise_images_classes_and_skips(image_tree: Path):
    splits = open_source(str(image_tree), val_fraction=0.25)
    assert splits.train.summary().endswith(": 30 images, 3 classes, 0 skipped")


def test_hidden_and_non_image_files_are_ignored(image_tree: Path):
    (image_tree / "cat" / "notes.txt").write_text("x")
    (image_tree / "cat" / ".DS_Store").write_bytes(b"\0")
    Image.new("RGB", (4, 4)).save(image_tree / "cat" / "._resource_fork.jpg", format="JPEG")
    splits = open_source(str(image_tree), val_fraction=0.25)
    assert len(splits.train) + len(splits.val) == 40


def test_predict_arguments_name_files_folders_and_globs(image_tree: Path, monkeypatch):
    monkeypatch.chdir(image_tree)
    (image_tree / "cat" / "notes.txt").write_text("x")
    (image_tree / "cat" / ".hidden.png").write_bytes(b"\0")
    save_image(image_tree / "cat" / "deep" / "er" / "img0.png", np.zeros((8, 8, 3), np.uint8))
    cats = find_image_files(["cat"])
    assert cats == [f"cat/img{n}.png" for n in range(10)] + ["cat/deep/er/img0.png"]
    assert find_image_files(["cat/notes.txt"]) == ["cat/notes.txt"]  # named: its content decides
    assert sorted(find_image_files(["cat/*"])) == sorted(cats)  # images and folders, no .txt
    assert find_image_files(["**/img1.png", "dog/img1.png"]) == [
        f"{name}/img1.png" for name in ("cat", "dog", "fox")
    ]
    with pytest.raises(DataError, match="nothing.png: no such file or folder"):
        find_image_files(["cat", "nothing.png"])
    (image_tree / "empty").mkdir()
    with pytest.raises(DataError, match="no image files in empty"):
        find_image_files(["empty"])


def test_a_training_subset_is_fixed_by_the_split_seed(image_tree):
    from alexnet.data import open_splits
    from alexnet.recipe import DataRecipe

    recipe = DataRecipe(source=str(image_tree), train_subset=10)
    first, again, full = open_splits(recipe), open_splits(recipe), open_source(str(image_tree))
    assert len(first.train) == 10 and len(first.val) == len(full.val)
    assert first.train.indices.tolist() == again.train.indices.tolist()
    for position, index in enumerate(first.train.indices):
        assert first.train.labels[position] == full.train.labels[index]
        assert torch.equal(first.train.pixels(position, 8), full.train.pixels(int(index), 8))
    assert "fixed subset of 10" in first.description
    assert first.train.fingerprint() != full.train.fingerprint()
    recipe.split_seed = 1
    assert open_splits(recipe).train.indices.tolist() != first.train.indices.tolist()


def test_digits_read_from_scikit_learns_file_are_load_digits(monkeypatch):
    from sklearn.datasets import load_digits

    from alexnet.data.sources import digits

    reference = load_digits()
    images, target = digits.read_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(target, reference.target)
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)  # not found
    images, target = digits.read_digits()  # through load_digits()
    np.testing.assert_array_equal(images, reference.images)
