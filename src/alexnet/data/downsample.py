"""§2's down-sampling: "rescaled the image such that the shorter side was of length 256, and then
cropped out the central 256×256 patch", for any image size S the recipe asks for.

One function of the pixels only, shared by the statistics pass, `alexnet prepare`, the loaders
and the per-image pipeline, so that every path sees the same prepared image.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


class Prepare:
    """§2: PIL RGB image -> (3, S, S) uint8 tensor, S = image_size: the shorter side rescaled to
    S (bilinear, antialiased), then the central S×S square.

    The resize runs on the uint8 tensor in channels-last layout, torchvision's fastest path
    (several times faster than Pillow's resize; the two differ by at most one grey level). An
    image already S×S is returned as it is.
    """

    def __init__(self, image_size: int):
        self.image_size = image_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = F.pil_to_tensor(image).unsqueeze(0)  # (1, 3, H, W), channels-last strides
        pixels = F.resize(
            pixels, [self.image_size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True
        )
        return F.center_crop(pixels, [self.image_size, self.image_size])[0]  # (3, S, S)

    def __repr__(self) -> str:
        return f"Prepare(image_size={self.image_size})"
