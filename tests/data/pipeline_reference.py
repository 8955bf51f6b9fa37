"""The paper's pipeline image by image (§2, §4.1), in plain float steps with torchvision's own
crops: the independent reference the batched arithmetic (data/transform/batch_transform.py) is
tested against.

1. `Prepare` (§2, the package's: data/sources/downsample.py): shorter side to image_size,
   centre square.
2. float32, values 0-255; 3. minus the mean image;
4. training: a random window (windows.draw_window, the draws the loader workers make), then one
   PCA lighting shift (α drawn after the window, as the workers draw it); testing: torchvision's
   CenterCrop, or five_crop and the mirror of each (ten crops);
5. for input_scale "standardised", divided by the per-channel std.
Random steps draw from torch's global generator, which the loader seeds per item.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from alexnet.data.lighting import draw_alpha, lighting_shift
from alexnet.data.loading.windows import draw_window
from alexnet.data.sources.downsample import Prepare
from alexnet.data.transform.batch_transform import check_sizes


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.to(torch.float32, memory_format=torch.contiguous_format)


def ten_crops(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (10, 3, size, size): torchvision's five crops, then their mirrors."""
    crops = F.five_crop(image, [size, size])
    return torch.stack([*crops, *(F.horizontal_flip(crop) for crop in crops)])


class Reference:
    """PIL image -> float tensor, step by step; `image_size` lets a source decode smaller."""

    def __init__(self, recipe, stats, *, train: bool, ten_crop: bool = False):
        check_sizes(recipe, stats)
        self.recipe, self.stats, self.train, self.ten_crop = recipe, stats, train, ten_crop
        self.image_size = recipe.image_size

    def __call__(self, image) -> torch.Tensor:
        recipe, stats, crop = self.recipe, self.stats, self.recipe.crop_size
        centred = to_float(Prepare(recipe.image_size)(image)) - stats.mean_image
        if self.train:
            top, left, flipped = draw_window(recipe.image_size, crop, recipe.flip)
            out = F.crop(centred, top, left, crop, crop)
            out = F.horizontal_flip(out) if flipped else out
            if recipe.pca_lighting:
                alpha = draw_alpha(recipe.lighting_std)
                shift = lighting_shift(alpha, stats.eigenvalues, stats.eigenvectors)  # (3,)
                out = out + shift.view(3, 1, 1)
        elif self.ten_crop:
            out = ten_crops(centred, crop)
        else:
            out = F.center_crop(centred, [crop, crop])
        if recipe.input_scale == "standardised":
            out = out / stats.channel_std.view(3, 1, 1)
        return out


class TransformedDataset(Dataset):
    """A source with a per-image transform: item -> (tensor, label), or None when skipped."""

    def __init__(self, source, transform: Callable):
        self.source = source
        self.transform = transform
        self.decode_size = getattr(transform, "image_size", None)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        item = self.source.load(index, self.decode_size)
        if item is None:
            return None
        image, label = item
        return self.transform(image), label


class Prepared:
    """Only §2's step: PIL image -> (3, S, S) float32, 0-255."""

    def __init__(self, image_size: int):
        self.image_size = image_size

    def __call__(self, image) -> torch.Tensor:
        return to_float(Prepare(self.image_size)(image))
