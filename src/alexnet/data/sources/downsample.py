"""§2's down-sampling: "rescaled the image such that the shorter side was of length 256, and then
cropped out the central 256×256 patch", for any image size S the recipe asks for.

One function of the pixels only, shared by the statistics pass, `alexnet prepare`, the loaders
and the per-image pipeline, so that every path sees the same prepared image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def centre_offset(image_size: int, crop_size: int) -> int:
    """The centre window's top (and left), rounded as torchvision's center_crop rounds."""
    return int(round((image_size - crop_size) / 2.0))


class Prepare:
    """§2: PIL RGB image -> (3, S, S) uint8 tensor, S = image_size: the shorter side rescaled to
    S (bilinear, antialiased), then the central S×S square.

    The resize runs on the uint8 tensor in channels-last layout, torch's antialiased bilinear
    kernel (what torchvision's `resize` calls; several times faster than Pillow's resize, the two
    differ by at most one grey level; tested equal to torchvision's). An image already S×S is
    returned as it is.
    """

    def __init__(self, image_size: int):
        self.image_size = image_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, H, W), channels-last
        height, width = pixels.shape[1:]
        size = self.image_size
        if min(height, width) != size:  # the shorter side to S, the longer in proportion
            if height > width:  # torchvision's arithmetic: the longer side truncated
                shape = (int(size * height / width), size)
            else:
                shape = (size, int(size * width / height))
            pixels = F.interpolate(
                pixels[None], size=shape, mode="bilinear", antialias=True, align_corners=False
            )[0]
        top = centre_offset(pixels.shape[1], size)
        left = centre_offset(pixels.shape[2], size)
        return pixels[:, top : top + size, left : left + size]  # (3, S, S)

    def __repr__(self) -> str:
        return f"Prepare(image_size={self.image_size})"
