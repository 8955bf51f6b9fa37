"""Reading one image file as 8-bit RGB, whatever Pillow opened (§2: the net sees RGB pixels).

Owns the rules for unusual files, so every source treats them the same way:
- the format comes from the file's content, not its name: a PNG saved as `.JPEG` loads;
- grayscale, palette, CMYK and YCbCr images go through Pillow's conversion to RGB;
- alpha (RGBA, LA, PA, a palette with a transparent colour) is composited on black: each colour
  is multiplied by alpha/255 (rounded), so a fully transparent pixel becomes black;
- 16-bit grayscale (Pillow modes I;16*, and I) is scaled to 8 bits, value/257 rounded (Pillow's
  own conversion would clip everything above 255 to white); 16-bit colour PNGs open as 8-bit
  RGB(A) in Pillow, which keeps each value's high byte;
- an image larger than MAX_PIXELS, or longer than MAX_ASPECT times its width (§2's rescale of
  the shorter side to 256 would make a 100,000×1 image 256×25.6M), raises ImageTooLarge here,
  from its header, before any pixel is decoded;
- a file Pillow cannot decode raises here; the sources turn that into a skip with a warning.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageFile

Image.init()
# Suffixes (lower case) of formats Pillow can open; stub formats need a handler we do not have.
IMAGE_EXTENSIONS = frozenset(
    extension
    for extension, format_name in Image.registered_extensions().items()
    if format_name in Image.OPEN
    and not (
        isinstance(Image.OPEN[format_name][0], type)
        and issubclass(Image.OPEN[format_name][0], ImageFile.StubImageFile)
    )
)
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's own bound: 256 MiB of RGBA pixels
MAX_ASPECT = 32  # longer side / shorter side: §2's 256 rescale keeps at most 256×8192 pixels
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def is_image_name(name: str) -> bool:
    """True for a file name with an image suffix Pillow can open (case ignored)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class ImageTooLarge(ValueError):
    """An image whose decoded or §2-resized size is past the limits; names both sides."""


def check_size(width: int, height: int) -> None:
    """Raise ImageTooLarge for a `width`×`height` image past MAX_PIXELS or MAX_ASPECT (or
    empty), before anything of that size is allocated."""
    if min(width, height) < 1:
        raise ImageTooLarge(f"a {width}×{height} image holds no pixels")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"{width}×{height} pixels are more than the {MAX_PIXELS:,} allowed")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageTooLarge(
            f"{width}×{height} is more than {MAX_ASPECT} times as long as wide: its shorter "
            "side rescaled (§2) would not fit in memory"
        )


def read_rgb(path: str | os.PathLike, min_size: int | None = None) -> Image.Image:
    """Decode `path` completely as an 8-bit RGB image; raises what Pillow raises for a bad file.

    min_size: for a JPEG at least twice as large as needed, let the decoder scale by 1/2, 1/4 or
    1/8 (Pillow's `draft`) while both sides stay >= min_size. This is much faster for big photos
    and changes pixels slightly compared with a full decode; images smaller than 2 * min_size
    are decoded exactly.
    """
    with Image.open(path) as image:
        check_size(*image.size)  # from the header, before the pixels are decoded
        if min_size is not None and image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))
        image.load()
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, by the rules in this module's docstring."""
    check_size(*image.size)
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        gray = np.asarray(image).astype(np.float32)  # (H, W), 0-65535
        gray8 = np.clip(np.rint(gray / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray8[:, :, None], 3, axis=2), "RGB")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)  # (H, W, 4)
        rgb = (rgba[:, :, :3] * rgba[:, :, 3:] + 127) // 255  # composited on black
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    return image.convert("RGB")
