"""Memory is bounded before it is allocated (data/sources/decode.py, idx.py): an image's decoded
size and the size §2's rescale gives it, and an IDX file's size from its header, checked before
the pixels are read; over a limit, a skip with a warning or a one-line DataError."""

from __future__ import annotations

import gzip
import logging
import os

import numpy as np
import pytest
from PIL import Image

from alexnet.data import DataError
from alexnet.data.sources.dataset import FileSource
from alexnet.data.sources.folder import scan_image_folder
from alexnet.data.sources.idx import read_idx_images


def test_an_image_far_longer_than_wide_is_skipped_before_its_rescale(tmp_path, caplog):
    """A 376-byte PNG of 100,000×1 pixels: §2's shorter side to 64 would make it 64×6.4M."""
    (tmp_path / "a").mkdir()
    Image.new("RGB", (100_000, 1), (200, 30, 30)).save(tmp_path / "a" / "long.png")
    Image.new("RGB", (20, 16), (30, 30, 200)).save(tmp_path / "a" / "fine.png")
    classes, entries = scan_image_folder(tmp_path)
    source = FileSource("two images", classes, entries)
    caplog.set_level(logging.WARNING, logger="alexnet.data")
    prepared = {os.path.basename(source.path(i)): source.pixels(i, 64) for i in range(2)}
    assert prepared["long.png"] is None
    assert prepared["fine.png"] is not None and prepared["fine.png"].shape == (3, 64, 64)
    warnings = [record.getMessage() for record in caplog.records]
    assert any("long.png" in warning and "100000×1" in warning for warning in warnings)


def idx_header(*shape: int) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + b"".join(size.to_bytes(4, "big") for size in shape)


def test_an_idx_header_larger_than_its_file_is_refused_before_reading(tmp_path):
    """A sparse file whose header claims far more than memory: refused from its length."""
    path = tmp_path / "train-images-idx3-ubyte"
    with path.open("wb") as file:
        file.write(idx_header(10, 28, 28))
        file.truncate(64 * 2**30)  # 64 GiB of holes: read whole, a MemoryError
    with pytest.raises(DataError, match=r"68719476720 bytes of data, but the header's 10×28×28"):
        read_idx_images(path)


def test_a_gzipped_idx_file_past_the_limit_is_refused_without_unpacking_it(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(idx_header(2**16, 2**8, 2**8))  # 4 GiB promised
        file.write(bytes(2**20))
    with pytest.raises(DataError, match=r"65536×256×256 images are 4096 MiB, more than the"):
        read_idx_images(path)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((3, 0, 0), "a 0×0 image holds no pixels"), ((10, 1, 100_000), "more than 32 times")],
)
def test_idx_images_of_no_pixels_or_past_the_aspect_limit_are_refused(tmp_path, shape, message):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_header(*shape) + bytes(int(np.prod(shape))))
    with pytest.raises(DataError, match=message) as error:
        read_idx_images(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
