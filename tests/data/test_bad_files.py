"""Bad data: nothing crashes, nothing is hidden (data/sources/decode.py, dataset.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import BAD_FILES, ODD_FILES
from PIL import Image
from pipeline_reference import Prepared, TransformedDataset

from alexnet.data import DataError, compute_stats, make_loader
from alexnet.data.sources.dataset import FileSource
from alexnet.data.sources.decode import read_rgb
from alexnet.data.sources.downsample import Prepare
from alexnet.data.sources.folder import (
    find_image_files,
    open_folder_pair,
    printable,
    scan_image_folder,
)


@pytest.fixture
def odd_source(odd_tree: Path, caplog) -> FileSource:
    caplog.set_level(logging.WARNING, logger="alexnet.data")
    classes, entries = scan_image_folder(odd_tree)
    return FileSource(f"image folder {odd_tree}", classes, entries)


def warnings_naming(caplog, name: str) -> list[str]:
    records = caplog.get_records("setup") + caplog.get_records("call")
    return [record.getMessage() for record in records if name in record.getMessage()]


def by_name(source: FileSource) -> dict[str, int]:
    return {Path(source.path(i)).name: i for i in range(len(source))}


def test_only_image_files_are_listed(odd_source: FileSource):
    assert set(by_name(odd_source)) == {f"p{i}.png" for i in range(4)} | set(BAD_FILES) | set(
        ODD_FILES
    )


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_are_skipped_with_a_warning_naming_them(odd_source, caplog, name):
    index = by_name(odd_source)[name]
    assert odd_source[index] is None
    assert odd_source[index] is None  # and again, without a second warning
    warnings = warnings_naming(caplog, name)
    assert len(warnings) == 1 and "skipping" in warnings[0]


def test_empty_files_are_skipped_at_scan_time(odd_source, caplog):
    assert list(odd_source.unreadable.values()) == ["empty file (0 bytes)"]
    assert warnings_naming(caplog, "empty.jpg")


def rgb(source: FileSource, name: str) -> np.ndarray:
    image, _ = source[by_name(source)[name]]
    assert image.mode == "RGB" and image.size == (10, 8)
    return np.asarray(image)


def test_odd_modes_load_as_three_channel_rgb(odd_source: FileSource):
    assert (rgb(odd_source, "gray.png") == 77).all()
    assert (rgb(odd_source, "palette.png") == (10, 20, 30)).all()
    assert (rgb(odd_source, "gray16.png") == 200).all()  # 51400 / 257
    assert (rgb(odd_source, "rgb16.png") == (200, 100, 3)).all()  # the high bytes
    assert (rgb(odd_source, "disguised_png.JPEG") == (1, 2, 3)).all()
    cmyk = rgb(odd_source, "cmyk.jpg").astype(int)  # C=0 M=255 Y=0 K=0 is magenta (lossy JPEG)
    assert (abs(cmyk - (255, 0, 255)) <= 3).all()


def test_alpha_is_composited_on_black(odd_source: FileSource):
    # (200, 100, 50) at alpha 128: each colour * 128 / 255, rounded
    assert (rgb(odd_source, "rgba.png") == (100, 50, 25)).all()
    assert (rgb(odd_source, "palette_transparent.png") == 0).all()  # transparent colour


def test_summary_and_loader_count_the_skips(odd_source: FileSource):
    dataset = TransformedDataset(odd_source, Prepared(4))
    loader = make_loader(dataset, batch_size=5, train=False, workers=0)
    batches = list(loader)
    assert sum(skipped for _, _, skipped in batches) == len(BAD_FILES)
    assert sum(len(images) for images, _, _ in batches) == 4 + len(ODD_FILES)
    assert odd_source.summary().endswith(
        f"{4 + len(ODD_FILES) + len(BAD_FILES)} images, 2 classes, {len(BAD_FILES)} skipped"
    )


def test_stats_pass_in_workers_reports_skips_back(odd_source: FileSource):
    stats = compute_stats(odd_source, 4, cache_dir=None, workers=2, progress=False)
    assert stats.mean_image.shape == (3, 4, 4)
    assert len(odd_source.unreadable) == len(BAD_FILES)


def test_a_class_of_only_empty_files_is_an_empty_class(tmp_path: Path):
    (tmp_path / "pair" / "train" / "a").mkdir(parents=True)
    (tmp_path / "pair" / "train" / "a" / "x.jpg").write_bytes(b"")
    (tmp_path / "pair" / "val").mkdir()
    with pytest.raises(DataError, match="has no images \\(only 1 empty or unreadable files\\)"):
        open_folder_pair(tmp_path / "pair")


def test_big_jpegs_may_decode_at_reduced_size(tmp_path: Path):
    pixels = np.zeros((60, 80, 3), np.uint8)
    pixels[:, :, 0] = np.linspace(0, 255, 80, dtype=np.uint8)  # a smooth red ramp
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    assert read_rgb(path).size == (80, 60)
    assert read_rgb(path, min_size=16).size == (40, 30)  # 1/2: both sides stay >= 16
    assert read_rgb(path, min_size=40).size == (80, 60)  # 1/2 would make 30 < 40
    reduced = Prepare(16)(read_rgb(path, min_size=16)).float()
    full = Prepare(16)(read_rgb(path)).float()
    assert (reduced - full).abs().mean() < 2  # grey levels


def test_a_dangling_symlink_or_unreadable_file_is_skipped_and_counted(tmp_path: Path, caplog):
    root = tmp_path / "tree"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (9, 9, 9)).save(root / name / "good.png")
    (root / "a" / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")  # dangling
    unreadable = root / "b" / "locked.png"
    Image.new("RGB", (8, 8)).save(unreadable)
    unreadable.chmod(0)  # unreadable for anyone but root, who reads it like any file
    classes, entries = scan_image_folder(root)
    source = FileSource(f"image folder {root}", classes, entries)
    names = by_name(source)
    assert source.load(names["gone.jpg"]) is None
    assert "dangling symlink" in source.unreadable[names["gone.jpg"]]
    assert any("gone.jpg" in message for message in warnings_naming(caplog, "skipping"))
    loader = make_loader(TransformedDataset(source, Prepared(4)), 4, train=False, workers=0)
    skipped = sum(batch_skipped for _, _, batch_skipped in loader)
    assert skipped == len(source.unreadable) >= 1


def test_a_link_loop_ends_the_scan_and_lists_each_image_once(image_tree: Path, caplog):
    caplog.set_level(logging.WARNING, logger="alexnet.data")
    (image_tree / "cat" / "loop").symlink_to(".")  # ln -s . loop
    (image_tree / "cat" / "up").symlink_to("..")  # every class again, below cat
    (image_tree / "dog" / "twin").symlink_to(image_tree / "fox")  # a second path to fox
    classes, entries = scan_image_folder(image_tree)
    assert classes == ["cat", "dog", "fox"]
    assert [sum(e.label == k for e in entries) for k in range(3)] == [10, 10, 20]
    assert len({entry.path for entry in entries}) == 40
    skipped = warnings_naming(caplog, "a folder already scanned")
    assert len(skipped) == len(set(skipped)) == 3  # loop, up (the root itself), twin
    assert len(find_image_files([str(image_tree)])) == 40  # predict's scan: the same rule


def test_a_name_that_is_not_utf8_is_read_and_printed_safely(image_tree: Path, capsys):
    raw = os.fsencode(image_tree / "cat") + b"/caf\xe9.png"
    with open(raw, "wb") as file:
        file.write((image_tree / "cat" / "img0.png").read_bytes())
    classes, entries = scan_image_folder(image_tree)
    source = FileSource("tree", classes, entries)
    index = next(i for i in range(len(source)) if source.path(i).endswith("caf\udce9.png"))
    assert source.load(index) is not None and len(source.fingerprint()) == 64
    assert printable(source.path(index)).endswith("caf\\xe9.png")
