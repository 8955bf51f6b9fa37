"""Helpers that write tiny data sets in the real on-disk formats (Pillow, numpy, pickle)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: labels 0, 1, 2


def save_image(path: Path, pixels: np.ndarray, format: str | None = None, **options) -> Path:
    """Write a uint8 (H, W, 3) or (H, W) array as an image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=format, **options)
    return path


def random_pixels(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_tree(root: Path, images_per_class: dict[str, int], seed: int = 0) -> Path:
    """root/<class>/img<i>.png with random pixels and sizes between 6 and 11 px per side."""
    rng = np.random.default_rng(seed)
    for name, count in images_per_class.items():
        for i in range(count):
            height, width = rng.integers(6, 12, size=2)
            save_image(root / name / f"img{i}.png", random_pixels(rng, height, width))
    return root


def write_ilsvrc_train(root: Path, per_class: int = 2) -> None:
    rng = np.random.default_rng(1)
    for wnid in WNIDS:
        for i in range(per_class):
            save_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", random_pixels(rng, 10, 12))


def write_flat_val(root: Path, labels: list[int]) -> list[str]:
    """val/ILSVRC2012_val_<n>.JPEG, n = 1.., and the stems in order."""
    rng = np.random.default_rng(2)
    stems = [f"ILSVRC2012_val_{number:08d}" for number in range(1, len(labels) + 1)]
    for stem in stems:
        save_image(root / "val" / f"{stem}.JPEG", random_pixels(rng, 10, 12))
    return stems


VAL_LABELS = [2, 0, 1, 1, 2]  # sorted-wnid indices of the five flat validation images


# The devkit numbers classes its own way: ILSVRC2012_ID 1..3 here are NOT sorted-wnid order.
DEVKIT_ID_OF_WNID = {"n01440764": 3, "n01443537": 1, "n01484850": 2}


CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def cifar_batch(rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[int]]:
    """Rows as CIFAR stores them: 1024 red, then 1024 green, then 1024 blue values per image."""
    return rng.integers(0, 256, size=(count, 3072), dtype=np.uint8), rng.integers(
        0, 10, size=count
    ).tolist()


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_rgb16_bytes(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), pixels (H, W, 3) uint16."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    height, width, _ = pixels.shape
    big_endian = pixels.astype(">u2")
    rows = b"".join(b"\0" + big_endian[y].tobytes() for y in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, colour type RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


BAD_FILES = ["corrupt.jpg", "truncated.jpg", "empty.jpg"]
ODD_FILES = [
    "cmyk.jpg",
    "gray.png",
    "palette.png",
    "palette_transparent.png",
    "rgba.png",
    "gray16.png",
    "rgb16.png",
    "disguised_png.JPEG",
]
