"""Images handed over directly, for `load()`'s predict and embed: file paths, PIL images or uint8
tensors (3, H, W), each decoded as every source decodes it (decode.py).

`GivenImages` is an ImageSource like the data sets, so that a single image goes through the
same batched preprocessing as training and evaluation (batches.py) as a batch of one. Its
labels are the images' positions. A path that cannot be read is an error naming it, not a skip:
the caller asked for that image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image

from alexnet.data.sources.dataset import DataError, ImageSource
from alexnet.data.sources.decode import read_rgb, to_rgb

ImageLike = str | os.PathLike | Image.Image | torch.Tensor  # one image, as predict takes it


class GivenImages(ImageSource):
    """One image or a sequence of them; item k is (RGB image, k)."""

    def __init__(self, images: ImageLike | Sequence[ImageLike]):
        single = isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, torch.Tensor) and images.dim() == 3
        )
        self.images = [images] if single else list(images)
        if not self.images:
            raise ValueError("no images given")
        super().__init__("images given", [], range(len(self.images)))

    def load(self, index: int, min_size: int | None = None) -> tuple[Image.Image, int]:
        return _as_rgb(self.images[index], min_size), index

    def fingerprint(self) -> str:
        raise NotImplementedError("given images are not a training set")


def _as_rgb(image: ImageLike, decode_size: int | None) -> Image.Image:
    """An 8-bit RGB PIL image; a JPEG path may decode at reduced size (see read_rgb)."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected a uint8 tensor (3, H, W), got {image.dtype} {tuple(image.shape)}"
            )
        return Image.fromarray(image.permute(1, 2, 0).numpy(force=True))
    try:
        return read_rgb(image, decode_size)
    except Exception as error:  # Pillow raises many kinds for a bad file
        raise DataError(f"cannot read image {image}: {type(error).__name__}: {error}") from None
